#include "gateway/sse.h"

#include <simdjson.h>

#include <charconv>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace powerplane::gateway {
namespace od = simdjson::ondemand;

std::string* SseSplitter::AppendTarget() {
  if (start_ > 0 && start_ == buffer_.size()) {
    buffer_.clear();
    start_ = 0;
  } else if (start_ > 64 * 1024) {
    buffer_.erase(0, start_);
    start_ = 0;
  }
  return &buffer_;
}

void SseSplitter::Feed(std::string_view bytes) { AppendTarget()->append(bytes); }

bool SseSplitter::Next(std::string_view* event) {
  for (;;) {
    std::string_view rest(buffer_.data() + start_, buffer_.size() - start_);
    // An event ends at a blank line: "\n\n", or "\r\n\r\n" from CRLF servers. Line ends are found
    // with memchr, not byte by byte.
    std::size_t end = std::string_view::npos, term = 0;
    const char* const data = rest.data();
    for (std::size_t i = 0; i + 1 < rest.size(); ++i) {
      const void* nl = std::memchr(data + i, '\n', rest.size() - 1 - i);
      if (nl == nullptr) break;
      i = static_cast<std::size_t>(static_cast<const char*>(nl) - data);
      if (rest[i + 1] == '\n') {
        end = i;
        term = 2;
        break;
      }
      if (rest[i + 1] == '\r' && i + 2 < rest.size() && rest[i + 2] == '\n') {
        end = i;
        term = 3;
        break;
      }
    }
    if (end == std::string_view::npos) {
      if (rest.size() > kMaxEventBytes) {
        // Dropped by skipping it, not by clearing the buffer: the events returned before still
        // stand where they were until the next Feed or AppendTarget, which empties it.
        ++dropped_;
        start_ = buffer_.size();
      }
      return false;
    }
    *event = rest.substr(0, end + term);
    start_ += end + term;
    if (event->size() > kMaxEventBytes) {
      ++dropped_;
      continue;
    }
    return true;
  }
}

namespace {

// True when `key` (a string literal) starts at `at` in `data`: a compare of a constant length,
// which the compiler inlines.
template <std::size_t N>
bool StartsAt(std::string_view data, std::size_t at, const char (&key)[N]) {
  return data.size() - at >= N - 1 && std::memcmp(data.data() + at, key, N - 1) == 0;
}

// Calls `on_key_end(offset)` for each '"' followed by ':' in `data`: the end of an object key
// (a string value never ends so; one holding `":` inside it is found too, and the callers check
// the key's text). Keys are about a third of the quotes in an engine's chunk, so this calls back
// a third as often as a visit to every quote; where SSE2 is there, sixteen positions are tested
// at a time. Returns whether `data` holds a '\n' (found in the same pass).
template <typename OnKeyEnd>
bool ForEachKeyEnd(std::string_view data, OnKeyEnd&& on_key_end) {
  const char* const begin = data.data();
  const std::size_t n = data.size();
  std::size_t i = 0;
  bool newline = false;
#if defined(__SSE2__)
  const __m128i quote = _mm_set1_epi8('"');
  const __m128i colon = _mm_set1_epi8(':');
  const __m128i lf = _mm_set1_epi8('\n');
  __m128i newlines = _mm_setzero_si128();
  for (; i + 17 <= n; i += 16) {
    const __m128i here = _mm_loadu_si128(reinterpret_cast<const __m128i*>(begin + i));
    const __m128i next = _mm_loadu_si128(reinterpret_cast<const __m128i*>(begin + i + 1));
    newlines = _mm_or_si128(newlines, _mm_cmpeq_epi8(here, lf));
    auto mask = static_cast<unsigned>(_mm_movemask_epi8(
        _mm_and_si128(_mm_cmpeq_epi8(here, quote), _mm_cmpeq_epi8(next, colon))));
    while (mask != 0) {
      on_key_end(i + static_cast<std::size_t>(__builtin_ctz(mask)));
      mask &= mask - 1;
    }
  }
  newline = _mm_movemask_epi8(newlines) != 0;
#endif
  for (; i < n; ++i) {
    newline = newline || begin[i] == '\n';
    if (i + 1 < n && begin[i] == '"' && begin[i + 1] == ':') on_key_end(i);
  }
  return newline;
}

// True when the key ending (closing quote) at `end` is `key`, quotes included in the check.
template <std::size_t N>
bool KeyIs(std::string_view data, std::size_t end, const char (&key)[N]) {
  constexpr std::size_t kLen = N - 1;
  return end >= kLen + 1 && data[end - kLen - 1] == '"' &&
         std::memcmp(data.data() + end - kLen, key, kLen) == 0;
}

// The concatenated "data:" lines of an event.
std::string_view DataOf(std::string_view event, std::string* scratch) {
  std::string_view first;
  int lines = 0;
  std::size_t pos = 0;
  while (pos < event.size()) {
    auto nl = event.find('\n', pos);
    std::string_view line = event.substr(pos, nl == std::string_view::npos ? event.npos : nl - pos);
    pos = nl == std::string_view::npos ? event.size() : nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.substr(0, 5) != "data:") continue;
    line.remove_prefix(5);
    if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    if (lines == 0) {
      first = line;
    } else {
      if (lines == 1) scratch->assign(first);
      scratch->push_back('\n');
      scratch->append(line);
    }
    ++lines;
  }
  return lines > 1 ? std::string_view(*scratch) : first;
}

