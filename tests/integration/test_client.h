#pragma once
// A small HTTP client for integration tests: whole responses, and streams read chunk by chunk
// with the time each chunk arrived.

#include <chrono>
#include <string>
#include <vector>

#include "net/http.h"
#include "net/io_pool.h"

namespace powerplane::testing {

struct Chunk {
  double at_s;  // since the request was sent.
  std::string bytes;
};

struct StreamResult {
  int status = 0;
  std::string error;  // transport error, if any.
  std::vector<std::pair<std::string, std::string>> headers;
  std::vector<Chunk> chunks;
  std::string body;  // all chunks joined.
  std::string Header(std::string_view name) const;
};

class TestClient {
 public:
  TestClient(std::string host, unsigned short port);
  ~TestClient();
  // Sends a request and reads the response, recording body chunks as they arrive.
  StreamResult Call(net::http::verb verb, std::string target, std::string body = {},
                    std::string api_key = {}, double timeout_s = 30);
  StreamResult Chat(std::string api_key, std::string body, std::string target =
                                                               "/v1/chat/completions");

 private:
  std::string host_;
  unsigned short port_;
  net::IoPool pool_{1};
};

// The JSON payloads of the "data:" events of an SSE body, in order.
std::vector<std::string> SseData(const std::string& body);

}  // namespace powerplane::testing
