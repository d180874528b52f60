#pragma once
// N single-threaded io_contexts, one thread each: the execution model of every server here.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace powerplane::net {

class IoPool {
 public:
  explicit IoPool(std::size_t threads);
  ~IoPool();
  IoPool(const IoPool&) = delete;
  IoPool& operator=(const IoPool&) = delete;

  // Starts the threads. Call once.
  void Start();
  // Lets the contexts finish their outstanding work (up to `drain`), then stops them and joins
  // the threads. Work left after the drain is abandoned: its handlers are destroyed with the
  // contexts.
  void Stop(std::chrono::milliseconds drain = std::chrono::milliseconds(2000));
  std::vector<boost::asio::any_io_executor> Executors();
  boost::asio::io_context& context(std::size_t i) { return *contexts_[i]; }
  std::size_t size() const { return contexts_.size(); }

 private:
  std::vector<std::unique_ptr<boost::asio::io_context>> contexts_;
  std::vector<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guards_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable finished_cv_;
  std::size_t finished_ = 0;
};

}  // namespace powerplane::net
