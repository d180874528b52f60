#pragma once
// A thread that runs posted jobs one at a time, in order, off the request path (the audit log's
// appends, budget lease requests). Its destructor runs what is still queued, then joins.

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace powerplane::gateway {

class SerialWorker {
 public:
  SerialWorker() : thread_([this] { Run(); }) {}
  ~SerialWorker() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }
  SerialWorker(const SerialWorker&) = delete;
  SerialWorker& operator=(const SerialWorker&) = delete;

  void Post(std::function<void()> job) {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(job));
    }
    wake_.notify_one();
  }

 private:
  void Run() {
    std::unique_lock lock(mu_);
    while (true) {
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      std::vector<std::function<void()>> jobs;
      jobs.swap(queue_);
      lock.unlock();
      for (auto& job : jobs) job();
      lock.lock();
      if (stopping_ && queue_.empty()) return;
    }
  }

  std::mutex mu_;
  std::condition_variable wake_;
  std::vector<std::function<void()>> queue_;
  bool stopping_ = false;
  std::thread thread_;  // last: started once the rest is made.
};

}  // namespace powerplane::gateway
