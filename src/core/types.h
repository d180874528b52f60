#pragma once
// Value types of the domain: sites, endpoints, their load, requests. Plain data; no I/O.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/gpu_model.h"

namespace powerplane::core {

// How a tenant's work is treated when capacity or power is short.
enum class PriorityClass { kInteractive, kStandard, kBatch };

std::string_view ToString(PriorityClass c);
// Parses "interactive", "standard" or "batch"; false when the name is unknown.
bool ParsePriorityClass(std::string_view name, PriorityClass* out);

// A data-center site. Prices are per site (the grid node it buys at).
struct Site {
  std::string id;
  std::string jurisdiction;    // e.g. "US", "EU": what residency rules are checked against.
  double pue = 1.2;            // facility watts per IT watt.
  double network_rtt_s = 0.0;  // round trip from the gateway to the site.
};

// The live energy state of a site, refreshed from price feeds and overrides.
struct EnergyState {
  double usd_per_mwh = 0.0;  // effective marginal price now (may be negative).
  // Set by the FlexController when the site is over its power budget: new interactive work goes
  // to other sites where any meets its targets; non-interactive work is refused here.
  bool steer_away = false;
  bool shed_low_priority = false;
  // Set by the FlexController when the site's deferrable (batch-class) work is paused: new
  // batch-class requests are not placed here (they run elsewhere, or wait).
  bool pause_deferrable = false;
};

class RouteIndex;

// One inference server (an OpenAI-compatible engine on some GPUs).
struct Endpoint {
  std::string id;               // unique across the fleet, e.g. "granbury-tx/h200-3".
  std::uint32_t site_index = 0;  // into the fleet's sites.
  std::uint32_t model_index = 0; // into the fleet's model names.
  std::shared_ptr<const GpuModel> gpu;
  int max_batch = 256;                  // sequences decoded together.
  int max_queue = 256;                  // waiting requests admitted beyond max_batch.
  std::int64_t kv_token_capacity = 0;   // tokens of KV cache; 0 = unlimited.
  double hardware_usd_per_hour = 0.0;   // amortised cost of the endpoint's hardware.
};

// What the fleet knows of an endpoint's load right now.
struct EndpointLoad {
  int running = 0;                // sequences in the decode batch.
  int waiting = 0;                // admitted, not yet running.
  std::int64_t kv_tokens_used = 0;
  double mean_context_tokens = 0.0;  // mean context of running sequences; 0 = unknown.
  bool healthy = true;
};

// A request as the router sees it: sizes, rules and targets, already parsed and validated.
struct Request {
  std::uint32_t model_index = 0;
  int prompt_tokens = 0;
  int expected_output_tokens = 256;  // what the router plans for (max_tokens or a default).
  int max_output_tokens = 0;         // the client's cap; 0 = none.
  // Jurisdictions the tenant allows; empty means any.
  std::span<const std::string> allowed_jurisdictions;
  PriorityClass priority = PriorityClass::kInteractive;
  double ttft_target_s = 2.0;  // time to first token the tenant was promised.
  double tpot_target_s = 0.2;  // time per output token after the first.
};

// A consistent view of the fleet for one decision. Spans index in parallel:
// `site_energy[i]` belongs to `sites[i]`, `loads[j]` to `endpoints[j]`.
struct FleetView {
  std::span<const Site> sites;
  std::span<const EnergyState> site_energy;
  std::span<const Endpoint> endpoints;
  std::span<const EndpointLoad> loads;
  // Optional: an index of `endpoints` kept current with `loads` (core/route_index.h). With it
  // the router visits only the endpoints that could matter; without it, every endpoint.
  const RouteIndex* index = nullptr;
};

}  // namespace powerplane::core
