#pragma once
// Active health and load probes: every `interval`, each endpoint's /metrics is read (within
// `timeout`). A failed probe takes the endpoint out at once; a good one puts it back and
// refreshes its load. With the defaults a dead endpoint is out within 0.75 s.

#include <atomic>
#include <chrono>
#include <memory>

#include <boost/asio/any_io_executor.hpp>

#include "fleet/fleet.h"

namespace powerplane::fleet {

struct ProberOptions {
  std::chrono::milliseconds interval{250};
  std::chrono::milliseconds timeout{500};
};

class Prober {
 public:
  Prober(Fleet& fleet, boost::asio::any_io_executor executor, ProberOptions options = {});
  ~Prober();
  void Start();
  void Stop();

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace powerplane::fleet
