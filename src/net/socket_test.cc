// The socket-level pieces under the HTTP server and client: SocketDeadline (one timer per
// exchange), reads that wait for epoll (read_drained.h), and the upstream pool's deadlines. On
// loopback sockets, with no server.
#include <gtest/gtest.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>

#include <poll.h>

#include <array>
#include <atomic>
#include <functional>
#include <thread>

#include "net/http_client.h"
#include "net/io_pool.h"
#include "net/read_drained.h"

namespace powerplane::net {
namespace {

// The two ends of one loopback TCP connection on `io`.
struct Loopback {
  explicit Loopback(asio::io_context& io) : client(io), server(io) {
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    client.connect(acceptor.local_endpoint());
    acceptor.accept(server);
  }
  tcp::socket client, server;
};

// A disarmed deadline lets a read wait past it; an armed one closes the socket and ends the read.
TEST(SocketDeadline, CutsAnArmedReadAndSparesADisarmedOne) {
  using std::chrono::milliseconds;
  asio::io_context io;
  Loopback link(io);
  tcp::socket &client = link.client, &server = link.server;
  bool spared = false, cut = false;
  double cut_after_s = 0;
  auto run = [&]() -> asio::awaitable<void> {
    char byte = 0;
    SocketDeadline deadline(client, milliseconds(20));
    deadline.Arm(milliseconds(50));
    deadline.Disarm();
    asio::steady_timer later(io);
    later.expires_after(milliseconds(200));
    later.async_wait([&](const boost::system::error_code&) {
      server.write_some(asio::buffer("x", 1));
    });
    auto [ec1, n1] = co_await client.async_read_some(asio::buffer(&byte, 1),
                                                     asio::as_tuple(asio::use_awaitable));
    spared = !ec1 && n1 == 1 && !deadline.expired();
    const auto start = std::chrono::steady_clock::now();
    deadline.Arm(milliseconds(50));
    auto [ec2, n2] = co_await client.async_read_some(asio::buffer(&byte, 1),
                                                     asio::as_tuple(asio::use_awaitable));
    cut = ec2 && deadline.expired() && !client.is_open();
    cut_after_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  asio::co_spawn(io, run(), asio::detached);
  io.run_for(std::chrono::seconds(5));
  EXPECT_TRUE(spared);
  EXPECT_TRUE(cut);
  EXPECT_LT(cut_after_s, 1.0);
}

// A watched stop flag ends an armed read at the next wake after it turns true, long before the
// deadline; before it turns true the read waits on.
TEST(SocketDeadline, AStopEndsAnArmedReadAtTheNextWake) {
  using std::chrono::milliseconds;
  asio::io_context io;
  Loopback link(io);
  tcp::socket& client = link.client;
  std::atomic<bool> stop{false};
  bool cut = false, read_before_stop = false;
  double cut_after_s = 0;
  auto run = [&]() -> asio::awaitable<void> {
    char byte = 0;
    SocketDeadline deadline(client, milliseconds(20));
    deadline.WatchStop(&stop);
    deadline.Arm(std::chrono::seconds(30));
    deadline.Disarm();  // the watch outlives a disarm.
    deadline.Arm(std::chrono::seconds(30));
    const auto start = std::chrono::steady_clock::now();
    asio::steady_timer later(io);
    later.expires_after(milliseconds(200));
    later.async_wait([&](const boost::system::error_code&) {
      read_before_stop = client.is_open();
      stop = true;
    });
    auto [ec, n] = co_await client.async_read_some(asio::buffer(&byte, 1),
                                                   asio::as_tuple(asio::use_awaitable));
    cut = ec && deadline.stopped() && !deadline.expired() && !client.is_open();
    cut_after_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  asio::co_spawn(io, run(), asio::detached);
  io.run_for(std::chrono::seconds(5));
  EXPECT_TRUE(read_before_stop);
  EXPECT_TRUE(cut);
  EXPECT_GT(cut_after_s, 0.15);
  EXPECT_LT(cut_after_s, 1.0);
}

// A short read into a DrainingBuffer leaves the socket waiting for epoll (no read that finds
// nothing); a full one does not; bytes that come later are still read. The same with the end's
// report asked for (the socket's own DrainingBuffer) and without.
class ReadDrained : public ::testing::TestWithParam<bool> {};

TEST_P(ReadDrained, AShortReadWaitsForEpollAndMissesNothing) {
  const bool with_socket = GetParam();
  asio::io_context io;
  Loopback link(io);
  tcp::socket &client = link.client, &server = link.server;
  std::string got;
  bool first_after_full = false, first_after_short = true, first_after_event = false;
  auto run = [&]() -> asio::awaitable<void> {
    std::array<char, 16> buffer;
    // The socket's registration asks for the end's report while nothing is there to report
    // (a re-registration reports what is ready, and so would have the reactor try first once).
    if (with_socket) (void)DrainingBuffer(client, asio::buffer(buffer));
    server.write_some(asio::buffer("0123456789abcdefXYZ", 19));
    // The reactor sees the socket's edge while nothing reads it (else that edge, seen after
    // the reads below took the bytes, would rightly have the reactor try again).
    asio::steady_timer pause(io);
    pause.expires_after(std::chrono::milliseconds(50));
    co_await pause.async_wait(asio::use_awaitable);
    auto read = [&]() {
      const DrainingBuffer into = with_socket ? DrainingBuffer(client, asio::buffer(buffer))
                                              : DrainingBuffer(asio::buffer(buffer));
      return client.async_read_some(into, asio::as_tuple(asio::use_awaitable));
    };
    auto [ec1, n1] = co_await read();  // 16 of 19: the buffer was filled.
    if (ec1) co_return;
    first_after_full = TriesReadFirst(client);
    got.append(buffer.data(), n1);
    auto [ec2, n2] = co_await read();  // 3: the socket is empty.
    if (ec2) co_return;
    first_after_short = TriesReadFirst(client);
    got.append(buffer.data(), n2);
    asio::steady_timer later(io);
    later.expires_after(std::chrono::milliseconds(20));
    later.async_wait([&](const boost::system::error_code&) {
      server.write_some(asio::buffer("late", 4));
    });
    auto [ec3, n3] = co_await read();
    if (ec3) co_return;
    first_after_event = TriesReadFirst(client);
    got.append(buffer.data(), n3);
  };
  asio::co_spawn(io, run(), asio::detached);
  io.run_for(std::chrono::seconds(5));
  EXPECT_EQ(got, "0123456789abcdefXYZlate");
  EXPECT_TRUE(first_after_full);
  EXPECT_FALSE(first_after_short);
  EXPECT_FALSE(first_after_event);  // "late" was a short read too.
}
INSTANTIATE_TEST_SUITE_P(EndReport, ReadDrained, ::testing::Bool());

// A FIN that came with the last bytes, read into the socket's own DrainingBuffer: epoll reported
// the end with the bytes (EPOLLRDHUP), so the short read leaves the next read trying the socket
// first, and the end is seen at once, with no deadline to wake it.
TEST(ReadDrainedEnd, AnEndThatCameWithTheLastBytesIsSeenAtOnce) {
  asio::io_context io;
  Loopback link(io);
  tcp::socket &client = link.client, &server = link.server;
  std::string got;
  bool tries_first = false, ended = false;
  double ended_after_s = -1;
  auto run = [&]() -> asio::awaitable<void> {
    std::array<char, 16> buffer;
    // The first read waits for epoll: the registration asks for the end's report before any
    // edge is seen.
    auto [ec0, n0] = co_await client.async_read_some(DrainingBuffer(client, asio::buffer(buffer)),
                                                     asio::as_tuple(asio::use_awaitable));
    if (ec0) co_return;
    got.append(buffer.data(), n0);
    server.write_some(asio::buffer("abc", 3));
    server.shutdown(tcp::socket::shutdown_send);
    // The reactor sees the socket's one edge (bytes and end) while nothing reads it.
    asio::steady_timer pause(io);
    pause.expires_after(std::chrono::milliseconds(50));
    co_await pause.async_wait(asio::use_awaitable);
    auto [ec1, n1] = co_await client.async_read_some(DrainingBuffer(client, asio::buffer(buffer)),
                                                     asio::as_tuple(asio::use_awaitable));
    if (ec1) co_return;
    got.append(buffer.data(), n1);
    tries_first = TriesReadFirst(client);
    const auto start = std::chrono::steady_clock::now();
    auto [ec2, n2] = co_await client.async_read_some(DrainingBuffer(client, asio::buffer(buffer)),
                                                     asio::as_tuple(asio::use_awaitable));
    ended = ec2 == asio::error::eof;
    ended_after_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  asio::co_spawn(io, run(), asio::detached);
  asio::post(io, [&] { server.write_some(asio::buffer("x", 1)); });
  io.run_for(std::chrono::seconds(3));
  EXPECT_EQ(got, "xabc");
  EXPECT_TRUE(tries_first);
  EXPECT_TRUE(ended);
  EXPECT_GE(ended_after_s, 0.0);
  EXPECT_LT(ended_after_s, 0.5);
}

// A FIN that came with the last bytes is not reported by epoll again once a DrainingBuffer read
// took the bytes; an armed SocketDeadline has it seen at its next wake, long before it expires.
TEST(ReadDrainedEnd, WithoutTheEndsReportAnEndThatCameWithTheLastBytesIsSeenAtTheDeadlinesWake) {
  using std::chrono::milliseconds;
  asio::io_context io;
  Loopback link(io);
  tcp::socket &client = link.client, &server = link.server;
  std::string got;
  bool drained = false, ended = false, expired = true;
  double ended_after_s = -1;
  auto run = [&]() -> asio::awaitable<void> {
    std::array<char, 16> buffer;
    server.write_some(asio::buffer("abc", 3));
    server.shutdown(tcp::socket::shutdown_send);
    // The reactor sees the socket's one edge while nothing reads it.
    asio::steady_timer pause(io);
    pause.expires_after(milliseconds(50));
    co_await pause.async_wait(asio::use_awaitable);
    auto [ec1, n1] = co_await client.async_read_some(DrainingBuffer(asio::buffer(buffer)),
                                                     asio::as_tuple(asio::use_awaitable));
    if (ec1) co_return;
    got.append(buffer.data(), n1);
    drained = !TriesReadFirst(client);
    SocketDeadline deadline(client, milliseconds(50));
    deadline.Arm(std::chrono::seconds(5));
    const auto start = std::chrono::steady_clock::now();
    auto [ec2, n2] = co_await client.async_read_some(DrainingBuffer(asio::buffer(buffer)),
                                                     asio::as_tuple(asio::use_awaitable));
    ended = ec2 == asio::error::eof;
    expired = deadline.expired();
    ended_after_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  asio::co_spawn(io, run(), asio::detached);
  io.run_for(std::chrono::seconds(10));
  EXPECT_EQ(got, "abc");
  EXPECT_TRUE(drained);
  EXPECT_TRUE(ended);
  EXPECT_FALSE(expired);
  EXPECT_GE(ended_after_s, 0.0);
  EXPECT_LT(ended_after_s, 1.0);
}

// A connection keeps its deadline while pooled; Release lifts it, so an idle pooled connection
// is not closed when the last request's deadline passes.
TEST(UpstreamPoolTest, APooledConnectionsDeadlineIsLiftedWhileItWaits) {
  using std::chrono::milliseconds;
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const unsigned short port = acceptor.local_endpoint().port();
  tcp::socket server(io);
  bool first = false, reused_open = false;
  auto run = [&]() -> asio::awaitable<void> {
    auto c = co_await Connect("127.0.0.1", port, milliseconds(1000));
    if (!c) co_return;
    acceptor.accept(server);
    first = !(*c)->reused;
    (*c)->Deadline(milliseconds(20)).Arm(milliseconds(50));
    Release(std::move(*c));
    asio::steady_timer idle(io);
    idle.expires_after(milliseconds(200));  // well past the 50 ms deadline.
    co_await idle.async_wait(asio::use_awaitable);
    auto again = co_await Connect("127.0.0.1", port, milliseconds(1000));
    reused_open = again && (*again)->reused && (*again)->stream.socket().is_open() &&
                  !(*again)->Deadline(milliseconds(20)).expired();
    DropPooled("127.0.0.1", port);
  };
  asio::co_spawn(io, run(), asio::detached);
  io.run_for(std::chrono::seconds(2));
  EXPECT_TRUE(first);
  EXPECT_TRUE(reused_open);
}

}  // namespace
}  // namespace powerplane::net
