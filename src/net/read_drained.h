#pragma once
// Reading from a socket the way nginx does: a read that returned less than it asked for emptied
// the socket, so the next read waits for epoll to say that more has come, instead of trying the
// socket first and being told EAGAIN.
//
// Asio tries every read on a socket straight away (a "speculative" read) and waits for epoll only
// when that read finds nothing. For a token stream that is one wasted recv(2) per chunk: the
// engine sends a chunk, the gateway reads it, passes it on, asks for the next one, and the next
// one is not there yet (measured: 14.7 recv calls per 16-token stream against nginx's 6.9, half
// of them EAGAIN). A read into a `DrainingBuffer` tells Asio's reactor, at the moment of the
// recv and under the reactor's own lock, that a short read emptied the socket: the reactor then
// waits for epoll before the next read, as it already does after end of file. Any byte that
// arrives later raises a new edge-triggered event, which makes the reactor read (and try first
// again), so no data is missed.
//
// One thing could be missed: a FIN (or a reset) that arrived together with the last bytes. The
// short read takes the bytes, and epoll (edge-triggered) will not report the end again. nginx
// learns of it from EPOLLRDHUP, and so does this: a DrainingBuffer made for a socket adds
// EPOLLRDHUP to the socket's epoll registration (once), and its read reports the socket
// exhausted only when the events epoll last reported for the socket (Asio keeps them with the
// socket's reactor state) hold no end: no EPOLLRDHUP, EPOLLHUP or EPOLLERR. After a short read
// that came with an end, the next read tries the socket first and finds the end at once. A
// stale mask (from a socket that had the same reactor state before) costs at most one read that
// finds nothing. As a second net, a SocketDeadline that is armed looks at its socket at each of
// its wakes (http_client.h): when the reactor waits for epoll and the socket holds an unread end
// (or bytes), `WakeIfUnseen` re-arms the socket's epoll registration, and epoll reports it at
// once. Use DrainingBuffer only where the end of the body is not the FIN (call ReadFirstAgain
// before reading such a body with a plain buffer).
//
// The reactor's state is private to Asio; Boost is pinned (CMakeLists.txt: 1.81 EXACT). With
// another Boost or reactor, DrainingBuffer is a plain buffer and WakeIfUnseen does nothing.
// Call these on the thread that runs the socket's io_context (io_pool.h).

#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/version.hpp>
#include <cstddef>

namespace powerplane::net {

// A buffer whose read, when it returns fewer bytes than the buffer holds, leaves the socket
// waiting for epoll before its next read, unless epoll had reported the socket's end.
struct DrainingBuffer : boost::asio::mutable_buffer {
  // For a read of `socket`, whose epoll registration is made to report the peer's end (once).
  // On the thread that runs the socket's io_context.
  DrainingBuffer(boost::asio::ip::tcp::socket& socket, boost::asio::mutable_buffer b);
  // Without the end's report (tests of the second net): a short read always waits for epoll.
  explicit DrainingBuffer(boost::asio::mutable_buffer b) : boost::asio::mutable_buffer(b) {}
  // The events epoll last reported for the socket (Asio's own record); null: not looked at.
  const unsigned int* reported = nullptr;
};

}  // namespace powerplane::net

#if BOOST_VERSION == 108100 && defined(BOOST_ASIO_HAS_EPOLL) && \
    !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT)
#define POWERPLANE_READ_DRAINED 1
#include <sys/epoll.h>

#include <boost/asio/detail/reactive_socket_recv_op.hpp>

namespace powerplane::net {
// The epoll events that say the peer's end (or an error) is on the socket.
inline constexpr unsigned int kEndEvents = EPOLLRDHUP | EPOLLHUP | EPOLLERR;
}  // namespace powerplane::net

namespace boost::asio::detail {

// The receive operation for a DrainingBuffer: Asio's own, except that a short read reports the
// socket exhausted (Asio does so only for end of file), so the reactor stops trying first.
template <>
class reactive_socket_recv_op_base<powerplane::net::DrainingBuffer> : public reactor_op {
 public:
  reactive_socket_recv_op_base(const boost::system::error_code& success_ec, socket_type socket,
                               socket_ops::state_type state,
                               const powerplane::net::DrainingBuffer& buffer,
                               socket_base::message_flags flags, func_type complete_func)
      : reactor_op(success_ec, &reactive_socket_recv_op_base::do_perform, complete_func),
        socket_(socket),
        state_(state),
        buffer_(buffer),
        flags_(flags) {}

  static status do_perform(reactor_op* base) {
    auto* o = static_cast<reactive_socket_recv_op_base*>(base);
    const bool stream = (o->state_ & socket_ops::stream_oriented) != 0;
    if (!socket_ops::non_blocking_recv1(o->socket_, o->buffer_.data(), o->buffer_.size(),
                                        o->flags_, stream, o->ec_, o->bytes_transferred_)) {
      return not_done;  // EAGAIN: wait for epoll.
    }
    if (!stream || o->bytes_transferred_ == o->buffer_.size()) return done;
    // A short read emptied the socket, but an end that epoll reported with the bytes will not
    // be reported again: then the next read tries the socket first.
    const unsigned int* reported = o->buffer_.reported;
    const bool end_reported =
        reported != nullptr && (*reported & powerplane::net::kEndEvents) != 0;
    return end_reported ? done : done_and_exhausted;
  }

 private:
  socket_type socket_;
  socket_ops::state_type state_;
  powerplane::net::DrainingBuffer buffer_;
  socket_base::message_flags flags_;
};

}  // namespace boost::asio::detail

#endif

namespace powerplane::net {

// Whether the next read on `socket` tries the socket before waiting for epoll (true where
// DrainingBuffer is a plain buffer).
bool TriesReadFirst(boost::asio::ip::tcp::socket& socket);

// Makes the next read on `socket` try the socket first again (Asio's default): before reading a
// body whose end is the FIN with a plain buffer, after a DrainingBuffer read of its head.
void ReadFirstAgain(boost::asio::ip::tcp::socket& socket);

// When the reactor waits for epoll to read `socket` but the socket holds an end, an error or
// bytes that epoll will not report again, re-arms its registration so that epoll reports them
// now. True when it did (never where DrainingBuffer is a plain buffer).
bool WakeIfUnseen(boost::asio::ip::tcp::socket& socket);

}  // namespace powerplane::net
