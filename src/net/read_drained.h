#pragma once
// Reading from a socket the way nginx does: a read that returned less than it asked for emptied
// the socket, so the next read waits for epoll to say that more has come, instead of trying the
// socket first and being told EAGAIN.
//
// Asio tries every read on a socket straight away (a "speculative" read) and waits for epoll only
// when that read finds nothing. For a token stream that is one wasted recv(2) per chunk: the
// engine sends a chunk, the gateway reads it, passes it on, asks for the next one, and the next
// one is not there yet (measured: 14.7 recv calls per 16-token stream against nginx's 6.9, half
// of them EAGAIN). Asio stops trying first only after end of file; `MarkDrained` tells it the
// same after a short read. Any byte that arrives after the read that emptied the socket raises a
// new edge-triggered epoll event, which makes Asio read (and try first again), so nothing is
// missed: this is nginx's `rev->ready = 0` after a short recv.
//
// The flag lives in Asio's epoll reactor's per-socket state, which Asio keeps private; Boost is
// pinned (CMakeLists.txt: 1.81 EXACT) and with another Boost, or another reactor, MarkDrained
// does nothing. It must be called on the thread that runs the socket's io_context (the only one
// that touches that state; io_pool.h).

#include <boost/asio/ip/tcp.hpp>
#include <boost/version.hpp>
#include <cstddef>

namespace powerplane::net {

#if BOOST_VERSION == 108100 && defined(BOOST_ASIO_HAS_EPOLL) && \
    !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT)
namespace drained_detail {
using State = boost::asio::detail::epoll_reactor::descriptor_state;
using Flags = bool[boost::asio::detail::epoll_reactor::max_ops];
// A pointer to the private member, obtained the one way the language allows: an explicit
// instantiation may name it.
Flags State::*TrySpeculative();
template <Flags State::*Member>
struct Grant {
  friend Flags State::*TrySpeculative() { return Member; }
};
template struct Grant<&State::try_speculative_>;

// basic_socket keeps its implementation protected; a derived class may name it.
struct Peek : boost::asio::ip::tcp::socket {
  static auto& Impl(boost::asio::ip::tcp::socket& socket) { return socket.*(&Peek::impl_); }
};
}  // namespace drained_detail

// After a read of `got` bytes into a buffer of `asked`: when it was short, the next read on
// `socket` waits for epoll instead of trying first.
inline void MarkDrained(boost::asio::ip::tcp::socket& socket, std::size_t got, std::size_t asked) {
  if (got == 0 || got >= asked) return;
  auto* state = drained_detail::Peek::Impl(socket).get_implementation().reactor_data_;
  if (state != nullptr) {
    (state->*drained_detail::TrySpeculative())[boost::asio::detail::epoll_reactor::read_op] = false;
  }
}

// Whether the next read on `socket` tries the socket before waiting for epoll (for tests).
inline bool TriesReadFirst(boost::asio::ip::tcp::socket& socket) {
  auto* state = drained_detail::Peek::Impl(socket).get_implementation().reactor_data_;
  return state == nullptr ||
         (state->*drained_detail::TrySpeculative())[boost::asio::detail::epoll_reactor::read_op];
}
#else
inline void MarkDrained(boost::asio::ip::tcp::socket&, std::size_t, std::size_t) {}
inline bool TriesReadFirst(boost::asio::ip::tcp::socket&) { return true; }
#endif

}  // namespace powerplane::net
