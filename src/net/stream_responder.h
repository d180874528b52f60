#pragma once
// The server's Responder (http_server.cc only): a whole response, or a chunked stream framed by
// hand and sent at once where the socket takes it; over a bare socket or TLS.

#include <array>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_suffix.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <charconv>
#include <chrono>
#include <string>
#include <string_view>
#include <type_traits>

#include "net/http_client.h"
#include "net/http_server.h"
#include "net/write_now.h"

namespace powerplane::net::server_internal {
namespace beast = boost::beast;

inline constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// Sessions are templates over the stream, so the plain path stays a bare tcp_stream.
template <typename Stream>
constexpr bool kIsTls = std::is_same_v<Stream, TlsStream>;

// What a session reads from and writes to: the bare socket of a plain connection (its timeouts
// come from one SocketDeadline per connection, not from tcp_stream's timer per operation), or
// the TLS stream.
template <typename Stream>
inline auto& Io(Stream& stream) {
  if constexpr (kIsTls<Stream>) {
    return stream;
  } else {
    return stream.socket();
  }
}

inline constexpr std::string_view kCrlf = "\r\n";
// The end of a data chunk followed by the last chunk and the end of an empty trailer.
inline constexpr std::string_view kLastChunk = "\r\n0\r\n\r\n";

// The size line of one chunk: the size in hex and CRLF.
class ChunkSize {
 public:
  explicit ChunkSize(std::size_t bytes) {
    char* end = std::to_chars(text_, text_ + sizeof text_ - 2, bytes, 16).ptr;
    *end++ = '\r';
    *end++ = '\n';
    size_ = static_cast<std::size_t>(end - text_);
  }
  asio::const_buffer buffer() const { return asio::const_buffer(text_, size_); }

 private:
  char text_[2 * sizeof(std::size_t) + 2];
  std::size_t size_;
};

// A response header as HTTP/1.x text (the status line, the fields, the blank line), written
// directly rather than through an ostream.
inline std::string SerializeHeader(const http::response<http::empty_body>& header) {
  std::string text;
  text.reserve(256);
  text += "HTTP/";
  text += static_cast<char>('0' + header.version() / 10);
  text += '.';
  text += static_cast<char>('0' + header.version() % 10);
  text += ' ';
  text += std::to_string(header.result_int());
  text += ' ';
  text += header.reason();
  text += "\r\n";
  for (const auto& field : header) {
    text += field.name_string();
    text += ": ";
    text += field.value();
    text += "\r\n";
  }
  text += "\r\n";
  return text;
}

template <typename Stream>
class StreamResponder final : public Responder {
 public:
  // `deadline`: the plain connection's; null over TLS (tcp_stream's timer applies).
  // `draining`: the server's flag; an answer that begins once it is set says "Connection: close".
  // `head`: the request was HEAD; a whole answer goes out as its header alone (RFC 9110 9.3.2:
  // the fields a GET would get, Content-Length included, and no body).
  StreamResponder(Stream& stream, SocketDeadline* deadline, std::chrono::seconds write_timeout,
                  bool keep_alive, unsigned version, const std::atomic<bool>* draining = nullptr,
                  bool head = false)
      : stream_(stream),
        deadline_(deadline),
        write_timeout_(write_timeout),
        keep_alive_(keep_alive),
        version_(version),
        chunked_(version >= 11),
        head_(head),
        draining_(draining) {}

  asio::awaitable<bool> Send(Response response) override {
    CloseIfDraining();
    response.version(version_);
    response.keep_alive(keep_alive_ && response.keep_alive());
    response.prepare_payload();
    keep_alive_ = response.keep_alive();
    sent_ = true;
    if (deadline_) {
      deadline_->Arm(write_timeout_);
    } else {
      beast::get_lowest_layer(stream_).expires_after(write_timeout_);
    }
    beast::error_code ec;
    if (head_) {
      http::response_serializer<http::string_body> header_only(response);
      std::tie(ec, std::ignore) =
          co_await http::async_write_header(Io(stream_), header_only, kUseTuple);
    } else {
      std::tie(ec, std::ignore) = co_await http::async_write(Io(stream_), response, kUseTuple);
    }
    if (deadline_) deadline_->Disarm();
    if (ec) gone_ = true;
    co_return !gone_;
  }

