#include "fleet/prober.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/as_tuple.hpp>

#include <spdlog/spdlog.h>

#include "fleet/prom_text.h"
#include "net/http_client.h"

namespace powerplane::fleet {

struct Prober::State : std::enable_shared_from_this<Prober::State> {
  Fleet& fleet;
  boost::asio::any_io_executor executor;
  ProberOptions options;
  std::atomic<bool> stopped{false};

  State(Fleet& f, boost::asio::any_io_executor ex, ProberOptions o)
      : fleet(f), executor(ex), options(o) {}

  boost::asio::awaitable<void> Probe(std::uint32_t i) {
    auto self = shared_from_this();
    boost::asio::steady_timer timer(executor);
    const EndpointAddress& a = fleet.address(i);
    bool was_healthy = fleet.Healthy(i);
    while (!stopped) {
      net::Request req{net::http::verb::get, "/metrics", 11};
      req.keep_alive(true);
      auto res = co_await net::Fetch(a.host, a.port, std::move(req), options.timeout);
      if (stopped) break;
      if (!res) {
        net::DropPooled(a.host, a.port);
        fleet.MarkFailure(i, res.error());
      } else if (res->result() != net::http::status::ok) {
        net::DropPooled(a.host, a.port);
        fleet.MarkFailure(i, "metrics answered " + std::to_string(res->result_int()));
      } else {
        fleet.MarkProbeOk(i, ReadEngineLoad(res->body()).value_or(ScrapedLoad{}));
      }
      // Each change of health is logged once, as the probe sees it (whatever made it).
      if (const bool healthy = fleet.Healthy(i); healthy != was_healthy) {
        was_healthy = healthy;
        if (healthy) {
          spdlog::info("endpoint {} is back in service", fleet.endpoint(i).id);
        } else {
          spdlog::warn("endpoint {} is out of service: {}", fleet.endpoint(i).id, fleet.LastError(i));
        }
      }
      timer.expires_after(options.interval);
      co_await timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    }
  }
};

Prober::Prober(Fleet& fleet, boost::asio::any_io_executor executor, ProberOptions options)
    : state_(std::make_shared<State>(fleet, executor, options)) {}

Prober::~Prober() { Stop(); }

void Prober::Start() {
  for (std::uint32_t i = 0; i < state_->fleet.endpoint_count(); ++i) {
    boost::asio::co_spawn(state_->executor, state_->Probe(i), boost::asio::detached);
  }
}

void Prober::Stop() { state_->stopped = true; }

}  // namespace powerplane::fleet
