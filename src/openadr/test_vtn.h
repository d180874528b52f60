#pragma once
// A small OpenADR 3 VTN for tests, written from the spec (openadr3-api.yaml): POST /auth/token
// (client credentials, form-encoded), GET /events (Bearer; skip/limit paging), POST /reports and
// POST /subscriptions (Bearer; recorded), and delivery of notifications to the subscriptions'
// callbackUrls on demand. It can be down (not listening), slow, failing (500) or send malformed
// events. It runs on its own thread and listens on 127.0.0.1, port 0 by default. Thread-safe.

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "net/http_server.h"
#include "net/io_pool.h"

namespace powerplane::openadr {

enum class VtnMode {
  kNormal,
  kDown,         // not listening: connections are refused.
  kSlow,         // every answer waits slow_delay first.
  kMalformed,    // /events answers 200 with a malformed body (see VtnGarbage).
  kServerError,  // /events answers 500 with a problem body.
};

enum class VtnGarbage {
  kNotJson,     // "<html>oops"
  kTruncated,   // the real answer cut in half.
  kWrongTypes,  // a JSON object instead of an array of events.
};

struct TestVtnOptions {
  std::string client_id = "ven-1";
  std::string client_secret = "secret-1";
  std::int64_t token_expires_in_s = 3600;  // expires_in of issued tokens.
  std::chrono::milliseconds slow_delay{1000};
  unsigned short port = 0;  // 0 = OS-chosen.
};

class TestVtn {
 public:
  explicit TestVtn(TestVtnOptions options = {});
  ~TestVtn();
  TestVtn(const TestVtn&) = delete;
  TestVtn& operator=(const TestVtn&) = delete;

  unsigned short port() const { return port_; }
  std::string url() const;  // http://127.0.0.1:<port>

  // The events GET /events serves: a JSON array of event objects (served as given; paged by
  // skip/limit when it parses as an array).
  void SetEvents(std::string json_array);
  // Down stops listening; leaving it listens again on the same port.
  void SetMode(VtnMode mode);
  void SetGarbage(VtnGarbage garbage);
  void SetTokenExpiresIn(std::int64_t seconds);

  // Delivers a notification {objectType, operation, object} to every subscription whose
  // objectOperations cover it, with its bearerToken. Waits for the answers; returns how many
  // answered 2xx.
  int Notify(const std::string& object_type, const std::string& operation,
             const std::string& object_json);

  // What was received (bodies as sent).
  std::vector<std::string> reports() const;
  std::vector<std::string> subscriptions() const;
  int token_requests() const;
  int tokens_issued() const;
  int event_requests() const;         // GET /events with a valid token.
  int unauthorized_requests() const;  // calls refused for a missing, unknown or expired token.

 private:
  struct Token {
    std::string value;
    std::chrono::steady_clock::time_point expires;
  };
  net::asio::awaitable<void> Handle(net::ServerRequest& req, net::Responder& res);
  net::Response Answer(const net::ServerRequest& req);
  bool Authorized(const net::ServerRequest& req);
  void Listen();

  TestVtnOptions options_;
  unsigned short port_ = 0;
  mutable std::mutex mu_;
  VtnMode mode_ = VtnMode::kNormal;
  VtnGarbage garbage_ = VtnGarbage::kNotJson;
  std::string events_ = "[]";
  std::vector<Token> tokens_;
  std::vector<std::string> reports_;
  std::vector<std::string> subscriptions_;
  int token_requests_ = 0;
  int event_requests_ = 0;
  int unauthorized_ = 0;
  int next_id_ = 1;
  // Last, so that they go first: the server stops, then the thread ends, before the state above
  // (which handlers use) is destroyed.
  net::IoPool pool_{1};
  std::unique_ptr<net::HttpServer> server_;
};

}  // namespace powerplane::openadr
