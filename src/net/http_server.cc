#include "net/http_server.h"
#include "net/read_drained.h"
#include "net/request_parser.h"
#include "net/stream_responder.h"
#include "net/server_request.h"
#include "net/write_now.h"

#include "net/http_client.h"

#include <boost/asio/steady_timer.hpp>

#include <spdlog/spdlog.h>

#include <openssl/ssl.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <tuple>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/core/tcp_stream.hpp>

namespace powerplane::net {
namespace beast = boost::beast;
namespace {
using server_internal::Io;
using server_internal::IsMalformed;
using server_internal::kContinue;
using server_internal::kIsTls;
using server_internal::kUseTuple;
using server_internal::RequestParser;
using server_internal::StreamResponder;
using server_internal::TlsStream;

// The most one read of a request takes (Beast's own reads use the same).
constexpr std::size_t kReadBytes = 64 * 1024;
// The most connections taken from the listener's backlog at one wake (State::Accept).
constexpr int kAcceptBatch = 128;
// How long a TLS connection waits for the client's close_notify when it ends.
constexpr std::chrono::seconds kTlsShutdownTimeout{1};

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
