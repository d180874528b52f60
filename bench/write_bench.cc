// What one write of a relayed chunk costs the writer: the chunk's three pieces (size line, data,
// CRLF) sent by net::SendNow (joined into one buffer, one send(2)) against the same pieces in one
// gathered sendmsg(2), to a reader on a loopback TCP connection that drains as fast as it can
// (on another core where there is one). The CPU column is the writing thread's.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <string>
#include <thread>

#include <benchmark/benchmark.h>

#include "net/write_now.h"

namespace {

struct Fd {
  int fd;
  int native_handle() const { return fd; }
};

// A loopback TCP connection whose far end a thread reads and discards.
class DrainedConnection {
 public:
  DrainedConnection() {
    const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    ::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address);
    ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length);
    ::listen(listener, 1);
    writer_ = ::socket(AF_INET, SOCK_STREAM, 0);
    ::connect(writer_, reinterpret_cast<sockaddr*>(&address), sizeof address);
    const int one = 1;
    ::setsockopt(writer_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    reader_ = ::accept(listener, nullptr, nullptr);
    ::close(listener);
    drain_ = std::thread([this] {
      if (std::thread::hardware_concurrency() > 1) {  // off the writer's core (it runs on 1).
        cpu_set_t cores;
        CPU_ZERO(&cores);
        CPU_SET(0, &cores);
        pthread_setaffinity_np(pthread_self(), sizeof cores, &cores);
      }
      std::array<char, 65536> sink;
      while (::read(reader_, sink.data(), sink.size()) > 0) {
      }
    });
  }
  ~DrainedConnection() {
    ::shutdown(writer_, SHUT_RDWR);
    drain_.join();
    ::close(writer_);
    ::close(reader_);
  }
  int writer() const { return writer_; }

 private:
  int writer_ = -1, reader_ = -1;
  std::thread drain_;
};

void PinToCore1() {
  if (std::thread::hardware_concurrency() < 2) return;
  cpu_set_t cores;
  CPU_ZERO(&cores);
  CPU_SET(1, &cores);
  pthread_setaffinity_np(pthread_self(), sizeof cores, &cores);
}

// Three pieces as the relay frames a chunk of `state.range(0)` data bytes.
template <bool kJoined>
void BM_WriteChunk(benchmark::State& state) {
  PinToCore1();
  DrainedConnection connection;
  const std::string data(static_cast<std::size_t>(state.range(0)), 'x');
  const std::string size_line = "dc\r\n", crlf = "\r\n";
  const std::array<boost::asio::const_buffer, 3> chunk{boost::asio::buffer(size_line),
                                                       boost::asio::buffer(data),
                                                       boost::asio::buffer(crlf)};
  Fd fd{connection.writer()};
  boost::beast::error_code ec;
  for (auto _ : state) {
    std::size_t sent = 0;
    if constexpr (kJoined) {
      sent = powerplane::net::SendNow(fd, chunk, ec);
    } else {
      std::array<iovec, 3> pieces;
      for (std::size_t i = 0; i < 3; ++i) {
        pieces[i] = {const_cast<void*>(chunk[i].data()), chunk[i].size()};
      }
      sent = powerplane::net::detail::SendPieces(fd.fd, pieces.data(), 3, ec);
    }
    benchmark::DoNotOptimize(sent);
  }
  if (ec) state.SkipWithError(ec.message().c_str());
}

BENCHMARK_TEMPLATE(BM_WriteChunk, true)->Name("WriteChunk/joined_send")->Arg(220)->Arg(700)->Arg(1500)->Arg(3000);
BENCHMARK_TEMPLATE(BM_WriteChunk, false)->Name("WriteChunk/gathered_sendmsg")->Arg(220)->Arg(700)->Arg(1500)->Arg(3000);

}  // namespace

BENCHMARK_MAIN();
