#pragma once
// Server-sent events from an engine, read incrementally: bytes in, complete events out, and what
// the gateway must know of each (usage, a content token, the end, an error). Untrusted input:
// never throws; the buffer is bounded.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace powerplane::gateway {

class SseSplitter {
 public:
  // Largest event kept; a longer one is dropped whole (and counted).
  static constexpr std::size_t kMaxEventBytes = 1 << 20;

  SseSplitter() = default;
  // Starts with `buffer`'s storage (emptied first), so a caller can reuse a grown buffer.
  explicit SseSplitter(std::string buffer) : buffer_(std::move(buffer)) { buffer_.clear(); }
  // Hands the storage back (for reuse); the splitter is empty after.
  std::string TakeBuffer() {
    start_ = 0;
    return std::move(buffer_);
  }

  void Feed(std::string_view bytes);
  // Where to append bytes directly instead of through Feed (the same bounds apply at the next
  // Next call). Valid until the next call on the splitter.
  std::string* AppendTarget();
  // The next complete event, including its terminating blank line; false when none is complete.
  // The view is valid until the next Feed or AppendTarget call (not just the next Next): events
  // returned one after another lie one after another in memory, so a caller can hand on a run of
  // them, or pieces of them, without copying each.
  bool Next(std::string_view* event);
  std::size_t dropped() const { return dropped_; }
  // Bytes held that do not yet make an event.
  std::size_t pending() const { return buffer_.size() - start_; }

 private:
  std::string buffer_;
  std::size_t start_ = 0;
  std::size_t dropped_ = 0;
};

struct EventInfo {
  bool done = false;        // data: [DONE]
  bool usage_only = false;  // a chunk with "choices": [] carrying usage.
  bool has_usage = false;
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  bool content = false;     // carries generated text (a token, for counting without usage).
  bool error = false;       // an error object.
  // Where `,"usage":null` starts in the event (vLLM adds it to every chunk when usage was asked
  // for); npos when absent or when the data spans several lines.
  std::size_t usage_null_at = std::string_view::npos;
};

// Inspects one event (as returned by SseSplitter::Next).
EventInfo InspectEvent(std::string_view event);

// Inspects the events of one stream, as InspectEvent does, reading most of them only in part.
// An engine's token chunks differ only in the token: once a chunk with a token has been read
// whole, its bytes before and after the token's text are kept (its shape); a later event with
// the same bytes before and after, and between them text with no quote, backslash or line end,
// is that chunk with another token, and is known from the shape without being read again.
class StreamInspector {
 public:
  EventInfo Inspect(std::string_view event);
  // Events known from the shape (for tests and benchmarks).
  std::size_t matched() const { return matched_; }

 private:
  std::array<char, 512> shape_;  // the bytes before the token, then those after it.
  std::size_t prefix_ = 0;       // 0 and 0: no shape yet.
  std::size_t suffix_ = 0;
  EventInfo shape_info_;
  std::size_t usage_null_from_end_ = std::string_view::npos;
  std::size_t matched_ = 0;
};

// Reads "usage" from a complete (non-streaming) JSON response body.
bool ReadUsage(std::string_view body, std::int64_t* prompt_tokens,
               std::int64_t* completion_tokens);

}  // namespace powerplane::gateway
