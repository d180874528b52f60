#pragma once
// Writing to a socket the way nginx does: one gathered send straight away, and an asynchronous
// write (the caller's, of a buffers_suffix) only for what the socket could not take. A small
// chunk to a reader that keeps up (the common case for a token stream) then costs one system
// call and no asynchronous operation: no operation object, no trip through the scheduler, no
// coroutine resumption.
//
// The send is send(2) or sendmsg(2) with MSG_DONTWAIT on the socket's descriptor, so it never
// blocks whatever the descriptor's mode, and MSG_NOSIGNAL, so a closed peer is an error, not
// SIGPIPE. Buffers that come to at most kJoinBytes are first copied into one: one send(2) of
// one buffer costs the kernel less than a sendmsg(2) of several (no message header and vector
// to copy in, one range to copy from), by more than the copy (bench/write_bench.cc).

#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <cerrno>
#include <cstring>

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/beast/core/error.hpp>

namespace powerplane::net {

// Buffers that come to at most this many bytes are joined into one before they are sent.
constexpr std::size_t kJoinBytes = 4096;

namespace detail {
// send(2) of one range, or sendmsg(2) of several, retried on EINTR: the bytes sent, 0 with `ec`
// clear when the socket takes nothing now.
inline std::size_t SendPieces(int fd, iovec* pieces, std::size_t count,
                              boost::beast::error_code& ec) {
  msghdr message{};
  message.msg_iov = pieces;
  message.msg_iovlen = count;
  for (;;) {
    const ssize_t sent =
        count == 1 ? ::send(fd, pieces[0].iov_base, pieces[0].iov_len, MSG_DONTWAIT | MSG_NOSIGNAL)
                   : ::sendmsg(fd, &message, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent >= 0) return static_cast<std::size_t>(sent);
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      ec.assign(errno, boost::asio::error::get_system_category());
    }
    return 0;
  }
}
}  // namespace detail

// Sends what `socket` takes of `buffers` now. Returns the bytes sent; `ec` is set on an error
// other than would_block (then the caller's socket is broken).
template <typename Socket, typename Buffers>
std::size_t SendNow(Socket& socket, const Buffers& buffers, boost::beast::error_code& ec) {
  ec = {};
  constexpr std::size_t kMaxPieces = 16;
  std::array<iovec, kMaxPieces> pieces;
  std::size_t count = 0, bytes = 0;
  for (auto it = boost::asio::buffer_sequence_begin(buffers);
       it != boost::asio::buffer_sequence_end(buffers) && count < kMaxPieces; ++it) {
    const boost::asio::const_buffer piece(*it);
    if (piece.size() == 0) continue;
    pieces[count].iov_base = const_cast<void*>(piece.data());
    pieces[count].iov_len = piece.size();
    bytes += piece.size();
    ++count;
  }
  if (count == 0) return 0;
  if (count > 1 && bytes <= kJoinBytes) {
    std::array<char, kJoinBytes> joined;
    std::size_t at = 0;
    for (std::size_t i = 0; i < count; ++i) {
      std::memcpy(joined.data() + at, pieces[i].iov_base, pieces[i].iov_len);
      at += pieces[i].iov_len;
    }
    iovec one{joined.data(), bytes};
    return detail::SendPieces(socket.native_handle(), &one, 1, ec);
  }
  return detail::SendPieces(socket.native_handle(), pieces.data(), count, ec);
}

}  // namespace powerplane::net
