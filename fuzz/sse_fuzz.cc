// Fuzzes the SSE splitter and event inspection, and the HTTP body decoder, as the relay uses them:
// arbitrary bytes in arbitrary pieces.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "gateway/chunked.h"
#include "gateway/sse.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace powerplane::gateway;
  if (size == 0) return 0;
  const std::size_t piece = 1 + data[0] % 64;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);

  BodyDecoder decoder = BodyDecoder::Chunked();
  SseSplitter splitter;
  std::string decoded;
  std::size_t events_bytes = 0;
  for (std::size_t at = 0; at < bytes.size(); at += piece) {
    const auto part = bytes.substr(at, piece);
    const std::size_t used = decoder.Feed(part, &decoded);
    if (used > part.size()) __builtin_trap();
    splitter.Feed(part);
    std::string_view event;
    while (splitter.Next(&event)) {
      events_bytes += event.size();
      (void)InspectEvent(event);
    }
  }
  if (events_bytes + splitter.pending() > bytes.size()) __builtin_trap();
  std::int64_t p = 0, c = 0;
  (void)ReadUsage(bytes, &p, &c);
  return 0;
}