bool ReadUsageObject(od::value usage, std::int64_t* prompt, std::int64_t* completion) {
  od::object o;
  if (usage.get_object().get(o)) return false;
  for (auto f : o) {
    std::string_view k;
    if (f.unescaped_key().get(k)) return false;
    if (k == "prompt_tokens") {
      if (f.value().get_int64().get(*prompt)) return false;
    } else if (k == "completion_tokens") {
      if (f.value().get_int64().get(*completion)) return false;
    }
  }
  return true;
}

}  // namespace

namespace {

// Reads the usage object whose '{' is at data[open]: its own "prompt_tokens" and
// "completion_tokens" integers (nested objects, such as *_details, are passed over). False when
// the object does not close, either member is missing, or one is not an integer.
bool ReadUsageText(std::string_view data, std::size_t open, std::int64_t* prompt,
                   std::int64_t* completion) {
  const std::size_t n = data.size();
  const auto skip_spaces = [&](std::size_t at) {
    while (at < n && (data[at] == ' ' || data[at] == '\t' || data[at] == '\r' || data[at] == '\n')) {
      ++at;
    }
    return at;
  };
  int depth = 0;
  bool have_prompt = false, have_completion = false;
  for (std::size_t i = open; i < n; ++i) {
    const char c = data[i];
    if (c == '{' || c == '[') {
      ++depth;
    } else if (c == '}' || c == ']') {
      if (--depth == 0) return have_prompt && have_completion;
    } else if (c == '"') {
      std::size_t close = i + 1;
      while (close < n && data[close] != '"') close += data[close] == '\\' ? 2 : 1;
      if (close >= n) return false;
      const std::string_view text = data.substr(i + 1, close - i - 1);
      i = close;
      if (depth != 1) continue;
      std::size_t at = skip_spaces(close + 1);
      if (at >= n || data[at] != ':') continue;  // a string value, not a key.
      const bool is_prompt = text == "prompt_tokens";
      if (!is_prompt && text != "completion_tokens") continue;
      at = skip_spaces(at + 1);
      std::int64_t value = 0;
      const auto [end, ec] = std::from_chars(data.data() + at, data.data() + n, value);
      if (ec != std::errc()) return false;
      const std::size_t after = skip_spaces(static_cast<std::size_t>(end - data.data()));
      if (after >= n || (data[after] != ',' && data[after] != '}')) return false;  // 1.5, 1e3
      (is_prompt ? have_prompt : have_completion) = true;
      *(is_prompt ? prompt : completion) = value;
      i = after - 1;
    }
  }
  return false;
}

}  // namespace

