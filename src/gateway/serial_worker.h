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

  // Returns once every job posted before the call has run.
  void Drain() {
    std::unique_lock lock(mu_);
    idle_.wait(lock, [this] { return queue_.empty() && !running_; });
  }

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
      running_ = true;
      lock.unlock();
      for (auto& job : jobs) job();
      lock.lock();
      running_ = false;
      if (queue_.empty()) idle_.notify_all();
      if (stopping_ && queue_.empty()) return;
    }
  }

  std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  bool running_ = false;
  std::vector<std::function<void()>> queue_;
  bool stopping_ = false;
  std::thread thread_;  // last: started once the rest is made.
};

}  // namespace powerplane::gateway
