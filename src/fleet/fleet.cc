#include "fleet/fleet.h"

#include <cstdio>

#include <algorithm>
#include <utility>

namespace powerplane::fleet {

Fleet::Fleet(std::vector<core::Site> sites, std::vector<std::string> models,
             std::vector<core::Endpoint> endpoints, std::vector<EndpointAddress> addresses)
    : sites_(std::move(sites)),
      models_(std::move(models)),
      endpoints_(std::move(endpoints)),
      addresses_(std::move(addresses)),
      energy_(sites_.size()),
      market_usd_per_mwh_(sites_.size(), 0.0),
      override_usd_per_mwh_(sites_.size()),
      loads_(endpoints_.size()),
      in_flight_(endpoints_.size(), 0),
      in_flight_tokens_(endpoints_.size(), 0),
      in_flight_batch_(endpoints_.size(), 0),
      slow_streak_(endpoints_.size(), 0),
      slow_only_(endpoints_.size(), false),
      breaker_open_until_(endpoints_.size()),
      failure_streak_(endpoints_.size(), 0),
      failure_open_until_(endpoints_.size()),
      scraped_(endpoints_.size()),
      in_flight_at_scrape_(endpoints_.size(), 0),
      last_error_(endpoints_.size()),
      index_(endpoints_, loads_) {}

std::optional<std::uint32_t> Fleet::ModelIndex(std::string_view name) const {
  for (std::size_t i = 0; i < models_.size(); ++i) {
    if (models_[i] == name) return static_cast<std::uint32_t>(i);
  }
  return std::nullopt;
}

std::optional<std::uint32_t> Fleet::SiteIndex(std::string_view id) const {
  for (std::size_t i = 0; i < sites_.size(); ++i) {
    if (sites_[i].id == id) return static_cast<std::uint32_t>(i);
  }
  return std::nullopt;
}

core::Decision Fleet::RouteAndAdmit(const core::Request& request,
                                    const std::vector<std::uint32_t>& exclude) {
  std::lock_guard lock(mu_);
  // Excluded endpoints are hidden as unhealthy for this one decision.
  std::vector<std::pair<std::uint32_t, bool>> saved;
  for (auto e : exclude) {
    if (e < loads_.size()) {
      saved.emplace_back(e, loads_[e].healthy);
      loads_[e].healthy = false;
    }
  }
  core::FleetView view{sites_, energy_, endpoints_, loads_, &index_};
  core::Decision d = router_.Route(request, view);
  if (!d.placed && d.filtered.unhealthy > 0 && d.why_not != core::NoPlacement::kModelNotServed &&
      d.why_not != core::NoPlacement::kResidency) {
    // Nothing healthy could take it (none left, or the healthy ones are full). Endpoints held
    // out only for being slow still answer: slow service beats none (as Envoy's panic threshold
    // does), so they are tried once more, with everything else as it was.
    std::vector<std::uint32_t> slow;
    for (std::uint32_t e = 0; e < loads_.size(); ++e) {
      if (slow_only_[e] && !loads_[e].healthy &&
          std::find(exclude.begin(), exclude.end(), e) == exclude.end()) {
        slow.push_back(e);
        loads_[e].healthy = true;
      }
    }
    if (!slow.empty()) {
      // Its answer stands, placed or not: full slow endpoints make it "at capacity" (the caller
      // waits for a slot), not "unhealthy" (an immediate 503).
      d = router_.Route(request, view);
      for (auto e : slow) loads_[e].healthy = false;
      d.meets_targets = false;  // known to answer far slower than predicted.
    }
  }
  for (auto& [e, healthy] : saved) loads_[e].healthy = healthy;
  if (d.placed) {
    ++in_flight_[d.endpoint_index];
    in_flight_tokens_[d.endpoint_index] += request.prompt_tokens + request.expected_output_tokens;
    if (request.priority == core::PriorityClass::kBatch) ++in_flight_batch_[d.endpoint_index];
    RefreshLoad(d.endpoint_index);
  }
  return d;
}

void Fleet::Finish(std::uint32_t endpoint, const core::Request& request) {
  std::lock_guard lock(mu_);
  in_flight_[endpoint] = std::max(0, in_flight_[endpoint] - 1);
  in_flight_tokens_[endpoint] = std::max<std::int64_t>(
      0, in_flight_tokens_[endpoint] - request.prompt_tokens - request.expected_output_tokens);
  if (request.priority == core::PriorityClass::kBatch) {
    in_flight_batch_[endpoint] = std::max(0, in_flight_batch_[endpoint] - 1);
  }
  RefreshLoad(endpoint);
}

void Fleet::RefreshLoad(std::uint32_t i) {
  const core::Endpoint& e = endpoints_[i];
  const ScrapedLoad& s = scraped_[i];
  core::EndpointLoad& l = loads_[i];
  // Our own in-flight count is exact and moves first; the engine's report adds the traffic that
  // did not come through this gateway (what it counted beyond our in-flight at scrape time).
  const int others = std::max(0, s.running + s.waiting - in_flight_at_scrape_[i]);
  const int occupied = in_flight_[i] + others;
  l.running = std::min(occupied, e.max_batch);
  l.waiting = occupied - l.running;
  const auto scraped_kv = static_cast<std::int64_t>(s.kv_usage_fraction * e.kv_token_capacity);
  l.kv_tokens_used = std::max(in_flight_tokens_[i], scraped_kv);
  l.mean_context_tokens =
      in_flight_[i] > 0 ? static_cast<double>(in_flight_tokens_[i]) / in_flight_[i] : 0.0;
  index_.Update(i, e, l);
}

void Fleet::SetMarketPrice(std::uint32_t site, double usd_per_mwh) {
  std::lock_guard lock(mu_);
  market_usd_per_mwh_[site] = usd_per_mwh;
  energy_[site].usd_per_mwh = override_usd_per_mwh_[site].value_or(usd_per_mwh);
}

void Fleet::SetPriceOverride(std::uint32_t site, std::optional<double> usd_per_mwh) {
  std::lock_guard lock(mu_);
  override_usd_per_mwh_[site] = usd_per_mwh;
  energy_[site].usd_per_mwh = usd_per_mwh.value_or(market_usd_per_mwh_[site]);
}

double Fleet::UsdPerMwh(std::uint32_t site) const {
  std::lock_guard lock(mu_);
  return energy_[site].usd_per_mwh;
}

void Fleet::SetFlex(std::uint32_t site, bool steer_away, bool shed_low_priority,
                    bool pause_deferrable) {
  std::lock_guard lock(mu_);
  energy_[site].steer_away = steer_away;
  energy_[site].shed_low_priority = shed_low_priority;
  energy_[site].pause_deferrable = pause_deferrable;
}

void Fleet::MarkFailure(std::uint32_t endpoint, std::string why) {
  std::lock_guard lock(mu_);
  loads_[endpoint].healthy = false;
  slow_only_[endpoint] = false;
  last_error_[endpoint] = std::move(why);
}

void Fleet::MarkProbeOk(std::uint32_t endpoint, const ScrapedLoad& scraped,
                        std::chrono::steady_clock::time_point now) {
  std::lock_guard lock(mu_);
  if (now < failure_open_until_[endpoint]) {
    slow_only_[endpoint] = false;  // it fails requests: not even a last resort.
  } else if (now < breaker_open_until_[endpoint]) {
    slow_only_[endpoint] = true;  // answering, held out by the breaker alone (a failure since is over).
  } else {
    loads_[endpoint].healthy = true;
    slow_only_[endpoint] = false;
  }
  scraped_[endpoint] = scraped;
  in_flight_at_scrape_[endpoint] = in_flight_[endpoint];
  RefreshLoad(endpoint);
}

void Fleet::ReportFailure(std::uint32_t endpoint, std::string why,
                          std::chrono::steady_clock::time_point now) {
  std::lock_guard lock(mu_);
  loads_[endpoint].healthy = false;
  slow_only_[endpoint] = false;
  last_error_[endpoint] = std::move(why);
  if (now < failure_open_until_[endpoint]) return;  // already open: the same trouble.
  const int streak = ++failure_streak_[endpoint];
  const auto cool_down = kFailureCoolDown * (1LL << std::min(streak - 1, 10));
  failure_open_until_[endpoint] =
      now + std::min<std::chrono::seconds>(cool_down, kFailureCoolDownMax);
}

void Fleet::ReportAnswer(std::uint32_t endpoint, double ttft_s, double predicted_ttft_s,
                         std::chrono::steady_clock::time_point now) {
  std::lock_guard lock(mu_);
  failure_streak_[endpoint] = 0;
  if (ttft_s < 0) return;
  const bool slow = ttft_s > std::max(4 * predicted_ttft_s, predicted_ttft_s + 2.0);
  slow_streak_[endpoint] = slow ? slow_streak_[endpoint] + 1 : 0;
  // An open breaker is not pushed further out by answers from requests it let through for want
  // of anything else: after the cool-down a good probe closes it, and the next streak reopens it.
  if (now < breaker_open_until_[endpoint]) slow_streak_[endpoint] = 0;
  if (slow_streak_[endpoint] < kSlowStreak) return;
  slow_streak_[endpoint] = 0;
  breaker_open_until_[endpoint] = now + kBreakerCoolDown;
  // Held out for slowness alone (a connection failure since would clear this): still used when
  // nothing healthy is left.
  if (loads_[endpoint].healthy) slow_only_[endpoint] = true;
  loads_[endpoint].healthy = false;
  char why[128];
  std::snprintf(why, sizeof why, "slow: %d answers in a row, last ttft %.2f s vs %.2f s predicted",
                kSlowStreak, ttft_s, predicted_ttft_s);
  last_error_[endpoint] = why;
}

bool Fleet::Healthy(std::uint32_t endpoint) const {
  std::lock_guard lock(mu_);
  return loads_[endpoint].healthy;
}

std::string Fleet::LastError(std::uint32_t endpoint) const {
  std::lock_guard lock(mu_);
  return last_error_[endpoint];
}

FleetStatus Fleet::Status() const {
  std::lock_guard lock(mu_);
  FleetStatus out;
  for (std::size_t s = 0; s < sites_.size(); ++s) {
    SiteStatus st;
    st.id = sites_[s].id;
    st.jurisdiction = sites_[s].jurisdiction;
    st.pue = sites_[s].pue;
    st.network_rtt_ms = sites_[s].network_rtt_s * 1e3;
    st.market_usd_per_mwh = market_usd_per_mwh_[s];
    st.override_usd_per_mwh = override_usd_per_mwh_[s];
    st.usd_per_mwh = energy_[s].usd_per_mwh;
    st.steer_away = energy_[s].steer_away;
    st.shed_low_priority = energy_[s].shed_low_priority;
    st.pause_deferrable = energy_[s].pause_deferrable;
    out.sites.push_back(std::move(st));
  }
  for (std::size_t i = 0; i < endpoints_.size(); ++i) {
    const core::Endpoint& e = endpoints_[i];
    EndpointStatus es;
    es.id = e.id;
    es.site_id = sites_[e.site_index].id;
    es.model = models_[e.model_index];
    es.address = addresses_[i].host + ":" + std::to_string(addresses_[i].port);
    es.healthy = loads_[i].healthy;
    es.failures_in_a_row = failure_streak_[i];
    es.in_flight = in_flight_[i];
    es.scraped = scraped_[i];
    es.load = loads_[i];
    es.last_error = last_error_[i];
    SiteStatus& st = out.sites[e.site_index];
    ++st.endpoints;
    if (es.healthy) ++st.healthy_endpoints;
    st.in_flight += es.in_flight;
    st.in_flight_batch += in_flight_batch_[i];
    // A slow endpoint held out by the breaker still draws what it reports (it may be serving).
    if ((es.healthy || slow_only_[i]) && scraped_[i].watts >= 0) st.gpu_watts += scraped_[i].watts;
    out.endpoints.push_back(std::move(es));
  }
  for (std::size_t s = 0; s < sites_.size(); ++s) {
    out.sites[s].facility_watts = out.sites[s].gpu_watts * sites_[s].pue;
  }
  return out;
}

}  // namespace powerplane::fleet
