#include "net/io_pool.h"

namespace powerplane::net {

IoPool::IoPool(std::size_t threads) {
  for (std::size_t i = 0; i < std::max<std::size_t>(1, threads); ++i) {
    contexts_.push_back(std::make_unique<boost::asio::io_context>(1));
    guards_.push_back(boost::asio::make_work_guard(*contexts_.back()));
  }
}

IoPool::~IoPool() { Stop(); }

void IoPool::Start() {
  for (auto& c : contexts_) threads_.emplace_back([ctx = c.get()] { ctx->run(); });
}

void IoPool::Stop() {
  guards_.clear();
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
