// Fuzzes the SSE splitter and event inspection, the HTTP body decoder and the response-head
// parser, as the relay uses them: arbitrary bytes in arbitrary pieces.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "gateway/chunked.h"
#include "gateway/sse.h"

namespace {
bool SameInfo(const powerplane::gateway::EventInfo& a, const powerplane::gateway::EventInfo& b) {
  return a.done == b.done && a.usage_only == b.usage_only && a.has_usage == b.has_usage &&
         a.prompt_tokens == b.prompt_tokens && a.completion_tokens == b.completion_tokens &&
         a.content == b.content && a.error == b.error && a.usage_null_at == b.usage_null_at;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace powerplane::gateway;
  if (size == 0) return 0;
  const std::size_t piece = 1 + data[0] % 64;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);

  BodyDecoder decoder = BodyDecoder::Chunked();
  SseSplitter splitter;
  StreamInspector inspector;
  std::string decoded;
  std::size_t events_bytes = 0;
  for (std::size_t at = 0; at < bytes.size(); at += piece) {
    const auto part = bytes.substr(at, piece);
    const std::size_t used = decoder.Feed(part, &decoded);
    if (used > part.size()) __builtin_trap();
    splitter.Feed(part);
    // Events returned one after another lie one after another and stay put until the next feed
    // (the relay hands them on as spans of the splitter's buffer).
    std::string_view first, last;
    std::string copied;
    const std::size_t dropped = splitter.dropped();
    std::string_view event;
    while (splitter.Next(&event)) {
      if (first.data() == nullptr) first = event;
      if (last.data() != nullptr && splitter.dropped() == dropped &&
          last.data() + last.size() != event.data()) {
        __builtin_trap();
      }
      last = event;
      copied.append(event);
      events_bytes += event.size();
      // Reading by shape must agree with reading whole, field by field.
      const EventInfo whole = InspectEvent(event);
      const EventInfo shaped = inspector.Inspect(event);
      if (!SameInfo(whole, shaped)) __builtin_trap();
    }
    if (first.data() != nullptr && splitter.dropped() == dropped &&
        std::string_view(first.data(), static_cast<std::size_t>(last.data() + last.size() -
                                                                first.data())) != copied) {
      __builtin_trap();
    }
  }
  if (events_bytes + splitter.pending() > bytes.size()) __builtin_trap();
  std::int64_t p = 0, c = 0;
  (void)ReadUsage(bytes, &p, &c);
  // A head is found at most once in the bytes, never past them, and a prefix of a complete head
  // is incomplete (0), never another head.
  ResponseHead head;
  const std::ptrdiff_t used = ParseResponseHead(bytes, &head);
  if (used > static_cast<std::ptrdiff_t>(bytes.size())) __builtin_trap();
  if (used > 0) {
    if (head.status < 200 || head.status > 599) __builtin_trap();
    if (ParseResponseHead(bytes.substr(0, static_cast<std::size_t>(used) - 1), &head) > 0) {
      __builtin_trap();
    }
  }
  return 0;
}
