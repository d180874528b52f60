#include "net/http_server.h"
#include "net/read_drained.h"
#include "net/server_request.h"
#include "net/write_now.h"

#include "net/http_client.h"

#include <boost/asio/steady_timer.hpp>

#include <spdlog/spdlog.h>

#include <openssl/ssl.h>
#include <poll.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>
#include <map>
#include <tuple>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_suffix.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

namespace powerplane::net {
namespace beast = boost::beast;
namespace {

constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);
// The most one read of a request takes (Beast's own reads use the same).
constexpr std::size_t kReadBytes = 64 * 1024;
// The most connections taken from the listener's backlog at one wake (State::Accept).
constexpr int kAcceptBatch = 128;
// How long a TLS connection waits for the client's close_notify when it ends.
constexpr std::chrono::seconds kTlsShutdownTimeout{1};

using TlsStream = beast::ssl_stream<beast::tcp_stream>;
// Beast's request parser, with what it reads kept in a ServerRequest instead of a message of
// basic_fields (server_request.h). Beast checks every byte, the limits and the body's framing
// (Content-Length or chunked) as its own request_parser does.
//
// It also checks what Beast leaves to its caller (RFC 9110 10.1.1, RFC 9112 6.3): a
// Transfer-Encoding whose last coding is not chunked fails as bad_transfer_encoding (the body's
// length cannot be known: 400), an Expect field with an expectation other than 100-continue fails
// as bad_value with expectation_failed() set (417), and an HTTP/1.1 request's 100-continue is
// noted for the session to answer before it reads the body (ignored in HTTP/1.0).
class RequestParser : public http::basic_parser<true> {
 public:
  explicit RequestParser(ServerRequest& request) : request_(request) {}

  // True from the header of an HTTP/1.1 request with "Expect: 100-continue" until
  // ContinueSent().
  bool expects_continue() const { return expects_continue_; }
  void ContinueSent() { expects_continue_ = false; }
  // True when the request failed for an expectation the server does not know.
  bool expectation_failed() const { return expectation_failed_; }
  // True when the request failed for a body in a content coding (Content-Encoding other than
  // identity): the server decodes none, so it answers 415 (RFC 9110 15.5.16) rather than read
  // compressed bytes as JSON.
  bool coded_body() const { return coded_body_; }
  // True when the request failed for a second Authorization field: which credentials would
  // count is ambiguous (a singleton field, RFC 9110 11.6.2), so it is 400, not the first one.
  bool several_credentials() const { return several_credentials_; }

