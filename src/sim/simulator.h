#pragma once
// The twin's main loop: arrivals in time order; before each, every endpoint's AnalyticEngine is
// advanced to the arrival; the policy picks an endpoint from the loads at that instant (or none:
// the request is dropped); after the last arrival the engines drain. Energy is booked per site in
// time buckets and priced with the site's price at each bucket's start. Pure: no clocks, no I/O;
// randomness only in the (seeded) arrivals.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/grid_event.h"
#include "grid/time.h"
#include "sim/arrivals.h"
#include "sim/metrics.h"
#include "sim/sim_fleet.h"

namespace powerplane::sim {

enum class Policy { kRoundRobin, kLeastLoaded, kNearest, kCheapestPrice, kPowerplane };

std::string_view ToString(Policy p);
bool ParsePolicy(std::string_view name, Policy* out);
std::vector<Policy> AllPolicies();

struct SimOptions {
  grid::UtcTime start;             // UTC instant of virtual time 0.
  double duration_s = 3600;        // arrivals window.
  double bucket_s = 300;           // energy and price granularity (5 min).
  int expected_output_tokens = 256;  // what the router plans for (the gateway's default).
  // Plan with each tenant's output length learned from its finished requests (as the gateway
  // does), starting from expected_output_tokens; false = always the default.
  bool learn_output_lengths = true;
  // Grid events (UTC). Policy `powerplane` runs core::FlexController every flex_tick_s on them
  // and on the fleet's miners, wind and import limits; every policy is metered against them.
  std::vector<core::GridEvent> events;
  double flex_tick_s = 1;
  double power_plot_step_s = 0;  // resolution of the power plot; 0 = the window / 1,500.
  // Called now and then with the fraction of the arrivals window done (may be empty).
  std::function<void(double)> progress;
};

// Prices per site per bucket, sampled at each bucket's start (UTC = start - offset + b * bucket_s).
struct PriceGrid {
  double bucket_s = 300;
  double offset_s = 0;  // start's seconds past a bucket boundary (epoch-aligned buckets).
  grid::UtcTime start;
  grid::UtcTime BucketStart(std::size_t b) const;
  double UsdPerMwh(const SimFleet& fleet, std::size_t site, std::size_t bucket) const;
};
PriceGrid MakePriceGrid(const SimOptions& options);

// Runs one policy over the arrivals `stream` produces. The fleet must outlive the call. Site
// power is metered and (policy `powerplane`) controlled over the arrivals window only, not the
// drain after it.
PolicyResult RunPolicy(const SimFleet& fleet, ArrivalStream stream, Policy policy,
                       const SimOptions& options);

}  // namespace powerplane::sim
