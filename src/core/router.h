#pragma once
// Router v1: one request and a fleet view in, one decision with its reasons out. Pure.
//
// 1. filter: model, health, the tenant's jurisdictions, endpoint admission capacity;
// 2. predict: time to first token (network + queue + prefill), time per output token at b+1;
// 3. drop candidates that would miss the targets when at least one candidate meets them;
// 4. score the rest by marginal cost per token (core/cost_model.h) and choose the lowest.

#include <cstdint>
#include <string>

#include "core/cost_model.h"
#include "core/types.h"

namespace powerplane::core {

// Why nothing was placed (kNone when something was).
enum class NoPlacement {
  kNone,
  kModelNotServed,     // no endpoint anywhere serves the model.
  kResidency,          // the model is served, but not in any jurisdiction the tenant allows.
  kAllUnhealthy,       // allowed endpoints exist but none is healthy.
  kAllAtCapacity,      // healthy allowed endpoints exist but none admits another request.
};
std::string_view ToString(NoPlacement n);

// How many endpoints each filter removed.
struct FilterCounts {
  int wrong_model = 0;
  int residency = 0;
  int unhealthy = 0;
  int at_capacity = 0;
  int shed = 0;  // at a site shedding low-priority work, or pausing batch-class work.
};

struct Decision {
  bool placed = false;
  std::uint32_t endpoint_index = 0;
  std::uint32_t site_index = 0;
  CostBreakdown score;             // of the chosen endpoint.
  bool meets_targets = false;      // the chosen endpoint is predicted to meet TTFT and TPOT.
  // Endpoints that passed the filters. With a RouteIndex, of those the router visited: it skips
  // whole cells it can bound out, so this and the unhealthy and at-capacity counts may be lower
  // than a full scan's (the model, residency and shed counts are whole; with nothing placed,
  // every count is).
  int candidates = 0;
  // Candidates scored: the router stops scoring when no candidate left could change the best
  // or the runner-up (router.cc), so this may be fewer than `candidates`.
  int scored = 0;
  int candidates_meeting_targets = 0;  // of those scored.
  bool at_steered_site = false;    // placed where power is short: nowhere else would do.
  double runner_up_usd_per_token = 0;  // the next best candidate's cost (0 when none).
  FilterCounts filtered;
  NoPlacement why_not = NoPlacement::kNone;

  // One line for logs: what was chosen and why, or why nothing was.
  std::string Explain(const FleetView& fleet) const;
};

// The share of a latency target the router plans to use (the rest absorbs variance).
inline constexpr double kTargetHeadroom = 0.6;

// Predicted to meet the request's latency targets, with headroom.
bool MeetsTargets(const Request& request, const CostBreakdown& score);

// Whether the endpoint can admit one more request of this size (queue and KV capacity).
bool Admits(const Request& request, const Endpoint& endpoint, const EndpointLoad& load);

class Router {
 public:
  Decision Route(const Request& request, const FleetView& fleet) const;
};

}  // namespace powerplane::core