 private:
  void on_request_impl(http::verb method, beast::string_view method_string,
                       beast::string_view target, int version, beast::error_code& ec) override {
    request_.SetStartLine(method, method_string, OriginForm(target), static_cast<unsigned>(version));
    ec = {};
  }
  // A target in absolute form ("http://host:port/path?query", which a server must accept: RFC
  // 9112 3.2.2) as the origin form ("/path?query") every handler reads; any other as it is.
  static std::string_view OriginForm(std::string_view target) {
    if (target.starts_with('/')) return target;  // the usual form: nothing to look at.
    for (std::string_view scheme : {"http://", "https://"}) {
      if (target.size() < scheme.size() ||
          !beast::iequals(target.substr(0, scheme.size()), scheme)) {
        continue;
      }
      const std::string_view rest = target.substr(scheme.size());
      const std::size_t path = rest.find_first_of("/?");
      if (path == std::string_view::npos) return "/";
      if (rest[path] == '?') return target;  // "http://host?q": left as sent (a path of none).
      return rest.substr(path);
    }
    return target;
  }
  void on_response_impl(int, beast::string_view, int, beast::error_code& ec) override {
    ec = {};  // never called for a request.
  }
  void on_field_impl(http::field id, beast::string_view name, beast::string_view value,
                     beast::error_code& ec) override {
    request_.AddField(id, name, value);
    ec = {};
    if (id == http::field::expect) [[unlikely]] {
      NoteExpectations(value);
    } else if (id == http::field::transfer_encoding) [[unlikely]] {
      transfer_encoding_ = true;
    } else if (id == http::field::content_encoding) [[unlikely]] {
      if (!beast::iequals(value, "identity")) {
        coded_body_ = true;
        ec = http::error::bad_value;
      }
    } else if (id == http::field::authorization) {
      if (std::exchange(authorization_seen_, true)) [[unlikely]] {
        several_credentials_ = true;
        ec = http::error::bad_value;
      }
    }
  }
  void on_header_impl(beast::error_code& ec) override {
    ec = {};
    if (transfer_encoding_ && !chunked()) [[unlikely]] {
      ec = http::error::bad_transfer_encoding;
    } else if (expectation_failed_) [[unlikely]] {
      ec = http::error::bad_value;
    }
  }
  // Expect = #expectation, case-insensitive (empty list elements allowed).
  void NoteExpectations(std::string_view value) {
    while (!value.empty()) {
      const std::size_t comma = value.find(',');
      std::string_view member = value.substr(0, comma);
      value = comma == std::string_view::npos ? std::string_view() : value.substr(comma + 1);
      while (!member.empty() && (member.front() == ' ' || member.front() == '\t')) {
        member.remove_prefix(1);
      }
      while (!member.empty() && (member.back() == ' ' || member.back() == '\t')) {
        member.remove_suffix(1);
      }
      if (member.empty()) continue;
      if (beast::iequals(member, "100-continue")) {
        expects_continue_ = request_.version() >= 11;
      } else {
        expectation_failed_ = true;
      }
    }
  }
  void on_body_init_impl(const boost::optional<std::uint64_t>& length,
                         beast::error_code& ec) override {
    // Within the body limit: Beast refused a longer Content-Length already.
    if (length) request_.body().reserve(static_cast<std::size_t>(*length));
    ec = {};
  }
  std::size_t on_body_impl(beast::string_view data, beast::error_code& ec) override {
    request_.body().append(data);
    ec = {};
    return data.size();
  }
  void on_chunk_header_impl(std::uint64_t, beast::string_view, beast::error_code& ec) override {
    ec = {};
  }
  std::size_t on_chunk_body_impl(std::uint64_t, beast::string_view data,
                                 beast::error_code& ec) override {
    request_.body().append(data);
    ec = {};
    return data.size();
  }
  void on_finish_impl(beast::error_code& ec) override { ec = {}; }

