#include "gateway/chunked.h"

#include <algorithm>

namespace powerplane::gateway {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

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
