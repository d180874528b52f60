#include "sim/simulator.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>

#include "core/cost_model.h"
#include "core/output_length.h"
#include "core/route_index.h"
#include "core/router.h"
#include "sim/analytic_engine.h"
#include "sim/site_power.h"

namespace powerplane::sim {
namespace {

struct Sink final : FinishSink {
  const SimFleet* fleet = nullptr;
  PolicyResult* result = nullptr;
  double rtt_s = 0;  // of the endpoint being advanced.
  // Per tenant: the output length the gateway would plan with, learned from finished requests.
  std::vector<core::OutputLengthEstimate>* output_lengths = nullptr;
  void OnFinished(const FinishedRequest& r) override {
    (*output_lengths)[r.tenant].Observe(r.output_tokens);
    const SimTenant& t = fleet->tenants[r.tenant];
    const double ttft = r.first_token_s - r.arrival_s + rtt_s;
    const double tpot =
        r.output_tokens > 1 ? (r.finish_s - r.first_token_s) / (r.output_tokens - 1) : 0.0;
    result->ttft.Add(ttft);
    if (r.output_tokens > 1) result->tpot.Add(tpot);
    ++result->served;
    result->output_tokens += static_cast<std::uint64_t>(r.output_tokens);
    if (ttft <= t.ttft_target_s && tpot <= t.tpot_target_s) ++result->met_targets;
  }
};

// Least occupied (running + waiting), then least KV, then lowest index.
bool LessLoaded(const core::EndpointLoad& a, const core::EndpointLoad& b) {
  const int oa = a.running + a.waiting, ob = b.running + b.waiting;
  if (oa != ob) return oa < ob;
  return a.kv_tokens_used < b.kv_tokens_used;
}

}  // namespace

std::string_view ToString(Policy p) {
  switch (p) {
    case Policy::kRoundRobin:
      return "round-robin";
    case Policy::kLeastLoaded:
      return "least-loaded";
    case Policy::kNearest:
      return "nearest";
    case Policy::kCheapestPrice:
      return "cheapest-price";
    case Policy::kPowerplane:
      return "powerplane";
  }
  return "unknown";
}

bool ParsePolicy(std::string_view name, Policy* out) {
  for (Policy p : AllPolicies()) {
    if (ToString(p) == name) {
      *out = p;
      return true;
    }
  }
  return false;
}

std::vector<Policy> AllPolicies() {
  return {Policy::kRoundRobin, Policy::kLeastLoaded, Policy::kNearest, Policy::kCheapestPrice,
          Policy::kPowerplane};
}

grid::UtcTime PriceGrid::BucketStart(std::size_t b) const {
  return start - std::chrono::seconds(static_cast<std::int64_t>(offset_s)) +
         std::chrono::seconds(static_cast<std::int64_t>(static_cast<double>(b) * bucket_s));
}

double PriceGrid::UsdPerMwh(const SimFleet& fleet, std::size_t site, std::size_t bucket) const {
  return fleet.prices[site].UsdPerMwhAt(BucketStart(bucket));
}

PriceGrid MakePriceGrid(const SimOptions& options) {
  PriceGrid g;
  g.bucket_s = options.bucket_s;
  g.start = options.start;
  const auto epoch_s = options.start.time_since_epoch().count();
  const auto bucket = static_cast<std::int64_t>(options.bucket_s);
  g.offset_s = static_cast<double>(((epoch_s % bucket) + bucket) % bucket);
  return g;
}

PolicyResult RunPolicy(const SimFleet& fleet, ArrivalStream stream, Policy policy,
                       const SimOptions& options) {
  PolicyResult result;
  result.policy = std::string(ToString(policy));
  const PriceGrid grid = MakePriceGrid(options);
  const std::size_t n_sites = fleet.sites.size();
  const std::size_t n_endpoints = fleet.endpoints.size();

  std::vector<EnergyLedger> ledgers(n_sites, EnergyLedger(grid.bucket_s, grid.offset_s));
  std::vector<std::unique_ptr<AnalyticEngine>> engines;
  for (const auto& e : fleet.endpoints) {
    engines.push_back(std::make_unique<AnalyticEngine>(e.gpu.get(), e.max_batch,
                                                       e.kv_token_capacity,
                                                       &ledgers[e.site_index]));
  }
  std::vector<core::EndpointLoad> loads(n_endpoints);
  std::vector<core::EnergyState> energy(n_sites);
  std::size_t price_bucket = std::numeric_limits<std::size_t>::max();
  // The live fleet routes through a RouteIndex kept current with the loads; so does the twin.
  core::RouteIndex index(fleet.endpoints, loads);
  const core::FleetView view{fleet.sites, energy, fleet.endpoints, loads, &index};
  const core::Router router;
  Sink sink;
  sink.fleet = &fleet;
  sink.result = &result;
  std::vector<core::OutputLengthEstimate> output_lengths(
      fleet.tenants.size(), core::OutputLengthEstimate(options.expected_output_tokens));
  sink.output_lengths = &output_lengths;
  std::size_t rr_next = 0;
  // Sites ordered by round trip, for `nearest`.
  std::vector<std::size_t> by_rtt(n_sites);
  for (std::size_t s = 0; s < n_sites; ++s) by_rtt[s] = s;
  std::stable_sort(by_rtt.begin(), by_rtt.end(), [&](std::size_t a, std::size_t b) {
    return fleet.sites[a].network_rtt_s < fleet.sites[b].network_rtt_s;
  });

  // Site power: metered every tick for every policy; controlled (caps, miners, steering) for
  // `powerplane`, as the live flex loop does.
  const bool control = policy == Policy::kPowerplane;
  const double plot_step_s = options.power_plot_step_s > 0
                                 ? options.power_plot_step_s
                                 : std::max(options.flex_tick_s, options.duration_s / 1500);
  SitePowerLoop power(fleet, options.events, options.start, options.flex_tick_s, plot_step_s,
                      control);
  std::vector<double> site_joules(n_sites), site_price(n_sites);
  auto ticks_until = [&](double t_s) {
    while (power.next_tick_s() <= t_s) {
      const double tick = power.next_tick_s();
      std::fill(site_joules.begin(), site_joules.end(), 0.0);
      for (std::size_t i = 0; i < n_endpoints; ++i) {
        const std::size_t s = fleet.endpoints[i].site_index;
        sink.rtt_s = fleet.sites[s].network_rtt_s;
        engines[i]->Advance(tick, sink);
        site_joules[s] += engines[i]->joules_at_now();
      }
      const std::size_t bucket = ledgers.empty() ? 0 : ledgers[0].BucketOf(tick);
      for (std::size_t s = 0; s < n_sites; ++s) site_price[s] = grid.UsdPerMwh(fleet, s, bucket);
      power.Tick(site_joules, site_price, energy);
      if (control) {
        for (std::size_t i = 0; i < n_endpoints; ++i) {
          engines[i]->SetPowerCapWatts(power.caps()[fleet.endpoints[i].site_index]);
        }
      }
    }
  };

  Arrival a;
  std::uint64_t count = 0;
  while (stream.Next(&a)) {
    ++result.requests;
    ticks_until(a.t_s);
    if (options.progress && (++count & 0xFFFF) == 0) options.progress(a.t_s / options.duration_s);
    for (std::size_t i = 0; i < n_endpoints; ++i) {
      sink.rtt_s = fleet.sites[fleet.endpoints[i].site_index].network_rtt_s;
      engines[i]->Advance(a.t_s, sink);
      loads[i] = engines[i]->Load();
      index.Update(static_cast<std::uint32_t>(i), fleet.endpoints[i], loads[i]);
    }
    const std::size_t bucket = ledgers.empty() ? 0 : ledgers[0].BucketOf(a.t_s);
    if (bucket != price_bucket) {
      price_bucket = bucket;
      for (std::size_t s = 0; s < n_sites; ++s) energy[s].usd_per_mwh = grid.UsdPerMwh(fleet, s, bucket);
    }
    const SimTenant& tenant = fleet.tenants[a.tenant];
    core::Request req;
    req.model_index = 0;
    req.prompt_tokens = a.prompt_tokens;
    req.expected_output_tokens = options.learn_output_lengths
                                     ? output_lengths[a.tenant].Expected()
                                     : options.expected_output_tokens;
    req.allowed_jurisdictions = tenant.jurisdictions;
    req.priority = tenant.priority;
    req.ttft_target_s = tenant.ttft_target_s;
    req.tpot_target_s = tenant.tpot_target_s;
    auto candidate = [&](std::size_t i) {
      const core::Endpoint& e = fleet.endpoints[i];
      return e.model_index == req.model_index && fleet.Allowed(a.tenant, e.site_index) &&
             core::Admits(req, e, loads[i]);
    };
    std::int64_t chosen = -1;
    switch (policy) {
      case Policy::kRoundRobin:
        for (std::size_t k = 0; k < n_endpoints; ++k) {
          const std::size_t i = (rr_next + k) % n_endpoints;
          if (candidate(i)) {
            chosen = static_cast<std::int64_t>(i);
            rr_next = i + 1;
            break;
          }
        }
        break;
      case Policy::kLeastLoaded:
        for (std::size_t i = 0; i < n_endpoints; ++i) {
          if (candidate(i) && (chosen < 0 || LessLoaded(loads[i], loads[chosen]))) {
            chosen = static_cast<std::int64_t>(i);
          }
        }
        break;
      case Policy::kNearest:
      case Policy::kCheapestPrice: {
        // Best site first (by round trip, or by price now), least loaded endpoint within it.
        double best_key = std::numeric_limits<double>::infinity();
        for (std::size_t i = 0; i < n_endpoints; ++i) {
          if (!candidate(i)) continue;
          const std::size_t s = fleet.endpoints[i].site_index;
          const double key = policy == Policy::kNearest ? fleet.sites[s].network_rtt_s
                                                        : energy[s].usd_per_mwh;
          if (chosen < 0 || key < best_key ||
              (key == best_key && LessLoaded(loads[i], loads[chosen]))) {
            chosen = static_cast<std::int64_t>(i);
            best_key = key;
          }
        }
        break;
      }
      case Policy::kPowerplane: {
        const core::Decision d = router.Route(req, view);
        if (d.placed) chosen = d.endpoint_index;
        break;
      }
    }
    if (chosen < 0) {
      ++result.dropped;
      continue;
    }
    const std::size_t site = fleet.endpoints[chosen].site_index;
    if (!fleet.Allowed(a.tenant, site)) ++result.residency_violations;
    if (!engines[chosen]->Add(a.id, a.tenant, a.prompt_tokens, a.output_tokens)) {
      ++result.dropped;  // larger than the endpoint's whole KV cache.
      continue;
    }
    result.trace_output_tokens_served += static_cast<std::uint64_t>(a.output_tokens);
  }
  ticks_until(options.duration_s);
  power.AddTo(&result);
  double horizon = options.duration_s;
  for (std::size_t i = 0; i < n_endpoints; ++i) {
    sink.rtt_s = fleet.sites[fleet.endpoints[i].site_index].network_rtt_s;
    engines[i]->Advance(std::max(engines[i]->virtual_now(), 0.0), sink);
    horizon = std::max(horizon, engines[i]->Drain(sink));
  }
  result.horizon_s = horizon;
  for (auto& e : engines) {
    e->CloseBooks(horizon);
    result.gpu_joules += e->joules_total();
  }
  result.site_bucket_joules.resize(n_sites);
  for (std::size_t s = 0; s < n_sites; ++s) {
    const auto& j = ledgers[s].joules();
    result.site_bucket_joules[s] = j;
    for (std::size_t b = 0; b < j.size(); ++b) {
      const double facility = j[b] * fleet.sites[s].pue;
      result.facility_joules += facility;
      result.energy_cost_usd += core::EnergyCostUsd(j[b], grid.UsdPerMwh(fleet, s, b),
                                                    fleet.sites[s].pue);
    }
  }
  for (const auto& e : fleet.endpoints) {
    result.hardware_cost_usd += e.hardware_usd_per_hour * horizon / 3600.0;
  }
  if (options.progress) options.progress(1.0);
  return result;
}

}  // namespace powerplane::sim
