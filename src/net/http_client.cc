#include "net/http_client.h"
#include "net/read_drained.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <map>
#include <poll.h>
#include <vector>

namespace powerplane::net {
namespace beast = boost::beast;
namespace {

constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kMaxIdlePerHost = 256;

using Key = std::pair<std::string, unsigned short>;
thread_local std::map<Key, std::vector<std::unique_ptr<UpstreamConnection>>> tls_pool;

}  // namespace

struct SocketDeadline::State {
  State(tcp::socket& s, std::chrono::steady_clock::duration g)
      : socket(s), timer(s.get_executor()), granularity(g) {}
  using TimePoint = std::chrono::steady_clock::time_point;
  tcp::socket& socket;
  asio::steady_timer timer;
  std::chrono::steady_clock::duration granularity;
  TimePoint deadline = TimePoint::max();  // max: disarmed.
  TimePoint wake = TimePoint::max();      // when the pending wait ends; max: none pending.
  bool expired = false;
  std::function<bool()> peer_left;  // asked at each wake while armed (WatchPeer).
  bool left = false;
  const std::atomic<bool>* stop = nullptr;  // looked at each wake while armed (WatchStop).
  bool stopped = false;
};

SocketDeadline::SocketDeadline(tcp::socket& socket, std::chrono::steady_clock::duration granularity)
    : state_(std::make_shared<State>(socket, granularity)) {}

// Destroying the state destroys the timer, which ends its pending wait; the handler holds only a
// weak reference, so a wait that completed before can find nothing to touch.
SocketDeadline::~SocketDeadline() = default;

void SocketDeadline::Wait(const std::shared_ptr<State>& state,
                          std::chrono::steady_clock::time_point now) {
  state->wake = std::min(state->deadline, now + state->granularity);
  state->timer.expires_at(state->wake);  // ends any earlier wait (operation_aborted).
  state->timer.async_wait([weak = std::weak_ptr<State>(state)](const beast::error_code& ec) {
    auto s = weak.lock();
    if (ec || !s) return;  // replaced by a later wait, or the owner is gone.
    s->wake = State::TimePoint::max();
    if (s->deadline == State::TimePoint::max()) return;  // disarmed: the next Arm waits again.
    const auto t = std::chrono::steady_clock::now();
    if (s->peer_left && s->peer_left()) {
      s->left = true;
      beast::error_code ignored;
      s->socket.close(ignored);
      return;
    }
    if (s->stop && s->stop->load(std::memory_order_relaxed)) {
      s->stopped = true;
      beast::error_code ignored;
      s->socket.close(ignored);
      return;
    }
    if (t < s->deadline) {
      // A read that waits for epoll may wait for an end that epoll will not report again (one
      // that came with the bytes a DrainingBuffer read took): have it reported now.
      WakeIfUnseen(s->socket);
      Wait(s, t);
      return;
    }
    s->expired = true;
    beast::error_code ignored;
    s->socket.close(ignored);
  });
}

void SocketDeadline::Arm(std::chrono::steady_clock::duration timeout) {
  const auto now = std::chrono::steady_clock::now();
  state_->deadline = now + timeout;
  // No wait pending, or the pending one would wake after the deadline.
  if (state_->deadline < state_->wake) Wait(state_, now);
}

void SocketDeadline::Disarm() {
  state_->deadline = State::TimePoint::max();
  state_->peer_left = nullptr;
}

bool SocketDeadline::expired() const { return state_->expired; }

void SocketDeadline::WatchPeer(std::function<bool()> left) { state_->peer_left = std::move(left); }

bool SocketDeadline::peer_left() const { return state_->left; }

void SocketDeadline::WatchStop(const std::atomic<bool>* stop) { state_->stop = stop; }

bool SocketDeadline::stopped() const { return state_->stopped; }

bool PeerClosed(tcp::socket& socket) {
  pollfd p{.fd = socket.native_handle(), .events = POLLRDHUP, .revents = 0};
  if (::poll(&p, 1, 0) != 1) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

std::unique_ptr<UpstreamConnection> TakePooled(const std::string& host, unsigned short port) {
  auto it = tls_pool.find(Key{host, port});
  if (it == tls_pool.end() || it->second.empty()) return nullptr;
  auto c = std::move(it->second.back());
  it->second.pop_back();
  c->reused = true;
  return c;
}

asio::awaitable<std::expected<std::unique_ptr<UpstreamConnection>, std::string>> Connect(
    std::string host, unsigned short port, std::chrono::milliseconds timeout, bool allow_reuse) {
  if (allow_reuse) {
    if (auto c = TakePooled(host, port)) co_return c;
  }
  auto ex = co_await asio::this_coro::executor;
  auto c = std::make_unique<UpstreamConnection>(ex, host, port);
  beast::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) {
    tcp::resolver resolver(ex);
    auto [rec, results] = co_await resolver.async_resolve(host, std::to_string(port), kUseTuple);
    if (rec) co_return std::unexpected("resolve " + host + ": " + rec.message());
    c->stream.expires_after(timeout);
    auto [cec, ep] = co_await c->stream.async_connect(results, kUseTuple);
    if (cec) co_return std::unexpected("connect " + host + ":" + std::to_string(port) + ": " +
                                       cec.message());
  } else {
    c->stream.expires_after(timeout);
    auto [cec] = co_await c->stream.async_connect(tcp::endpoint(address, port), kUseTuple);
    if (cec) co_return std::unexpected("connect " + host + ":" + std::to_string(port) + ": " +
                                       cec.message());
  }
  c->stream.expires_never();
  c->stream.socket().set_option(tcp::no_delay(true), ec);
  // Requests are sent at once where the socket takes them (net/write_now.h).
  c->stream.socket().non_blocking(true, ec);
  co_return c;
}

void Release(std::unique_ptr<UpstreamConnection> connection) {
  if (!connection || !connection->stream.socket().is_open()) return;
  connection->stream.expires_never();
  if (connection->deadline) connection->deadline->Disarm();
  auto& idle = tls_pool[Key{connection->host, connection->port}];
  if (idle.size() < kMaxIdlePerHost) idle.push_back(std::move(connection));
}

void DropPooled(const std::string& host, unsigned short port) { tls_pool.erase(Key{host, port}); }

asio::awaitable<std::expected<Response, std::string>> Fetch(std::string host, unsigned short port,
                                                            Request request,
                                                            std::chrono::milliseconds timeout) {
  std::string error;
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto c = co_await Connect(host, port, timeout, /*allow_reuse=*/attempt == 0);
    if (!c) co_return std::unexpected(c.error());
    auto& conn = **c;
    if (request.find(http::field::host) == request.end()) request.set(http::field::host, host);
    request.prepare_payload();
    conn.stream.expires_after(timeout);
    auto [wec, wn] = co_await http::async_write(conn.stream, request, kUseTuple);
    Response response;
    beast::error_code rec;
    if (!wec) {
      http::response_parser<http::string_body> parser;
      parser.body_limit(64 * 1024 * 1024);
      auto [ec, rn] = co_await http::async_read(conn.stream, conn.buffer, parser, kUseTuple);
      rec = ec;
      if (!rec) response = parser.release();
    }
    const beast::error_code& ec = wec ? wec : rec;
    if (ec) {
      error = ec.message();
      // A pooled connection the server had closed: try once more on a fresh one.
      if (conn.reused && (ec == http::error::end_of_stream || ec == asio::error::connection_reset ||
                          ec == asio::error::broken_pipe || ec == asio::error::eof)) {
        continue;
      }
      co_return std::unexpected(host + ":" + std::to_string(port) + ": " + error);
    }
    if (response.keep_alive()) Release(std::move(*c));
    co_return response;
  }
  co_return std::unexpected(host + ":" + std::to_string(port) + ": " + error);
}

}  // namespace powerplane::net