  asio::awaitable<bool> StartStream(http::response<http::empty_body> header) override {
    CloseIfDraining();
    header.version(version_);
    if (chunked_) {
      header.chunked(true);
      header.keep_alive(keep_alive_ && header.keep_alive());
      keep_alive_ = header.keep_alive();
    } else {  // HTTP/1.0: no chunked coding (RFC 9112 6.1); the close ends the body.
      header.chunked(false);
      header.set(http::field::connection, "close");
      keep_alive_ = false;
    }
    sent_ = true;
    streaming_ = true;
    pending_header_ = SerializeHeader(header);
    co_return !gone_;
  }

  bool BeginStream(std::string fields) override {
    // As Beast frames a chunked 200 with keep_alive(keep_alive_): HTTP/1.1 says "close" when
    // the connection ends after it. An HTTP/1.0 client knows no chunked coding (RFC 9112 6.1):
    // its stream is sent raw and ended by closing the connection.
    CloseIfDraining();
    keep_alive_ = keep_alive_ && chunked_;
    sent_ = true;
    streaming_ = true;
    pending_header_.reserve(64 + fields.size());
    pending_header_ = chunked_ ? "HTTP/1.1 200 OK\r\n" : "HTTP/1.0 200 OK\r\n";
    pending_header_ += fields;
    if (chunked_) pending_header_ += "Transfer-Encoding: chunked\r\n";
    if (!keep_alive_) pending_header_ += "Connection: close\r\n";
    pending_header_ += "\r\n";
    return !gone_;
  }

  // A chunk is framed here ("<hex size>\r\n", the data, "\r\n") and goes out in one gathered
  // write with the pending header, if any: no serializer, no intermediate coroutine. To an
  // HTTP/1.0 client the data goes unframed.
  asio::awaitable<bool> WriteChunk(std::string_view data) override {
    if (!WriteChunkNow(data)) co_await FinishWrite();
    co_return !gone_;
  }

  asio::awaitable<bool> SendHead() override {
    if (gone_ || pending_header_.empty()) co_return !gone_;
    unfinished_.buffers = {asio::buffer(pending_header_), asio::const_buffer(),
                           asio::const_buffer(), asio::const_buffer()};
    if (!SendOrKeep()) co_await FinishWrite();
    co_return !gone_;
  }

  asio::awaitable<bool> EndStream(std::string_view last_data) override {
    if (!EndStreamNow(last_data)) co_await FinishWrite();
    co_return !gone_;
  }

  bool WriteChunkNow(std::string_view data) override {
    if (gone_ || data.empty()) return true;
    if (!chunked_) [[unlikely]] {
      unfinished_.buffers = {asio::buffer(pending_header_), asio::const_buffer(),
                             asio::buffer(data.data(), data.size()), asio::const_buffer()};
      return SendOrKeep();
    }
    unfinished_.size = ChunkSize(data.size());
    unfinished_.buffers = {asio::buffer(pending_header_), unfinished_.size.buffer(),
                           asio::buffer(data.data(), data.size()),
                           asio::buffer(kCrlf.data(), kCrlf.size())};
    return SendOrKeep();
  }

  bool EndStreamNow(std::string_view last_data) override {
    if (gone_) return true;
    streaming_ = false;
    if (!chunked_) [[unlikely]] {  // the session's close ends the body (keep_alive_ is false).
      unfinished_.buffers = {asio::buffer(pending_header_), asio::const_buffer(),
                             asio::buffer(last_data.data(), last_data.size()),
                             asio::const_buffer()};
      return SendOrKeep();
    }
    unfinished_.size = ChunkSize(last_data.size());
    // The last data chunk's CRLF and the zero-length last chunk share one buffer.
    unfinished_.buffers = {asio::buffer(pending_header_),
                           last_data.empty() ? asio::const_buffer() : unfinished_.size.buffer(),
                           asio::buffer(last_data.data(), last_data.size()),
                           last_data.empty()
                               ? asio::buffer(kLastChunk.data() + 2, kLastChunk.size() - 2)
                               : asio::buffer(kLastChunk.data(), kLastChunk.size())};
    return SendOrKeep();
  }

