#include "gateway/chunked.h"

#include <algorithm>
#include <array>

namespace powerplane::gateway {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The characters of a field name (RFC 9110 "tchar"), as a table: a head's names are read a
// character at a time.
constexpr std::array<bool, 256> kTokenChars = [] {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (const char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}();

bool IsTokenChar(char c) { return kTokenChars[static_cast<unsigned char>(c)]; }

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsNoCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

std::string_view TrimSpaces(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// Calls `on_token` with each comma-separated token of a field value, trimmed; empty ones skipped.
template <typename OnToken>
void ForEachToken(std::string_view value, OnToken&& on_token) {
  while (!value.empty()) {
    const std::size_t comma = value.find(',');
    const std::string_view token = TrimSpaces(value.substr(0, comma));
    if (!token.empty()) on_token(token);
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
}

}  // namespace

std::ptrdiff_t ParseResponseHead(std::string_view bytes, ResponseHead* head) {
  // The end of the head: the first empty line.
  std::size_t end = std::string_view::npos, pos = 0;
  for (;;) {
    const std::size_t nl = bytes.find('\n', pos);
    if (nl == std::string_view::npos || nl + 1 > kMaxResponseHeadBytes) break;
    const bool empty_line = nl == pos || (nl == pos + 1 && bytes[pos] == '\r');
    if (empty_line && pos > 0) {
      end = nl + 1;
      break;
    }
    pos = nl + 1;
  }
  if (end == std::string_view::npos) {
    return bytes.size() >= kMaxResponseHeadBytes ? -1 : 0;
  }
  *head = ResponseHead{};
  std::string_view text = bytes.substr(0, end);
  auto next_line = [&text]() {
    const std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    return line;
  };
  // "HTTP/1.1 200 OK": the reason phrase may be empty or missing.
  const std::string_view status_line = next_line();
  if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1." ||
      (status_line[7] != '0' && status_line[7] != '1') || status_line[8] != ' ' ||
      (status_line.size() > 12 && status_line[12] != ' ')) {
    return -1;
  }
  int status = 0;
  for (std::size_t i = 9; i < 12; ++i) {
    if (status_line[i] < '0' || status_line[i] > '9') return -1;
    status = status * 10 + (status_line[i] - '0');
  }
  if (status < 200 || status > 599) return -1;  // 1xx heads are not expected from an engine.
  head->status = status;
  head->version = status_line[7] == '1' ? 11 : 10;
  head->keep_alive = head->version == 11;
  bool has_transfer_encoding = false;
  for (std::string_view line = next_line(); !line.empty(); line = next_line()) {
    const std::size_t colon = line.find(':');
    if (colon == 0 || colon == std::string_view::npos) return -1;
    const std::string_view name = line.substr(0, colon);
    for (char c : name) {
      if (!IsTokenChar(c)) return -1;  // also refuses folded lines (leading space or tab).
    }
    const std::string_view value = TrimSpaces(line.substr(colon + 1));
    if (EqualsNoCase(name, "content-length")) {
      std::uint64_t n = 0;
      if (value.empty() || value.size() > 19) return -1;
      for (char c : value) {
        if (c < '0' || c > '9') return -1;
        n = n * 10 + static_cast<std::uint64_t>(c - '0');
      }
      if (head->content_length && *head->content_length != n) return -1;
      head->content_length = n;
    } else if (EqualsNoCase(name, "transfer-encoding")) {
      has_transfer_encoding = true;
      bool chunked_last = false;
      ForEachToken(value, [&](std::string_view coding) {
        chunked_last = EqualsNoCase(coding, "chunked");
      });
      head->chunked = chunked_last;
    } else if (EqualsNoCase(name, "connection")) {
      ForEachToken(value, [&](std::string_view option) {
        if (EqualsNoCase(option, "close")) head->keep_alive = false;
        if (EqualsNoCase(option, "keep-alive") && head->version == 10) head->keep_alive = true;
      });
    }
  }
  if (has_transfer_encoding) {
    // A coded body: chunked, or (any other last coding) until the connection closes.
    head->content_length.reset();
  }
  if (status == 204 || status == 304) {
    head->chunked = false;
    head->content_length = 0;
  }
  return static_cast<std::ptrdiff_t>(end);
}

std::size_t BodyDecoder::Feed(std::string_view bytes, std::string* out) {
  if (done_ || failed_) return 0;
  if (mode_ == Mode::kUntilClose) {
    out->append(bytes);
    return bytes.size();
  }
  if (mode_ == Mode::kLength) {
    const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, bytes.size()));
    out->append(bytes.substr(0, take));
    remaining_ -= take;
    done_ = remaining_ == 0;
    return take;
  }
  std::size_t i = 0;
  while (i < bytes.size() && !done_ && !failed_) {
    const char c = bytes[i];
    switch (state_) {
      case State::kSize: {
        const int v = HexValue(c);
        if (v >= 0) {
          if (++size_digits_ > 15) {
            failed_ = true;  // a chunk over 2^60 bytes is not a chunk.
            break;
          }
          remaining_ = remaining_ * 16 + static_cast<std::uint64_t>(v);
          ++i;
        } else if (size_digits_ > 0 && (c == ';' || c == ' ' || c == '\t')) {
          state_ = State::kSizeExtension;
          ++i;
        } else if (size_digits_ > 0 && c == '\r') {
          state_ = State::kSizeLf;
          ++i;
        } else {
          failed_ = true;
        }
        break;
      }
      case State::kSizeExtension:
        if (c == '\r') state_ = State::kSizeLf;
        ++i;
        break;
      case State::kSizeLf:
        if (c != '\n') {
          failed_ = true;
          break;
        }
        ++i;
        if (remaining_ == 0) {
          last_chunk_ = true;
          state_ = State::kTrailer;
          trailer_line_ = 0;
        } else {
          state_ = State::kData;
        }
        break;
      case State::kData: {
        const std::size_t take = static_cast<std::size_t>(
            std::min<std::uint64_t>(remaining_, bytes.size() - i));
        out->append(bytes.substr(i, take));
        i += take;
        remaining_ -= take;
        if (remaining_ == 0) state_ = State::kDataCr;
        break;
      }
      case State::kDataCr:
        if (c != '\r') {
          failed_ = true;
          break;
        }
        ++i;
        state_ = State::kDataLf;
        break;
      case State::kDataLf:
        if (c != '\n') {
          failed_ = true;
          break;
        }
        ++i;
        state_ = State::kSize;
        size_digits_ = 0;
        remaining_ = 0;
        break;
      case State::kTrailer:
        // Trailer fields, ended by an empty line.
        ++i;
        if (c == '\n') {
          if (trailer_line_ == 0) {
            done_ = true;
          }
          trailer_line_ = 0;
        } else if (c != '\r') {
          ++trailer_line_;
        }
        break;
    }
  }
  return i;
}

}  // namespace powerplane::gateway