  ServerRequest& request_;
  bool transfer_encoding_ = false;
  bool coded_body_ = false;
  bool several_credentials_ = false;
  bool authorization_seen_ = false;
  bool expects_continue_ = false;
  bool expectation_failed_ = false;
};

// The interim answer to "Expect: 100-continue" (RFC 9110 15.2.1).
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

// A request Beast's parser refused for its syntax or framing (answered 400, RFC 9112 6.3 for the
// framing), as opposed to the connection's end or failure.
bool IsMalformed(const beast::error_code& ec) {
  static constexpr std::array kMalformed = {http::error::bad_line_ending,
                                            http::error::bad_method,
                                            http::error::bad_target,
                                            http::error::bad_version,
                                            http::error::bad_field,
                                            http::error::bad_value,
                                            http::error::bad_content_length,
                                            http::error::multiple_content_length,
                                            http::error::bad_transfer_encoding,
                                            http::error::bad_chunk,
                                            http::error::bad_chunk_extension,
                                            http::error::bad_obs_fold};
  return std::any_of(kMalformed.begin(), kMalformed.end(), [&](http::error e) { return ec == e; });
}

// Sessions are templates over the stream, so the plain path stays a bare tcp_stream.
template <typename Stream>
constexpr bool kIsTls = std::is_same_v<Stream, TlsStream>;

// What a session reads from and writes to: the bare socket of a plain connection (its timeouts
// come from one SocketDeadline per connection, not from tcp_stream's timer per operation), or
// the TLS stream.
template <typename Stream>
auto& Io(Stream& stream) {
  if constexpr (kIsTls<Stream>) {
    return stream;
  } else {
    return stream.socket();
  }
}

// How late past a timeout a plain connection may be cut: a quarter of the shortest timeout,
// between 100 ms and 5 s (the deadline's timer wakes once per granularity while armed).
std::chrono::steady_clock::duration DeadlineGranularity(const ServerOptions& o) {
  const std::chrono::steady_clock::duration shortest =
      std::min({o.header_timeout, o.idle_timeout, o.write_timeout});
  return std::clamp<std::chrono::steady_clock::duration>(
      shortest / 4, std::chrono::milliseconds(100), std::chrono::seconds(5));
}

// Reads the PEM certificate chain and key into a TLS 1.2+ server context; throws naming the file.
asio::ssl::context MakeTlsContext(const std::string& cert_file, const std::string& key_file) {
  if (cert_file.empty() || key_file.empty()) {
    throw std::runtime_error("TLS needs both a certificate file and a key file (got cert '" +
                             cert_file + "', key '" + key_file + "')");
  }
  for (const auto* file : {&cert_file, &key_file}) {
    if (std::FILE* f = std::fopen(file->c_str(), "rb")) {
      std::fclose(f);
    } else {
      throw std::runtime_error("cannot read TLS " +
                               std::string(file == &cert_file ? "certificate" : "key") + " file '" +
                               *file + "'");
    }
  }
  asio::ssl::context ctx(asio::ssl::context::tls_server);
  ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                  asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                  asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  // Idle kept-alive connections give their TLS buffers back (many connections, little memory).
  SSL_CTX_set_mode(ctx.native_handle(), SSL_MODE_RELEASE_BUFFERS);
  beast::error_code ec;
  ctx.use_certificate_chain_file(cert_file, ec);
  if (ec) {
    throw std::runtime_error("invalid TLS certificate file '" + cert_file + "': " + ec.message());
  }
  ctx.use_private_key_file(key_file, asio::ssl::context::pem, ec);
  if (ec) {
    throw std::runtime_error("invalid TLS key file '" + key_file + "': " + ec.message());
  }
  if (SSL_CTX_check_private_key(ctx.native_handle()) != 1) {
    throw std::runtime_error("TLS key file '" + key_file + "' does not match certificate file '" +
                             cert_file + "'");
  }
  return ctx;
}

constexpr std::string_view kCrlf = "\r\n";
// The end of a data chunk followed by the last chunk and the end of an empty trailer.
constexpr std::string_view kLastChunk = "\r\n0\r\n\r\n";

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
std::string SerializeHeader(const http::response<http::empty_body>& header) {
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
    unfinished_.buffers = {
        asio::buffer(pending_header_),
        last_data.empty() ? asio::const_buffer() : unfinished_.size.buffer(),
        asio::buffer(last_data.data(), last_data.size()),
        last_data.empty() ? asio::buffer(kLastChunk.data() + 2, kLastChunk.size() - 2)
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

// One connection in the server's registry: its TCP layer, and whether a request is under way on
// it (bytes of one read, or its handler running). `busy` is read and written on the
// connection's own thread only.
struct Live {
  explicit Live(std::weak_ptr<beast::tcp_stream> s) : stream(std::move(s)) {}
  std::weak_ptr<beast::tcp_stream> stream;
  bool busy = false;
};

}  // namespace

struct HttpServer::State : std::enable_shared_from_this<HttpServer::State> {
  State(std::vector<asio::any_io_executor> ex, tcp::endpoint ep, Handler h, ServerOptions o)
      : executors(std::move(ex)), acceptor(executors.at(0)), handler(std::move(h)), options(o) {
    if (!options.tls_cert_file.empty() || !options.tls_key_file.empty()) {
      tls_context.emplace(MakeTlsContext(options.tls_cert_file, options.tls_key_file));
    }
    acceptor.open(ep.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    if (options.reuse_port) {
      acceptor.set_option(asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>(true));
    }
    acceptor.bind(ep);
    acceptor.listen(asio::socket_base::max_listen_connections);
    port = acceptor.local_endpoint().port();
  }

  // Accepts as nginx does with multi_accept: each time the listener is ready, the whole backlog
  // (up to kAcceptBatch connections) is taken at once. One accept per wake would take one new
  // connection per turn of a busy event loop, each turn longer by the connections already in:
  // a burst of 256 new connections under load then waited up to half a second to be accepted
  // (measured: bench/contended.sh; docs/benchmarks.md, session 17), while requests on the
  // established ones went round many times.
  asio::awaitable<void> Accept() {
    auto self = shared_from_this();
    beast::error_code ignored;
    acceptor.non_blocking(true, ignored);  // the batch's accepts answer would_block when done.
    while (!stopped) {
      auto [ec, socket] = co_await acceptor.async_accept(NextExecutor(), kUseTuple);
      if (ec) {
        if (stopped || ec == asio::error::operation_aborted) co_return;
        // Out of descriptors (or another transient failure): the pending connection stays in the
        // backlog, so retrying at once would spin. Pause, and log once per pause, not per retry.
        spdlog::warn("accept: {} (pausing 50 ms)", ec.message());
        asio::steady_timer pause(acceptor.get_executor());
        pause.expires_after(std::chrono::milliseconds(50));
        co_await pause.async_wait(kUseTuple);
        continue;
      }
      Admit(std::move(socket));
      // The rest of the backlog, without waiting: a failure here (would_block: the backlog is
      // empty; out of descriptors) is met again, and handled, by the next async_accept.
      for (int i = 1; i < kAcceptBatch && !stopped; ++i) {
        beast::error_code more_ec;
        tcp::socket more = acceptor.accept(NextExecutor(), more_ec);
        if (more_ec) break;
        Admit(std::move(more));
      }
    }
  }

  asio::any_io_executor& NextExecutor() { return executors[next_executor++ % executors.size()]; }

  // A new connection: refused over the bound, else its session started on its thread.
  void Admit(tcp::socket socket) {
    if (connections.load() >= options.max_connections) {
      Refuse(std::move(socket));  // over the bound: refuse rather than queue without limit.
      return;
    }
    // Counted here, not when its session starts on its thread: a burst of accepts would
    // otherwise all pass the check above before any session had counted itself. The session
    // takes the count over (and gives it back when it ends).
    ++connections;
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    // Responses are sent at once where the socket takes them (net/write_now.h).
    if (!tls_context) socket.non_blocking(true, ignored);
    auto ex = socket.get_executor();
    if (tls_context) {
      asio::co_spawn(ex, Session<TlsStream>(std::move(socket)), asio::detached);
    } else {
      asio::co_spawn(ex, Session<beast::tcp_stream>(std::move(socket)), asio::detached);
    }
  }

  // A connection over the bound: a plain one is told so (503, Retry-After, an OpenAI error) in
  // one non-blocking send and then closed the lingering way, so the answer is not lost to a
  // reset; at most kMaxRefusing such closes run at once, beyond that (and over TLS, where a
  // plain answer would be garbage) the connection is closed outright.
  void Refuse(tcp::socket socket) {
    beast::error_code ignored;
    if (tls_context || refusing.load() >= kMaxRefusing) {
      socket.close(ignored);
      return;
    }
    static const std::string answer = [] {
      const std::string body = ErrorBody(
          "the gateway holds as many connections as it may; retry later", "server_error",
          "too_many_connections");
      return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
             "Retry-After: 1\r\nConnection: close\r\nContent-Length: " +
             std::to_string(body.size()) + "\r\n\r\n" + body;
    }();
    SendNow(socket, asio::buffer(answer), ignored);
    ++refusing;
    auto ex = socket.get_executor();
    asio::co_spawn(ex, Refused(shared_from_this(), std::move(socket)), asio::detached);
  }
  // (A coroutine's parameters live in its frame; a capturing lambda's captures would not.)
  static asio::awaitable<void> Refused(std::shared_ptr<State> self, tcp::socket socket) {
    beast::tcp_stream stream(std::move(socket));
    co_await LingeringClose(stream, std::chrono::seconds(1));
    --self->refusing;
  }

  // Ends a TLS connection politely: a close_notify each way, waiting at most
  // kTlsShutdownTimeout for the peer's, then a close.
  static asio::awaitable<void> TlsShutdown(TlsStream& stream) {
    auto& tcp_layer = beast::get_lowest_layer(stream);
    if (tcp_layer.socket().is_open()) {
      tcp_layer.expires_after(kTlsShutdownTimeout);
      co_await stream.async_shutdown(kUseTuple);
    }
    beast::error_code ignored;
    tcp_layer.socket().close(ignored);
  }

  // After an early error answer, stop sending and read (and drop) what the client is still
  // sending for a short while, so the answer is not lost to a connection reset. Over TLS the
  // half-close would cut the record stream, so it drains first and shuts TLS down after.
  template <typename Stream>
  static asio::awaitable<void> LingeringClose(
      Stream& stream, std::chrono::seconds linger = std::chrono::seconds(2)) {
    beast::error_code ignored;
    auto& tcp_layer = beast::get_lowest_layer(stream);
    if constexpr (!kIsTls<Stream>) tcp_layer.socket().shutdown(tcp::socket::shutdown_send, ignored);
    std::array<char, 16 * 1024> scratch;
    std::size_t drained = 0;
    tcp_layer.expires_after(linger);
    while (drained < 64 * 1024 * 1024) {
      auto [ec, n] = co_await stream.async_read_some(asio::buffer(scratch), kUseTuple);
      if (ec) break;
      drained += n;
    }
    if constexpr (kIsTls<Stream>) co_await TlsShutdown(stream);
    tcp_layer.socket().close(ignored);
  }

  template <typename Stream>
  asio::awaitable<void> Session(tcp::socket socket) {
    auto self = shared_from_this();
    struct Guard {  // the count Accept took for this connection.
      std::atomic<std::size_t>& n;
      ~Guard() { --n; }
    } guard{connections};
    std::shared_ptr<Stream> stream_ptr;
    if constexpr (kIsTls<Stream>) {
      stream_ptr = std::make_shared<Stream>(beast::tcp_stream(std::move(socket)), *tls_context);
    } else {
      stream_ptr = std::make_shared<Stream>(std::move(socket));
    }
    Stream& stream = *stream_ptr;
    auto& tcp_layer = beast::get_lowest_layer(stream);
    // The registry holds the TCP layer (sharing the session stream's ownership), so Stop can
    // close any kind of connection, and whether a request is under way, so Drain can close the
    // others.
    const auto live = std::make_shared<Live>(
        std::shared_ptr<beast::tcp_stream>(stream_ptr, &tcp_layer));
    const std::uint64_t session_id = Register(live);
    struct Unregister {
      State& s;
      std::uint64_t id;
      ~Unregister() { s.Forget(id); }
    } unregister{*this, session_id};
    if constexpr (kIsTls<Stream>) {
      // A client that never completes the handshake (or speaks plain HTTP) is dropped.
      tcp_layer.expires_after(options.header_timeout);
      auto [ec] = co_await stream.async_handshake(asio::ssl::stream_base::server, kUseTuple);
      if (ec) {
        spdlog::debug("TLS handshake failed: {}", ec.message());
        beast::error_code ignored;
        tcp_layer.socket().close(ignored);
        co_return;
      }
    }
    // Declared after the stream, so it goes first.
    std::optional<SocketDeadline> deadline;
    if constexpr (!kIsTls<Stream>) {
      deadline.emplace(tcp_layer.socket(), DeadlineGranularity(options));
    }
    SocketDeadline* const plain = deadline ? &*deadline : nullptr;
    const auto arm = [&](std::chrono::seconds timeout) {
      if (plain) {
        plain->Arm(timeout);
      } else {
        tcp_layer.expires_after(timeout);
      }
    };
    beast::flat_buffer buffer;
    bool first = true;
    for (;;) {
      // A request is under way once its first bytes are in (pipelined ones may be already).
      live->busy = buffer.size() > 0;
      if (stopped && !live->busy) break;  // draining: no new request on this connection.
      // Beast's parser reads the request; RequestParser keeps what it reads in a ServerRequest.
      ServerRequest request;
      RequestParser parser(request);
      parser.header_limit(static_cast<std::uint32_t>(options.max_header_bytes));
      // A Content-Length over the limit fails as soon as the header is parsed, before the body
      // is read; a chunked body fails when it grows past the limit.
      parser.body_limit(options.max_body_bytes);
      parser.eager(true);
      // Waiting for the next request on a kept-alive connection is idle time; once its first
      // bytes are in, the whole request must arrive within the header timeout.
      arm(first ? options.header_timeout : options.idle_timeout);
      bool timing_request = first;  // a new connection's header timeout runs already.
      first = false;
      // The request is read here, socket reads fed to Beast's parser, rather than through
      // http::async_read: no composed operations, no post when the body is already buffered.
      beast::error_code ec_h = ReadRequest(parser, buffer);
      while (ec_h == http::error::need_more) {
        if (parser.expects_continue() && parser.is_header_done()) [[unlikely]] {
          // The client waits for this before it sends the body (curl: 1 s, for a body over
          // 1 MB). A body over the limit was refused already (413), without it.
          parser.ContinueSent();
          auto [ec_w, n_w] =
              co_await asio::async_write(Io(stream), asio::buffer(kContinue), kUseTuple);
          if (ec_w) {
            ec_h = ec_w;
            break;
          }
        }
        beast::error_code ec_r;
        std::size_t n = 0;
        if constexpr (kIsTls<Stream>) {
          std::tie(ec_r, n) = co_await stream.async_read_some(
              buffer.prepare(beast::read_size(buffer, kReadBytes)), kUseTuple);
        } else {  // after a short read, wait for epoll (read_drained.h; the deadline is armed).
          const DrainingBuffer into(tcp_layer.socket(),
                                    buffer.prepare(beast::read_size(buffer, kReadBytes)));
          std::tie(ec_r, n) = co_await tcp_layer.socket().async_read_some(into, kUseTuple);
        }
        if (ec_r == asio::error::eof || ec_r == asio::ssl::error::stream_truncated) {
          // A clean end between requests, or a request cut short (Beast says the same).
          ec_h = parser.got_some() ? http::error::partial_message : http::error::end_of_stream;
          break;
        }
        if (ec_r) {
          ec_h = ec_r;
          break;
        }
        buffer.commit(n);
        live->busy = true;
        if (!timing_request) {
          arm(options.header_timeout);  // the first bytes of a request on a kept-alive connection.
          timing_request = true;
        }
        ec_h = ReadRequest(parser, buffer);
      }
      if (ec_h) {
        // A request refused before its handler is answered with an OpenAI error and the
        // connection closed the lingering way (the client may still be sending its body); the
        // connection's end or failure is not answered.
        std::optional<Response> refusal;
        if (ec_h == http::error::body_limit || ec_h == http::error::header_limit) {
          const bool body = ec_h == http::error::body_limit;
          refusal = ErrorResponse(body ? http::status::payload_too_large
                                       : http::status::request_header_fields_too_large,
                                  body ? "request body too large" : "request header too large",
                                  "invalid_request_error",
                                  body ? "request_too_large" : "header_too_large");
        } else if (parser.coded_body()) {
          refusal = ErrorResponse(http::status::unsupported_media_type,
                                  "request bodies are taken without a content coding "
                                  "(Content-Encoding: identity)",
                                  "invalid_request_error", "unsupported_content_encoding");
        } else if (parser.several_credentials()) {
          refusal = ErrorResponse(http::status::bad_request,
                                  "a request may carry one Authorization field",
                                  "invalid_request_error", "several_authorization_fields");
        } else if (parser.expectation_failed()) {
          refusal = ErrorResponse(http::status::expectation_failed,
                                  "the Expect field holds an expectation other than "
                                  "100-continue",
                                  "invalid_request_error", "expectation_failed");
        } else if (IsMalformed(ec_h)) {
          refusal =
              ErrorResponse(http::status::bad_request, "malformed HTTP request: " + ec_h.message(),
                            "invalid_request_error", "bad_request");
        }
        if (!refusal) break;
        refusal->keep_alive(false);
        StreamResponder<Stream> r(stream, plain, options.write_timeout, false, 11);
        co_await r.Send(std::move(*refusal));
        co_await LingeringClose(stream);
        co_return;
      }
      if (request.version() >= 11 && !request.has(http::field::host)) {
        // RFC 9112 3.2: a server must answer 400 to an HTTP/1.1 request without Host.
        auto refusal = ErrorResponse(http::status::bad_request,
                                     "an HTTP/1.1 request must carry a Host field",
                                     "invalid_request_error", "bad_request");
        refusal.keep_alive(false);
        StreamResponder<Stream> r(stream, plain, options.write_timeout, false, 11);
        co_await r.Send(std::move(refusal));
        co_await LingeringClose(stream);
        co_return;
      }
      request.set_keep_alive(parser.keep_alive());
      // While draining, the answer says "Connection: close" (the loop ends after it).
      StreamResponder<Stream> responder(stream, plain, options.write_timeout,
                                        request.keep_alive(), request.version(), &stopped,
                                        request.method() == http::verb::head);
      if (plain) {
        plain->Disarm();
      } else {
        tcp_layer.expires_never();
      }
      std::exception_ptr failure;
      try {
        co_await handler(request, responder);
      } catch (...) {
        failure = std::current_exception();
      }
      if (failure) {
        try {
          std::rethrow_exception(failure);
        } catch (const std::exception& e) {
          spdlog::error("handler threw on {} {}: {}", std::string(request.method_string()),
                        std::string(request.target()), e.what());
        } catch (...) {
          spdlog::error("handler threw a non-exception");
        }
        if (!responder.sent()) {
          co_await responder.Send(ErrorResponse(http::status::internal_server_error,
                                                "internal error", "server_error"));
        }
        break;
      }
      // A handler that answered nothing because its client left (Responder::ClientLeft: a
      // client that shut down its side is taken as gone, as nginx takes it) gets no 500 either.
      if (!responder.sent() && !responder.ClientGone()) {
        co_await responder.Send(ErrorResponse(http::status::internal_server_error,
                                              "no response", "server_error"));
      }
      if (!responder.keep_alive() || stopped) break;
    }
    if constexpr (kIsTls<Stream>) {
      co_await TlsShutdown(stream);
    } else {
      beast::error_code ignored;
      tcp_layer.socket().shutdown(tcp::socket::shutdown_send, ignored);  // the peer sees the end.
    }
  }

  // Feeds what `buffer` holds to `parser`: success when the request is complete, need_more
  // when more bytes must be read, else the parser's error (limits included).
  static beast::error_code ReadRequest(RequestParser& parser, beast::flat_buffer& buffer) {
    beast::error_code ec;
    while (buffer.size() > 0 && !parser.is_done()) {
      const std::size_t used = parser.put(buffer.data(), ec);
      buffer.consume(used);
      if (ec || used == 0) break;
    }
    if (!ec && !parser.is_done()) ec = http::error::need_more;
    return ec;
  }

  // Live connections, so Drain can close the idle ones and Stop all of them.
  std::uint64_t Register(const std::shared_ptr<Live>& live) {
    std::lock_guard lock(sessions_mu);
    sessions[++next_session] = live;
    return next_session;
  }
  void Forget(std::uint64_t id) {
    std::lock_guard lock(sessions_mu);
    sessions.erase(id);
  }
  // Closes each connection (only those with no request under way when `idle_only`), on its own
  // thread, where `busy` is kept.
  void Close(bool idle_only) {
    std::lock_guard lock(sessions_mu);
    for (auto& [id, live] : sessions) {
      auto stream = live->stream.lock();
      if (!stream) continue;
      asio::post(stream->get_executor(), [stream, live, idle_only] {
        if (idle_only && live->busy) return;
        beast::error_code ignored;
        stream->socket().shutdown(tcp::socket::shutdown_both, ignored);
        stream->socket().close(ignored);
      });
    }
  }

  std::vector<asio::any_io_executor> executors;
  std::size_t next_executor = 0;
  std::mutex sessions_mu;
  std::map<std::uint64_t, std::shared_ptr<Live>> sessions;
  std::uint64_t next_session = 0;
  tcp::acceptor acceptor;
  Handler handler;
  ServerOptions options;
  std::optional<asio::ssl::context> tls_context;  // set = HTTPS.
  unsigned short port = 0;  // the bound port (the acceptor closes on Drain).
  std::atomic<bool> stopped{false};
  std::atomic<std::size_t> connections{0};
  static constexpr std::size_t kMaxRefusing = 256;
  std::atomic<std::size_t> refusing{0};  // refused connections still lingering.
};

HttpServer::HttpServer(std::vector<asio::any_io_executor> executors, tcp::endpoint endpoint,
                       Handler handler, ServerOptions options)
    : state_(std::make_shared<State>(std::move(executors), endpoint, std::move(handler), options)) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Start() {
  asio::co_spawn(state_->acceptor.get_executor(), state_->Accept(), asio::detached);
}

void HttpServer::Drain() {
  if (state_->stopped.exchange(true)) return;
  asio::post(state_->acceptor.get_executor(), [s = state_] {
    beast::error_code ignored;
    s->acceptor.close(ignored);
  });
  // A connection registered after this sees `stopped` before it waits for a request.
  state_->Close(/*idle_only=*/true);
}

void HttpServer::Stop() {
  Drain();
  state_->Close(/*idle_only=*/false);
}

unsigned short HttpServer::port() const { return state_->port; }
std::size_t HttpServer::open_connections() const { return state_->connections.load(); }
bool HttpServer::tls() const { return state_->tls_context.has_value(); }

}  // namespace powerplane::net
