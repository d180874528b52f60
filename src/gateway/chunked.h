#pragma once
// Incremental decoder of an HTTP/1.1 response body: chunked transfer coding, a Content-Length, or
// everything until the connection closes. The relay reads raw socket bytes (one read may hold
// many chunks) and decodes them here, instead of one parser operation per chunk. Untrusted
// input: never throws; a malformed body is an error state.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace powerplane::gateway {

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
