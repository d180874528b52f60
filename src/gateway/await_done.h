#pragma once
// Awaiting work done on another thread from a coroutine on an I/O thread.

#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <memory>
#include <utility>

namespace powerplane::gateway {

// Runs start(done), which calls done(T) later from another thread, and resumes with that value
// on this coroutine's executor.
template <typename T, typename Start>
boost::asio::awaitable<T> AwaitDone(Start start) {
  namespace asio = boost::asio;
  auto executor = co_await asio::this_coro::executor;
  co_return co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(T)>(
      [&start, executor](auto handler) {
        auto shared = std::make_shared<decltype(handler)>(std::move(handler));
        start([shared, executor](T value) {
          asio::post(executor, [shared, value = std::move(value)]() mutable {
            std::move(*shared)(std::move(value));
          });
        });
      },
      asio::use_awaitable);
}

}  // namespace powerplane::gateway
