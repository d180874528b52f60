#pragma once
// The head of an engine's HTTP/1.x response, and an incremental decoder of its body: chunked transfer coding, a Content-Length, or
// everything until the connection closes. The relay reads raw socket bytes (one read may hold
// many chunks) and decodes them here, instead of one parser operation per chunk. Untrusted
// input: never throws; a malformed body is an error state.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace powerplane::gateway {

// What the relay needs of a response head (status line and fields).
struct ResponseHead {
  int status = 0;
  unsigned version = 11;  // 10 or 11.
  bool keep_alive = true;
  bool chunked = false;  // Transfer-Encoding ends in "chunked" (then Content-Length is ignored).
  // The body's length from Content-Length; 0 for 204 and 304; none: chunked or until close.
  std::optional<std::uint64_t> content_length;
};

// The most a response head may take; a longer one is malformed.
constexpr std::size_t kMaxResponseHeadBytes = 16 * 1024;

// Parses the response head at the start of `bytes`, up to and including its blank line (CRLF or
// bare LF line ends). Returns the head's size in bytes and fills `*head`; 0 when `bytes` holds
// no complete head yet (and is under kMaxResponseHeadBytes); -1 when it is malformed or too long:
// a bad status line, a 1xx status, a field without a name or colon, a folded line, or a bad or
// conflicting Content-Length. Untrusted input: never throws.
std::ptrdiff_t ParseResponseHead(std::string_view bytes, ResponseHead* head);

class BodyDecoder {
 public:
  enum class Mode { kChunked, kLength, kUntilClose };
  static BodyDecoder Chunked() { return BodyDecoder(Mode::kChunked, 0); }
  static BodyDecoder Length(std::uint64_t bytes) { return BodyDecoder(Mode::kLength, bytes); }
  static BodyDecoder UntilClose() { return BodyDecoder(Mode::kUntilClose, 0); }

  // Decodes `bytes`, appending body data to `out`. Returns how many input bytes were used (less
  // than given only once the body is complete: the rest belongs to the next response).
  std::size_t Feed(std::string_view bytes, std::string* out);
  // The connection closed: completes an until-close body.
  void OnClose() {
    if (mode_ == Mode::kUntilClose) done_ = true;
  }
  bool done() const { return done_; }
  bool failed() const { return failed_; }
  bool until_close() const { return mode_ == Mode::kUntilClose; }  // the end is the FIN.

 private:
  BodyDecoder(Mode mode, std::uint64_t length) : mode_(mode), remaining_(length) {
    done_ = mode == Mode::kLength && length == 0;
  }
  enum class State { kSize, kSizeExtension, kSizeLf, kData, kDataCr, kDataLf, kTrailer };

  Mode mode_;
  State state_ = State::kSize;
  std::uint64_t remaining_ = 0;  // bytes left in this chunk (chunked) or the body (length).
  int size_digits_ = 0;
  bool last_chunk_ = false;
  std::size_t trailer_line_ = 0;  // bytes in the current trailer line.
  bool done_ = false;
  bool failed_ = false;
};

}  // namespace powerplane::gateway
