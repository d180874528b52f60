#include "net/read_drained.h"

#include <poll.h>
#include <sys/epoll.h>

#include <cstdint>

namespace powerplane::net {

#ifdef POWERPLANE_READ_DRAINED
namespace {
using Reactor = boost::asio::detail::epoll_reactor;
using State = Reactor::descriptor_state;
using Flags = bool[Reactor::max_ops];
// Pointers to Asio's private members, obtained the one way the language allows: an explicit
// instantiation may name them.
Flags State::*TrySpeculative();
std::uint32_t State::*RegisteredEvents();
int Reactor::*EpollFd();
template <Flags State::*Try, std::uint32_t State::*Events, int Reactor::*Fd>
struct Grant {
  friend Flags State::*TrySpeculative() { return Try; }
  friend std::uint32_t State::*RegisteredEvents() { return Events; }
  friend int Reactor::*EpollFd() { return Fd; }
};
template struct Grant<&State::try_speculative_, &State::registered_events_, &Reactor::epoll_fd_>;

// basic_socket keeps its implementation protected; a derived class may name it.
struct Peek : boost::asio::ip::tcp::socket {
  static State* Of(boost::asio::ip::tcp::socket& socket) {
    return (socket.*(&Peek::impl_)).get_implementation().reactor_data_;
  }
};
}  // namespace

bool TriesReadFirst(boost::asio::ip::tcp::socket& socket) {
  State* state = Peek::Of(socket);
  return state == nullptr || (state->*TrySpeculative())[Reactor::read_op];
}

void ReadFirstAgain(boost::asio::ip::tcp::socket& socket) {
  if (State* state = Peek::Of(socket)) (state->*TrySpeculative())[Reactor::read_op] = true;
}

bool WakeIfUnseen(boost::asio::ip::tcp::socket& socket) {
  State* state = Peek::Of(socket);
  if (state == nullptr || TriesReadFirst(socket)) return false;
  // poll, not a MSG_PEEK recv, which would take a pending error (a reset) off the socket.
  pollfd p{.fd = socket.native_handle(), .events = POLLIN | POLLRDHUP, .revents = 0};
  if (::poll(&p, 1, 0) != 1 || p.revents == 0) return false;
  // EPOLL_CTL_MOD on an edge-triggered registration reports what is ready now.
  auto& reactor = boost::asio::use_service<Reactor>(
      boost::asio::query(socket.get_executor(), boost::asio::execution::context));
  epoll_event ev{};
  ev.events = state->*RegisteredEvents();
  ev.data.ptr = state;
  return ::epoll_ctl(reactor.*EpollFd(), EPOLL_CTL_MOD, socket.native_handle(), &ev) == 0;
}
#else
bool TriesReadFirst(boost::asio::ip::tcp::socket&) { return true; }
void ReadFirstAgain(boost::asio::ip::tcp::socket&) {}
bool WakeIfUnseen(boost::asio::ip::tcp::socket&) { return false; }
#endif

}  // namespace powerplane::net
