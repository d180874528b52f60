#pragma once
// Writing to a socket the way nginx does: one gathered send straight away, and an asynchronous
// write (the caller's, of a buffers_suffix) only for what the socket could not take. A small
// chunk to a reader that keeps up (the common case for a token stream) then costs one system
// call and no asynchronous operation: no operation object, no trip through the scheduler, no
// coroutine resumption.
//
// The socket must be in non-blocking mode (`socket.non_blocking(true)`): the gateway's client
// and engine sockets are set so when they are opened.

#include <boost/asio/error.hpp>
#include <boost/beast/core/error.hpp>

namespace powerplane::net {

// Sends what `socket` takes of `buffers` now. Returns the bytes sent; `ec` is set on an error
// other than would_block (then the caller's socket is broken).
template <typename Socket, typename Buffers>
std::size_t SendNow(Socket& socket, const Buffers& buffers, boost::beast::error_code& ec) {
  ec = {};
  const std::size_t sent = socket.write_some(buffers, ec);
  if (ec == boost::asio::error::would_block || ec == boost::asio::error::try_again) ec = {};
  return ec ? 0 : sent;
}

}  // namespace powerplane::net
