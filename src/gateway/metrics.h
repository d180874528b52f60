#pragma once
// The gateway's Prometheus metrics (prometheus-cpp core, served by our own /metrics).

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "fleet/fleet.h"
#include "fleet/grid_state.h"

namespace powerplane::gateway {

class GatewayMetrics {
 public:
  GatewayMetrics(const fleet::Fleet& fleet, const fleet::GridState* grid);

  // One request ended. `site` is empty when it was not placed.
  void RecordRequest(const std::string& site, int status);
  void RecordOk(std::uint32_t site) { ok_by_site_[site]->Increment(); }
  // Tokens, energy and its cost of a request that reached an engine, however it ended: what the
  // ledger charges, delivered tokens included.
  void RecordServed(std::uint32_t site, std::int64_t prompt_tokens, std::int64_t completion_tokens,
                    double joules, double energy_cost_usd);
  // Time to first token (negative: none) and duration of a request that ended well.
  void RecordTimes(std::uint32_t site, double ttft_s, double duration_s);
  void RecordDecision(std::string_view outcome);
  // Other gateways sharing the store whose use of tenants' limits this one counts.
  void SetRateLimitPeers(std::size_t peers) { rate_limit_peers_->Set(static_cast<double>(peers)); }
  void RecordPlaced(bool meets_targets) {
    (meets_targets ? placed_ : placed_missing_)->Increment();
  }

  // The text exposition, with per-site gauges refreshed from the fleet.
  std::string Serialize();

 private:
  const fleet::Fleet& fleet_;
  const fleet::GridState* grid_;
  std::mutex serialize_mu_;  // the deltas below are updated while serializing.
  double events_seen_ = 0;
  std::map<std::string, double> actions_seen_, above_seen_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& tokens_;
  prometheus::Family<prometheus::Counter>& decisions_;
  prometheus::Family<prometheus::Counter>& energy_joules_;
  prometheus::Family<prometheus::Counter>& energy_cost_;
  prometheus::Family<prometheus::Histogram>& ttft_;
  prometheus::Family<prometheus::Histogram>& duration_;
  prometheus::Family<prometheus::Gauge>& price_;
  prometheus::Family<prometheus::Gauge>& power_;
  prometheus::Family<prometheus::Gauge>& in_flight_;
  prometheus::Family<prometheus::Gauge>& healthy_;
  prometheus::Family<prometheus::Gauge>& budget_;
  prometheus::Family<prometheus::Gauge>& miners_;
  prometheus::Family<prometheus::Gauge>& export_;
  prometheus::Family<prometheus::Gauge>& import_;
  prometheus::Family<prometheus::Counter>& events_received_;
  prometheus::Family<prometheus::Counter>& flex_actions_;
  prometheus::Family<prometheus::Counter>& above_target_;
  prometheus::Gauge* rate_limit_peers_;
  prometheus::Counter* placed_;
  prometheus::Counter* placed_missing_;
  std::vector<prometheus::Counter*> ok_by_site_;  // status 200, the hot path.
  std::vector<prometheus::Counter*> prompt_tokens_by_site_;
  std::vector<prometheus::Counter*> completion_tokens_by_site_;
  std::vector<prometheus::Counter*> joules_by_site_;
  std::vector<prometheus::Counter*> cost_by_site_;
  std::vector<prometheus::Histogram*> ttft_by_site_;
  std::vector<prometheus::Histogram*> duration_by_site_;
};

}  // namespace powerplane::gateway