namespace {

// InspectEvent (the event read whole), and where in a one-line event the value of its "content"
// (or "text") key starts when that value is a non-empty string (the opening quote's offset; npos
// otherwise).
EventInfo InspectWhole(std::string_view event, std::size_t* content_at) {
  *content_at = std::string_view::npos;
  EventInfo info;
  // The common event is one "data:" line: its data is the line, found without a pass of its
  // own; the scan below notices a newline inside and falls back to joining the lines.
  std::string scratch;
  std::string_view data;
  bool one_line = false;
  if (event.starts_with("data:")) {
    data = event.substr(5);
    if (!data.empty() && data.front() == ' ') data.remove_prefix(1);
    if (data.ends_with("\r\n\r\n")) {
      data.remove_suffix(4);
      one_line = true;
    } else if (data.ends_with("\n\n")) {
      data.remove_suffix(2);
      one_line = true;
    }
  }
  if (!one_line) data = DataOf(event, &scratch);
  if (data == "[DONE]") {
    info.done = true;
    return info;
  }
  // One pass over the key ends of the data finds every key the relay cares about. The first
  // occurrence of each counts.
  bool error = false, choices = false, choices_empty = false;
  std::size_t usage_open = std::string_view::npos;
  int content = -1;  // -1 unknown; 0 or 1 once the first "content" or "text" key is seen.
  std::size_t n = data.size();
  // Where the value of the key ending at `end` starts: after the colon and at most one space
  // (`"key": value` from Python).
  const auto value_of = [&](std::size_t end) {
    const std::size_t at = end + 2;
    return at < n && data[at] == ' ' ? at + 1 : at;
  };
  const auto scan = [&](std::size_t end) {
    if (end == 0) return;
    switch (data[end - 1]) {  // the key's last letter
      case 't':
        if (content < 0 && (KeyIs(data, end, "content") || KeyIs(data, end, "text"))) {
          // A non-empty string: a token. null, "" or anything else is not.
          const std::size_t at = value_of(end);
          content = at + 1 < n && data[at] == '"' && data[at + 1] != '"' ? 1 : 0;
          if (content == 1 && one_line) {
            *content_at = static_cast<std::size_t>(data.data() - event.data()) + at;
          }
        }
        break;
      case 's':
        if (!choices && KeyIs(data, end, "choices")) {
          choices = true;
          std::size_t at = value_of(end);
          if (at < n && data[at] == '[') {
            ++at;
            while (at < n && (data[at] == ' ' || data[at] == '\t')) ++at;
            choices_empty = at < n && data[at] == ']';
          }
        }
        break;
      case 'r':
        error = error || KeyIs(data, end, "error");
        break;
      case 'e': {
        if (!KeyIs(data, end, "usage")) break;
        const std::size_t at = value_of(end);
        if (usage_open == std::string_view::npos && at < n && data[at] == '{') usage_open = at;
        // `,"usage":null`, exactly, is what the relay may strip: it starts at the comma.
        if (one_line && info.usage_null_at == std::string_view::npos && end >= 7 &&
            data[end - 7] == ',' && at == end + 2 && StartsAt(data, at, "null")) {
          info.usage_null_at = static_cast<std::size_t>(data.data() - event.data()) + end - 7;
        }
        break;
      }
      default:
        break;
    }
  };
  if (ForEachKeyEnd(data, scan) && one_line) {
    // A newline inside: several lines after all. Join their data and look again.
    data = DataOf(event, &scratch);
    n = data.size();
    one_line = false;
    error = choices = choices_empty = false;
    usage_open = std::string_view::npos;
    content = -1;
    *content_at = std::string_view::npos;
    info = EventInfo{};
    if (data == "[DONE]") {
      info.done = true;
      return info;
    }
    (void)ForEachKeyEnd(data, scan);
  }
  if (error && !choices) {
    info.error = true;
    *content_at = std::string_view::npos;
    return info;
  }
  info.content = content == 1;
  if (usage_open != std::string_view::npos) {
    info.has_usage = ReadUsageText(data, usage_open, &info.prompt_tokens, &info.completion_tokens);
  }
  info.usage_only = info.has_usage && choices_empty;
  if (info.usage_only) info.content = false;
  if (!info.content) *content_at = std::string_view::npos;
  return info;
}

// True when `text` can sit between a string's quotes as it is: no quote, no escape, no line end.
bool PlainText(std::string_view text) {
  for (const char c : text) {
    if (c == '"' || c == '\\' || c == '\n' || c == '\r') return false;
  }
  return true;
}

}  // namespace

EventInfo InspectEvent(std::string_view event) {
  std::size_t content_at = 0;
  return InspectWhole(event, &content_at);
}

EventInfo StreamInspector::Inspect(std::string_view event) {
  const std::size_t n = event.size();
  if (prefix_ + suffix_ > 0 && n >= prefix_ + suffix_ &&
      std::memcmp(event.data(), shape_.data(), prefix_) == 0 &&
      std::memcmp(event.data() + n - suffix_, shape_.data() + prefix_, suffix_) == 0) {
    const std::string_view text = event.substr(prefix_, n - prefix_ - suffix_);
    if (PlainText(text)) {
      // The same event as the shape's but for the token's text, which has no quote to end it
      // early: every key, and so everything the relay reads, is where it was.
      EventInfo info = shape_info_;
      info.content = !text.empty();
      if (usage_null_from_end_ != std::string_view::npos) {
        info.usage_null_at = n - usage_null_from_end_;
      }
      ++matched_;
      return info;
    }
  }
  std::size_t content_at = 0;
  EventInfo info = InspectWhole(event, &content_at);
  prefix_ = suffix_ = 0;
  if (content_at == std::string_view::npos) return info;
  // The token's string: its text from after the opening quote to the closing one.
  std::size_t close = content_at + 1;
  while (close < n && event[close] != '"') close += event[close] == '\\' ? 2 : 1;
  if (close >= n || n - (close - content_at - 1) > shape_.size()) return info;
  prefix_ = content_at + 1;
  suffix_ = n - close;
  std::memcpy(shape_.data(), event.data(), prefix_);
  std::memcpy(shape_.data() + prefix_, event.data() + close, suffix_);
  shape_info_ = info;
  // `,"usage":null` after the token moves with the token's length; one before it stays put.
  usage_null_from_end_ = info.usage_null_at != std::string_view::npos && info.usage_null_at > close
                             ? n - info.usage_null_at
                             : std::string_view::npos;
  return info;
}

bool ReadUsage(std::string_view body, std::int64_t* prompt_tokens,
               std::int64_t* completion_tokens) {
  thread_local od::parser parser;
  simdjson::padded_string padded(body);
  od::document doc;
  if (parser.iterate(padded).get(doc)) return false;
  od::object root;
  if (doc.get_object().get(root)) return false;
  for (auto f : root) {
    std::string_view k;
    if (f.unescaped_key().get(k)) return false;
    if (k == "usage") {
      od::value u;
      if (f.value().get(u)) return false;
      return ReadUsageObject(u, prompt_tokens, completion_tokens);
    }
  }
  return false;
}

}  // namespace powerplane::gateway
