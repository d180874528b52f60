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

// Calls `on_quote(offset)` for each '"' in `data`, in order. Quotes are dense in JSON (one every
// eight bytes or so): sixteen bytes are compared at a time where SSE2 is there, rather than one
// memchr call per quote.
template <typename OnQuote>
void ForEachQuote(std::string_view data, OnQuote&& on_quote) {
  const char* const begin = data.data();
  const std::size_t n = data.size();
  std::size_t i = 0;
#if defined(__SSE2__)
  const __m128i quote = _mm_set1_epi8('"');
  for (; i + 16 <= n; i += 16) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(begin + i));
    auto mask = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(bytes, quote)));
    while (mask != 0) {
      on_quote(i + static_cast<std::size_t>(__builtin_ctz(mask)));
      mask &= mask - 1;
    }
  }
#endif
  for (; i < n; ++i) {
    if (begin[i] == '"') on_quote(i);
  }
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
  // One pass over the quotes of the data finds every key the relay cares about (a find per key
  // scanned the event five times). The first occurrence of each counts.
  bool error = false, choices = false, maybe_usage = false;
  int content = -1;  // -1 unknown; 0 or 1 once the first "content" or "text" string is seen.
  int text = -1;
  const auto text_after = [&](std::size_t at) {  // a non-empty string value starts at `at`.
    return at < data.size() && data[at] != '"' ? 1 : 0;
  };
  ForEachQuote(data, [&](std::size_t at) {
    switch (at + 1 < data.size() ? data[at + 1] : '\0') {
      case 'e':
        error = error || StartsAt(data, at, "\"error\"");
        break;
      case 'c':
        choices = choices || StartsAt(data, at, "\"choices\"");
        if (content < 0 && StartsAt(data, at, "\"content\":\"")) content = text_after(at + 11);
        break;
      case 'u':
        maybe_usage = maybe_usage || StartsAt(data, at, "\"usage\":{") ||
                      StartsAt(data, at, "\"usage\": {");
        if (info.usage_null_at == std::string_view::npos && at > 0 && data[at - 1] == ',' &&
            StartsAt(data, at, "\"usage\":null") && data.data() >= event.data() &&
            data.data() < event.data() + event.size()) {
          info.usage_null_at = static_cast<std::size_t>(data.data() - event.data()) + at - 1;
        }
        break;
      case 't':
        if (text < 0 && StartsAt(data, at, "\"text\":\"")) text = text_after(at + 8);
        break;
      default:
        break;
    }
  });
  if (error && !choices) {
    info.error = true;
    return info;
  }
  info.content = content == 1 || text == 1;
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
        std::size_t n = 0;
        if (a.count_elements().get(n) == simdjson::SUCCESS) choices_empty = n == 0;
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
