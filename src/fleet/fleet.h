#pragma once
// The live fleet, in process: sites with their prices, endpoints with their load and health.
// The gateway routes against it; the prober and price updater refresh it. Thread-safe: the
// immutable description needs no lock; prices, loads and health sit behind one mutex, and a
// request is routed and admitted under it, so concurrent requests see each other's load.

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/route_index.h"
#include "core/router.h"
#include "core/types.h"

namespace powerplane::fleet {

struct EndpointAddress {
  std::string host;
  unsigned short port = 0;
};

// What an engine's /metrics said.
struct ScrapedLoad {
  int running = 0;
  int waiting = 0;
  double kv_usage_fraction = 0;  // 0-1.
  double watts = -1;             // -1 when the engine does not report power.
  double joules_total = -1;
};

// One endpoint's state, copied out for the admin API and /metrics.
struct EndpointStatus {
  std::string id;
  std::string site_id;
  std::string model;
  std::string address;
  bool healthy = true;
  int in_flight = 0;
  ScrapedLoad scraped;
  core::EndpointLoad load;  // what the router sees.
  std::string last_error;
  int failures_in_a_row = 0;  // requests failed since its last answer (Fleet::ReportFailure).
};

struct SiteStatus {
  std::string id;
  std::string jurisdiction;
  double pue = 1;
  double network_rtt_ms = 0;
  double market_usd_per_mwh = 0;
  std::optional<double> override_usd_per_mwh;
  double usd_per_mwh = 0;  // effective.
  double gpu_watts = 0;    // sum of its endpoints' reported power.
  double facility_watts = 0;  // gpu_watts x PUE.
  int endpoints = 0;
  int healthy_endpoints = 0;
  int in_flight = 0;
  int in_flight_batch = 0;  // of those, batch-class (deferrable) requests.
  bool steer_away = false;
  bool shed_low_priority = false;
  bool pause_deferrable = false;
};

struct FleetStatus {
  std::vector<SiteStatus> sites;
  std::vector<EndpointStatus> endpoints;
};

class Fleet {
 public:
  Fleet(std::vector<core::Site> sites, std::vector<std::string> models,
        std::vector<core::Endpoint> endpoints, std::vector<EndpointAddress> addresses);

  // Immutable description (no lock).
  const std::vector<std::string>& models() const { return models_; }
  std::optional<std::uint32_t> ModelIndex(std::string_view name) const;
  std::optional<std::uint32_t> SiteIndex(std::string_view id) const;
  const core::Site& site(std::uint32_t i) const { return sites_[i]; }
  const core::Endpoint& endpoint(std::uint32_t i) const { return endpoints_[i]; }
  const EndpointAddress& address(std::uint32_t i) const { return addresses_[i]; }
  std::size_t site_count() const { return sites_.size(); }
  std::size_t endpoint_count() const { return endpoints_.size(); }

  // Routes `request` and, when placed, counts it in flight at the chosen endpoint until
  // Finish. `exclude` (optional) lists endpoints to skip, e.g. ones that just failed.
  core::Decision RouteAndAdmit(const core::Request& request,
                               const std::vector<std::uint32_t>& exclude = {});
  // The request admitted at `endpoint` has ended (served, failed or cancelled).
  void Finish(std::uint32_t endpoint, const core::Request& request);

  void SetMarketPrice(std::uint32_t site, double usd_per_mwh);
  // Sets (or with nullopt clears) an operator's override of a site's price.
  void SetPriceOverride(std::uint32_t site, std::optional<double> usd_per_mwh);
  double UsdPerMwh(std::uint32_t site) const;
  // The FlexController's say on new work at a site (see core::EnergyState).
  void SetFlex(std::uint32_t site, bool steer_away, bool shed_low_priority,
               bool pause_deferrable = false);

  // Health. A failed probe takes the endpoint out at once; a good probe puts it back, unless a
  // breaker below holds it out.
  void MarkFailure(std::uint32_t endpoint, std::string why);
  void MarkProbeOk(std::uint32_t endpoint, const ScrapedLoad& scraped,
                   std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());
  bool Healthy(std::uint32_t endpoint) const;
  std::string LastError(std::uint32_t endpoint) const;  // why it was last taken out.

  // Passive health by requests: a request the endpoint failed (no connection, a 5xx other than
  // an overloaded 503, a broken answer, no answer in time) opens its failure breaker: it is
  // taken out and probes cannot put it back for a cool-down of kFailureCoolDown, doubled for
  // each failure in a row (up to kFailureCoolDownMax), so an endpoint that answers its probes
  // but fails every request is tried less and less often. After the cool-down a good probe puts
  // it back (half-open): its next answer (ReportAnswer) ends the streak; its next failure opens
  // the breaker for twice as long. Failures while the breaker is open (requests that were under
  // way) do not lengthen the streak: one crash counts once.
  static constexpr std::chrono::seconds kFailureCoolDown{1};
  static constexpr std::chrono::seconds kFailureCoolDownMax{30};
  void ReportFailure(std::uint32_t endpoint, std::string why,
                     std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());

  // An answer from the endpoint: it ends a failure streak, and with its time to first token
  // (`ttft_s`, or -1 when not to be judged) feeds the latency breaker. kSlowStreak answers in a
  // row slower than max(4 x predicted, predicted + 2 s) open it: the endpoint is taken out and
  // probes cannot put it back for kBreakerCoolDown; then one good probe closes it again
  // (half-open: the next slow streak opens it again). While it is out for slowness alone, it is
  // still chosen when no healthy endpoint can take a request (none left, or all full): slow
  // service beats none. Slow answers while it is out do not extend the cool-down.
  static constexpr int kSlowStreak = 5;
  static constexpr std::chrono::seconds kBreakerCoolDown{5};
  void ReportAnswer(std::uint32_t endpoint, double ttft_s, double predicted_ttft_s,
                    std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());

  FleetStatus Status() const;

 private:
  void RefreshLoad(std::uint32_t i);  // requires mu_.

  const std::vector<core::Site> sites_;
  const std::vector<std::string> models_;
  const std::vector<core::Endpoint> endpoints_;
  const std::vector<EndpointAddress> addresses_;

  mutable std::mutex mu_;
  std::vector<core::EnergyState> energy_;
  std::vector<double> market_usd_per_mwh_;
  std::vector<std::optional<double>> override_usd_per_mwh_;
  std::vector<core::EndpointLoad> loads_;
  std::vector<int> in_flight_;
  std::vector<std::int64_t> in_flight_tokens_;
  std::vector<int> in_flight_batch_;
  std::vector<int> slow_streak_;
  std::vector<bool> slow_only_;  // out by the latency breaker alone, not a failure.
  std::vector<std::chrono::steady_clock::time_point> breaker_open_until_;  // latency breaker.
  std::vector<int> failure_streak_;
  std::vector<std::chrono::steady_clock::time_point> failure_open_until_;  // failure breaker.
  std::vector<ScrapedLoad> scraped_;
  std::vector<int> in_flight_at_scrape_;  // our own in-flight count when the scrape arrived.
  std::vector<std::string> last_error_;
  // The router's index of endpoints by site, model and batch, kept current by RefreshLoad.
  core::RouteIndex index_;
  core::Router router_;
};

}  // namespace powerplane::fleet