  // The rest of the kept buffers, waiting for the client under the write timeout.
  asio::awaitable<bool> FinishWrite() override {
    if (!gone_ && unfinished_.sent < asio::buffer_size(unfinished_.buffers)) {
      beast::buffers_suffix<Chunk> rest(unfinished_.buffers);
      rest.consume(unfinished_.sent);
      ArmWriteTimeout();
      auto [ec, n] = co_await asio::async_write(Io(stream_), rest, kUseTuple);
      if (deadline_) deadline_->Disarm();
      if (ec) gone_ = true;
    }
    unfinished_.sent = 0;
    pending_header_.clear();
    co_return !gone_;
  }

  bool ClientGone() const override { return gone_; }
  bool ClientLeft() override {
    if (!gone_ && PeerClosed(beast::get_lowest_layer(stream_).socket())) gone_ = true;
    return gone_;
  }
  std::string Peer() const override {
    beast::error_code ec;
    auto ep = beast::get_lowest_layer(stream_).socket().remote_endpoint(ec);
    return ec ? std::string("?") : ep.address().to_string() + ":" + std::to_string(ep.port());
  }

  bool sent() const { return sent_; }

 private:
  using Chunk = std::array<asio::const_buffer, 4>;

  // Sends the framed buffers in unfinished_ whole, or marks the client gone. On a plain
  // connection, what the socket takes at once goes out without an asynchronous operation
  // (net/write_now.h): true when that was all of it (or the client is gone), false when the
  // rest, from unfinished_.sent, waits for FinishWrite(). Over TLS everything waits.
  bool SendOrKeep() {
    unfinished_.sent = 0;
    if constexpr (kIsTls<Stream>) {
      return false;
    } else {
      beast::error_code ec;
      unfinished_.sent = SendNow(stream_.socket(), unfinished_.buffers, ec);
      if (ec) gone_ = true;
      if (!gone_ && unfinished_.sent < asio::buffer_size(unfinished_.buffers)) return false;
      unfinished_.sent = 0;
      pending_header_.clear();
      return true;
    }
  }

  // A plain connection arms its deadline for each write (no timer operation while its timer
  // waits). Over TLS, the write timeout is re-armed at most once a second: a timer per chunk
  // costs more than the chunk; a client that stops reading still times out within
  // write_timeout + 1 s.
  void ArmWriteTimeout() {
    if (deadline_) {
      deadline_->Arm(write_timeout_);
      return;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - armed_ > std::chrono::seconds(1)) {
      beast::get_lowest_layer(stream_).expires_after(write_timeout_);
      armed_ = now;
    }
  }

 public:
  bool keep_alive() const { return keep_alive_ && !gone_ && !streaming_; }

 private:
  Stream& stream_;
  SocketDeadline* deadline_;
  std::chrono::seconds write_timeout_;
  void CloseIfDraining() {
    if (draining_ != nullptr && draining_->load(std::memory_order_relaxed)) keep_alive_ = false;
  }
  bool keep_alive_;
  unsigned version_;
  const bool chunked_;  // HTTP/1.1: a stream is chunked; HTTP/1.0: raw, ended by the close.
  const bool head_;
  const std::atomic<bool>* draining_;
  bool sent_ = false;
  bool gone_ = false;
  bool streaming_ = false;
  std::chrono::steady_clock::time_point armed_{};
  std::string pending_header_;  // a stream's header, sent with its first chunk.
  // The framed write in progress: its size line, its buffers (the data is the caller's) and
  // how much of them has gone out.
  struct {
    ChunkSize size{0};
    Chunk buffers;
    std::size_t sent = 0;
  } unfinished_;
};

}  // namespace powerplane::net::server_internal
