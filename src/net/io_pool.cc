#include "net/io_pool.h"

namespace powerplane::net {

IoPool::IoPool(std::size_t threads) {
  const std::size_t n = std::max<std::size_t>(1, threads);
  // With one context, every socket is opened, used and closed on its one thread (other threads
  // only post to it), so the reactor's lock around each socket operation is dropped. With
  // several, the acceptor on the first opens and may close sockets that belong to another.
  const int hint = n == 1 ? BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO : 1;
  for (std::size_t i = 0; i < n; ++i) {
    contexts_.push_back(std::make_unique<boost::asio::io_context>(hint));
    guards_.push_back(boost::asio::make_work_guard(*contexts_.back()));
  }
}

IoPool::~IoPool() { Stop(); }

void IoPool::Start() {
  for (auto& c : contexts_) {
    threads_.emplace_back([this, ctx = c.get()] {
      ctx->run();
      std::lock_guard lock(mu_);
      ++finished_;
      finished_cv_.notify_all();
    });
  }
}

void IoPool::Stop(std::chrono::milliseconds drain) {
  if (threads_.empty()) return;  // never started, or stopped already.
  guards_.clear();
  {
    std::unique_lock lock(mu_);
    finished_cv_.wait_for(lock, drain, [&] { return finished_ == threads_.size(); });
  }
  for (auto& c : contexts_) c->stop();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

std::vector<boost::asio::any_io_executor> IoPool::Executors() {
  std::vector<boost::asio::any_io_executor> out;
  for (auto& c : contexts_) out.push_back(c->get_executor());
  return out;
}

}  // namespace powerplane::net
