#include "gateway/sse.h"

#include <simdjson.h>

#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace powerplane::gateway {
namespace od = simdjson::ondemand;

void SseSplitter::Feed(std::string_view bytes) {
  if (start_ > 0 && start_ == buffer_.size()) {
    buffer_.clear();
    start_ = 0;
  } else if (start_ > 64 * 1024) {
    buffer_.erase(0, start_);
    start_ = 0;
  }
  buffer_.append(bytes);
}

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
        ++dropped_;
        buffer_.clear();
        start_ = 0;
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
// at a time.
template <typename OnKeyEnd>
void ForEachKeyEnd(std::string_view data, OnKeyEnd&& on_key_end) {
  const char* const begin = data.data();
  const std::size_t n = data.size();
  std::size_t i = 0;
#if defined(__SSE2__)
  const __m128i quote = _mm_set1_epi8('"');
  const __m128i colon = _mm_set1_epi8(':');
  for (; i + 17 <= n; i += 16) {
    const __m128i here = _mm_loadu_si128(reinterpret_cast<const __m128i*>(begin + i));
    const __m128i next = _mm_loadu_si128(reinterpret_cast<const __m128i*>(begin + i + 1));
    auto mask = static_cast<unsigned>(_mm_movemask_epi8(
        _mm_and_si128(_mm_cmpeq_epi8(here, quote), _mm_cmpeq_epi8(next, colon))));
    while (mask != 0) {
      on_key_end(i + static_cast<std::size_t>(__builtin_ctz(mask)));
      mask &= mask - 1;
    }
  }
#endif
  for (; i + 1 < n; ++i) {
    if (begin[i] == '"' && begin[i + 1] == ':') on_key_end(i);
  }
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

EventInfo InspectEvent(std::string_view event) {
  EventInfo info;
  std::string scratch;
  std::string_view data = DataOf(event, &scratch);
  if (data == "[DONE]") {
    info.done = true;
    return info;
  }
  // One pass over the key ends of the data finds every key the relay cares about. The first
  // occurrence of each counts.
  bool error = false, choices = false, maybe_usage = false;
  int content = -1;  // -1 unknown; 0 or 1 once the first "content" or "text" key is seen.
  const std::size_t n = data.size();
  ForEachKeyEnd(data, [&](std::size_t end) {
    // The value starts after the colon and at most one space (`"key": value` from Python).
    std::size_t value = end + 2;
    if (value < n && data[value] == ' ') ++value;
    const char first = value < n ? data[value] : '\0';
    switch (data[end - (end > 0 ? 1 : 0)]) {  // the key's last letter
      case 't':
        if (content < 0 && (KeyIs(data, end, "content") || KeyIs(data, end, "text"))) {
          // A non-empty string: a token. null, "" or anything else is not.
          content = first == '"' && value + 1 < n && data[value + 1] != '"' ? 1 : 0;
        }
        break;
      case 's':
        choices = choices || KeyIs(data, end, "choices");
        break;
      case 'r':
        error = error || KeyIs(data, end, "error");
        break;
      case 'e':
        if (!KeyIs(data, end, "usage")) break;
        maybe_usage = maybe_usage || first == '{';
        // `,"usage":null`, exactly, is what the relay may strip: it starts at the comma.
        if (info.usage_null_at == std::string_view::npos && end >= 7 && data[end - 7] == ',' &&
            value == end + 2 && StartsAt(data, value, "null") && data.data() >= event.data() &&
            data.data() < event.data() + event.size()) {
          info.usage_null_at = static_cast<std::size_t>(data.data() - event.data()) + end - 7;
        }
        break;
      default:
        break;
    }
  });
  if (error && !choices) {
    info.error = true;
    return info;
  }
  info.content = content == 1;
  if (!maybe_usage) return info;

  thread_local od::parser parser;
  simdjson::padded_string padded(data);
  od::document doc;
  if (parser.iterate(padded).get(doc)) return info;
  od::object root;
  if (doc.get_object().get(root)) return info;
  bool choices_empty = false;
  for (auto f : root) {
    std::string_view k;
    if (f.unescaped_key().get(k)) return info;
    if (k == "choices") {
      od::array a;
      if (f.value().get_array().get(a) == simdjson::SUCCESS) {
        std::size_t count = 0;
        if (a.count_elements().get(count) == simdjson::SUCCESS) choices_empty = count == 0;
      }
    } else if (k == "usage") {
      od::value u;
      if (f.value().get(u) == simdjson::SUCCESS) {
        info.has_usage = ReadUsageObject(u, &info.prompt_tokens, &info.completion_tokens);
      }
    }
  }
  info.usage_only = info.has_usage && choices_empty;
  if (info.usage_only) info.content = false;
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
