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
using Operation = boost::asio::detail::scheduler_operation;
Flags State::*TrySpeculative();
std::uint32_t State::*RegisteredEvents();
int Reactor::*EpollFd();
unsigned int Operation::*ReportedEvents();
template <Flags State::*Try, std::uint32_t State::*Events, int Reactor::*Fd,
          unsigned int Operation::*Reported>
struct Grant {
  friend Flags State::*TrySpeculative() { return Try; }
  friend std::uint32_t State::*RegisteredEvents() { return Events; }
  friend int Reactor::*EpollFd() { return Fd; }
  // The events epoll last reported for a descriptor (set by the reactor at each report, read by
  // nothing else once the descriptor's operation has run).
  friend unsigned int Operation::*ReportedEvents() { return Reported; }
};
template struct Grant<&State::try_speculative_, &State::registered_events_, &Reactor::epoll_fd_,
                      &Operation::task_result_>;

// basic_socket keeps its implementation protected; a derived class may name it.
struct Peek : boost::asio::ip::tcp::socket {
  static State* Of(boost::asio::ip::tcp::socket& socket) {
    return (socket.*(&Peek::impl_)).get_implementation().reactor_data_;
  }
};

int EpollFdOf(boost::asio::ip::tcp::socket& socket) {
  auto& reactor = boost::asio::use_service<Reactor>(
      boost::asio::query(socket.get_executor(), boost::asio::execution::context));
  return reactor.*EpollFd();
}

// Re-registers the socket's descriptor with its registered events (EPOLL_CTL_MOD on an
// edge-triggered registration also reports what is ready now).
bool Reregister(boost::asio::ip::tcp::socket& socket, State* state) {
  epoll_event ev{};
  ev.events = state->*RegisteredEvents();
  ev.data.ptr = state;
  return ::epoll_ctl(EpollFdOf(socket), EPOLL_CTL_MOD, socket.native_handle(), &ev) == 0;
}
}  // namespace

DrainingBuffer::DrainingBuffer(boost::asio::ip::tcp::socket& socket, boost::asio::mutable_buffer b)
    : boost::asio::mutable_buffer(b) {
  State* state = Peek::Of(socket);
  if (state == nullptr) return;
  auto& registered = state->*RegisteredEvents();
  if ((registered & EPOLLRDHUP) == 0) {
    // Once per socket: epoll is to report the peer's end too. (The reported mask is not reset
    // here: the descriptor may be queued to run with it.)
    registered |= EPOLLRDHUP;
    if (!Reregister(socket, state)) {
      registered &= ~static_cast<std::uint32_t>(EPOLLRDHUP);
      return;
    }
  }
  // descriptor_state derives privately from the operation; a C-style cast is the one cast that
  // may name an inaccessible base.
  reported = &(((Operation*)state)->*ReportedEvents());  // NOLINT(google-readability-casting)
}

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
  return Reregister(socket, state);
}
#else
DrainingBuffer::DrainingBuffer(boost::asio::ip::tcp::socket&, boost::asio::mutable_buffer b)
    : boost::asio::mutable_buffer(b) {}
bool TriesReadFirst(boost::asio::ip::tcp::socket&) { return true; }
void ReadFirstAgain(boost::asio::ip::tcp::socket&) {}
bool WakeIfUnseen(boost::asio::ip::tcp::socket&) { return false; }
#endif

}  // namespace powerplane::net
