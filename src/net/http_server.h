#pragma once
// An HTTP/1.1 server on Boost.Beast with C++20 coroutines: keep-alive, limits on header and body
// size (answered 413/431), "Expect: 100-continue" answered before the body is read (another
// expectation: 417), malformed requests and ambiguous body framing answered 400, a header-read
// timeout and an idle timeout, a bound on concurrent connections, and responses written whole or
// streamed as chunks (server-sent events; to an HTTP/1.0 client unframed, ended by the close).
// Optionally HTTPS (TLS 1.2 and 1.3) with a certificate and key read from PEM files at
// construction.

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "net/http.h"
#include "net/server_request.h"

namespace powerplane::net {

struct ServerOptions {
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_body_bytes = 4 * 1024 * 1024;
  std::chrono::seconds header_timeout{30};  // to read one request's header and body.
  std::chrono::seconds idle_timeout{120};   // a kept-alive connection with no request.
  std::chrono::seconds write_timeout{60};   // one write to a client.
  std::size_t max_connections = 20000;
  // SO_REUSEPORT: other processes of the same user (each with this set) may listen on the same
  // address, and the kernel spreads new connections over them (several gateways on one host; a
  // new process listening before an old one stops).
  bool reuse_port = false;
  // HTTPS: both empty = plain HTTP. Otherwise both are PEM files, read once at construction: the
  // certificate (chain, leaf first) and its private key (unencrypted). Each connection then does
  // a TLS handshake within header_timeout before its first request.
  std::string tls_cert_file;
  std::string tls_key_file;
};

// The response side of one request. A handler either calls Send once, or StartStream (or
// BeginStream), then WriteChunk any number of times, then EndStream. Not thread-safe: use it
// from the handler's coroutine only.
//
// The relay's hot path writes without a coroutine call per chunk: WriteChunkNow and
// EndStreamNow send what the socket takes at once and return true when that was all of it (or
// the client is gone: ClientGone()). When they return false the rest is kept, and the caller
// co_awaits FinishWrite() before it changes or frees the data it passed.
class Responder {
 public:
  virtual ~Responder() = default;
  // Sends a complete response. Returns false when the client is gone.
  virtual asio::awaitable<bool> Send(Response response) = 0;
  // Sends the status and headers of a chunked response (no body yet). To an HTTP/1.0 client
  // the response is not chunked: "Connection: close", the data raw, the close ends it.
  virtual asio::awaitable<bool> StartStream(http::response<http::empty_body> header) = 0;
  // The same for a 200 whose header fields are given as text, each "Name: value\r\n" (the
  // relay's hot path: no field objects, no coroutine). Transfer-Encoding (HTTP/1.1 only) and
  // Connection are added here. Returns false when the client is gone.
  virtual bool BeginStream(std::string fields) = 0;
  // The header of a stream goes out with its first chunk (one write, not two).
  virtual asio::awaitable<bool> WriteChunk(std::string_view data) = 0;
  // Sends a stream's header now, before its first chunk: for a stream whose first chunk may be
  // long in coming (an engine's queue and prefill), so the client knows it was taken, as vLLM
  // answers (its header goes out before the first token). Returns false when the client is gone.
  virtual asio::awaitable<bool> SendHead() = 0;
  // Ends the stream; `last_data`, when given, goes out in the same write as the end.
  virtual asio::awaitable<bool> EndStream(std::string_view last_data = {}) = 0;
  // WriteChunk and EndStream without a coroutine (above).
  virtual bool WriteChunkNow(std::string_view data) = 0;
  virtual bool EndStreamNow(std::string_view last_data = {}) = 0;
  // Sends what WriteChunkNow or EndStreamNow kept. Returns false when the client is gone.
  virtual asio::awaitable<bool> FinishWrite() = 0;
  // True once a write has failed (the client disconnected or timed out).
  virtual bool ClientGone() const = 0;
  // True when the client has closed its side or the connection broke, seen without reading or
  // writing (poll with POLLRDHUP): for a handler that has nothing to write for a long time (a
  // non-streaming answer being generated). Bytes the client sent meanwhile (a pipelined
  // request) do not count as leaving.
  virtual bool ClientLeft() = 0;
  // The peer's address, for logs.
  virtual std::string Peer() const = 0;
};

// Called for each request. It must answer through the Responder and must not throw (an escaped
// exception is logged and answered with a 500 when nothing was sent yet).
using Handler = std::function<asio::awaitable<void>(ServerRequest&, Responder&)>;

class HttpServer {
 public:
  // Listens on `endpoint` (port 0 = OS-chosen). Accepted connections are spread round-robin
  // over `executors`, each expected to be a single-threaded io_context (one per core), so a
  // connection and everything it does (upstream sockets included) stays on one thread.
  // Throws std::runtime_error when the endpoint cannot be bound, or when TLS is asked for and
  // the certificate or key is missing, unreadable or invalid (the message names the file).
  HttpServer(std::vector<asio::any_io_executor> executors, tcp::endpoint endpoint,
             Handler handler, ServerOptions options = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Starts accepting. Thread-safe to call once.
  void Start();
  // Stops accepting new connections and closes the idle ones; a connection with a request under
  // way finishes it (answered "Connection: close" when its answer had not begun) and is then
  // closed. open_connections() falls to 0 as they finish. Thread-safe.
  void Drain();
  // Drain, and closes every connection now, a request under way or not. Thread-safe.
  void Stop();
  unsigned short port() const;
  std::size_t open_connections() const;
  // True when connections are served over TLS.
  bool tls() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace powerplane::net
