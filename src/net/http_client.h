#pragma once
// HTTP client side: pooled keep-alive connections to upstream servers and one-shot fetches.
// Pools are per thread: each worker thread runs one io_context, and a connection never leaves
// the thread that opened it.

#include <atomic>
#include <chrono>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include "net/http.h"

namespace powerplane::net {

// A timeout for operations on a plain socket: one timer for a whole exchange, instead of
// beast::tcp_stream's timer armed and cancelled around every read and write (which costs more
// than a small read). Arm(timeout) sets the deadline `timeout` from now and is cheap (no timer
// operation) while the timer is already waiting; Disarm() lifts it. When an armed deadline
// passes, the socket is closed: its pending operations end with operation_aborted, and
// expired() turns true. The timer sleeps at most `granularity` at a time, so a deadline is
// enforced within `granularity` of it (at most one wake-up per granularity while armed). At each
// wake while armed it also has the reactor see an end of stream that epoll will not report again
// (read_drained.h: DrainingBuffer reads rely on it). WatchPeer(left) also asks `left` at each
// such wake, and closes the socket as an expiry does when it answers true (peer_left() turns
// true): a request's upstream exchange ends within `granularity` of its client leaving. Disarm()
// drops the watch. WatchStop(flag) (kept across Disarm, for the connection's life) closes the
// socket the same way at the first wake while armed after `flag` turns true (stopped() turns
// true): a process that is stopping ends its upstream exchanges within `granularity`, at no cost
// per request. Not thread-safe: use it on the socket's executor. The socket must outlive it.
class SocketDeadline {
 public:
  SocketDeadline(tcp::socket& socket, std::chrono::steady_clock::duration granularity);
  ~SocketDeadline();
  SocketDeadline(const SocketDeadline&) = delete;
  SocketDeadline& operator=(const SocketDeadline&) = delete;

  void Arm(std::chrono::steady_clock::duration timeout);
  void Disarm();
  bool expired() const;
  void WatchPeer(std::function<bool()> left);
  bool peer_left() const;
  void WatchStop(const std::atomic<bool>* stop);
  bool stopped() const;

 private:
  struct State;
  static void Wait(const std::shared_ptr<State>& state, std::chrono::steady_clock::time_point now);
  std::shared_ptr<State> state_;
};

// True when the socket's peer has closed its side or the connection broke, seen without reading
// (poll with POLLRDHUP; bytes waiting to be read do not count).
bool PeerClosed(tcp::socket& socket);

// One connection to host:port, taken from this thread's pool or newly opened.
struct UpstreamConnection {
  UpstreamConnection(asio::any_io_executor ex, std::string to_host, unsigned short to_port)
      : stream(ex), host(std::move(to_host)), port(to_port) {}
  // The deadline of this connection's exchanges, made at its first and kept (disarmed) while it
  // is pooled, so that a request on a kept-alive connection makes no timer of its own.
  SocketDeadline& Deadline(std::chrono::steady_clock::duration granularity) {
    if (!deadline) deadline.emplace(stream.socket(), granularity);
    return *deadline;
  }
  boost::beast::tcp_stream stream;
  boost::beast::flat_buffer buffer;
  std::string host;
  unsigned short port;
  bool reused = false;  // it came from the pool (it may have been closed by the server since).
  std::optional<SocketDeadline> deadline;  // after `stream`: goes first.
};

// Takes an idle pooled connection to host:port from this thread's pool: null when there is none.
std::unique_ptr<UpstreamConnection> TakePooled(const std::string& host, unsigned short port);

// Takes an idle pooled connection to host:port, or connects (within `timeout`).
asio::awaitable<std::expected<std::unique_ptr<UpstreamConnection>, std::string>> Connect(
    std::string host, unsigned short port, std::chrono::milliseconds timeout, bool allow_reuse = true);

// Puts a connection whose last response was read completely and allowed keep-alive back into
// this thread's pool.
void Release(std::unique_ptr<UpstreamConnection> connection);

// Drops this thread's idle connections to host:port (after a failure there).
void DropPooled(const std::string& host, unsigned short port);

// Sends `request` and reads the whole response, within `timeout`. Pooled; retries once on a
// fresh connection when a reused one turns out to be closed.
asio::awaitable<std::expected<Response, std::string>> Fetch(std::string host, unsigned short port,
                                                            Request request,
                                                            std::chrono::milliseconds timeout);

}  // namespace powerplane::net
