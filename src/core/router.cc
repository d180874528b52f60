#include "core/router.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <limits>

namespace powerplane::core {
namespace {

constexpr std::size_t kMaxSitesOnStack = 256;

bool SiteAllowed(const Request& request, const Site& site) {
  if (request.allowed_jurisdictions.empty()) return true;
  return std::find(request.allowed_jurisdictions.begin(), request.allowed_jurisdictions.end(),
                   site.jurisdiction) != request.allowed_jurisdictions.end();
}

// The lowest-cost candidate seen so far, and the cost of the next best.
struct Best {
  double cost = std::numeric_limits<double>::infinity();
  double second = std::numeric_limits<double>::infinity();
  std::int64_t index = -1;
  CostBreakdown score;

  void Offer(double c, std::size_t i, const CostBreakdown& s) {
    if (c < cost) {
      second = cost;
      cost = c;
      index = static_cast<std::int64_t>(i);
      score = s;
    } else if (c < second) {
      second = c;
    }
  }
  double RunnerUp() const { return second == std::numeric_limits<double>::infinity() ? 0 : second; }
};

}  // namespace

std::string_view ToString(NoPlacement n) {
  switch (n) {
    case NoPlacement::kNone:
      return "placed";
    case NoPlacement::kModelNotServed:
      return "model_not_served";
    case NoPlacement::kResidency:
      return "no_site_in_allowed_jurisdictions";
    case NoPlacement::kAllUnhealthy:
      return "no_healthy_endpoint";
    case NoPlacement::kAllAtCapacity:
      return "all_endpoints_at_capacity";
  }
  return "unknown";
}

bool MeetsTargets(const Request& request, const CostBreakdown& score) {
  // The predictions are means; a request's tail sees more prefill stalls than the mean. Plan with
  // headroom so that most requests, not half, meet their targets (measured with powerplane sim).
  return score.predicted_ttft_s <= kTargetHeadroom * request.ttft_target_s &&
         score.predicted_tpot_s <= kTargetHeadroom * request.tpot_target_s;
}

bool Admits(const Request& request, const Endpoint& endpoint, const EndpointLoad& load) {
  if (load.running + load.waiting >= endpoint.max_batch + endpoint.max_queue) return false;
  if (endpoint.kv_token_capacity > 0) {
    const std::int64_t need = request.prompt_tokens + request.expected_output_tokens;
    if (load.kv_tokens_used + need > endpoint.kv_token_capacity) return false;
  }
  return true;
}

Decision Router::Route(const Request& request, const FleetView& fleet) const {
  Decision d;
  // Residency is decided once per site, not per endpoint.
  std::array<bool, kMaxSitesOnStack> allowed_small{};
  std::vector<bool> allowed_large;
  const bool small = fleet.sites.size() <= kMaxSitesOnStack;
  if (!small) allowed_large.resize(fleet.sites.size());
  for (std::size_t s = 0; s < fleet.sites.size(); ++s) {
    const bool ok = SiteAllowed(request, fleet.sites[s]);
    if (small) {
      allowed_small[s] = ok;
    } else {
      allowed_large[s] = ok;
    }
  }

  // Candidates at sites steered away (over their power budget) are kept apart and used only
  // when no other site has one; latency targets come first.
  Best meeting, any, steered_meeting, steered_any;
  const RequestShape shape = ShapeOf(request);

  for (std::size_t i = 0; i < fleet.endpoints.size(); ++i) {
    const Endpoint& e = fleet.endpoints[i];
    const EndpointLoad& load = fleet.loads[i];
    if (e.model_index != request.model_index) {
      ++d.filtered.wrong_model;
      continue;
    }
    if (!(small ? allowed_small[e.site_index] : allowed_large[e.site_index])) {
      ++d.filtered.residency;
      continue;
    }
    if (!load.healthy) {
      ++d.filtered.unhealthy;
      continue;
    }
    const EnergyState& energy = fleet.site_energy[e.site_index];
    if (energy.shed_low_priority && request.priority != PriorityClass::kInteractive) {
      ++d.filtered.shed;
      continue;
    }
    if (!Admits(request, e, load)) {
      ++d.filtered.at_capacity;
      continue;
    }
    ++d.candidates;
    CostBreakdown c;
    Score(shape, fleet.sites[e.site_index], energy.usd_per_mwh, e, load, &c);
    const bool meets = MeetsTargets(request, c);
    if (meets) ++d.candidates_meeting_targets;
    if (energy.steer_away) {
      if (meets) steered_meeting.Offer(c.total_usd_per_token, i, c);
      steered_any.Offer(c.total_usd_per_token, i, c);
    } else {
      if (meets) meeting.Offer(c.total_usd_per_token, i, c);
      any.Offer(c.total_usd_per_token, i, c);
    }
  }

  if (d.candidates == 0) {
    const FilterCounts& f = d.filtered;
    const int served = static_cast<int>(fleet.endpoints.size()) - f.wrong_model;
    if (served == 0) {
      d.why_not = NoPlacement::kModelNotServed;
    } else if (f.residency == served) {
      d.why_not = NoPlacement::kResidency;
    } else if (f.at_capacity == 0 && f.shed == 0) {
      d.why_not = NoPlacement::kAllUnhealthy;
    } else {
      d.why_not = NoPlacement::kAllAtCapacity;
    }
    return d;
  }
  d.placed = true;
  const Best& chosen = meeting.index >= 0           ? meeting
                      : steered_meeting.index >= 0 ? steered_meeting
                      : any.index >= 0             ? any
                                                   : steered_any;
  d.endpoint_index = static_cast<std::uint32_t>(chosen.index);
  d.site_index = fleet.endpoints[d.endpoint_index].site_index;
  d.score = chosen.score;
  d.meets_targets = &chosen == &meeting || &chosen == &steered_meeting;
  d.at_steered_site = &chosen == &steered_meeting || &chosen == &steered_any;
  d.runner_up_usd_per_token = chosen.RunnerUp();
  return d;
}

std::string Decision::Explain(const FleetView& fleet) const {
  char buf[512];
  if (!placed) {
    std::snprintf(buf, sizeof buf,
                  "not placed: %.*s (filtered: model %d, residency %d, unhealthy %d, capacity %d)",
                  static_cast<int>(ToString(why_not).size()), ToString(why_not).data(),
                  filtered.wrong_model, filtered.residency, filtered.unhealthy,
                  filtered.at_capacity);
    return buf;
  }
  const Endpoint& e = fleet.endpoints[endpoint_index];
  std::snprintf(buf, sizeof buf,
                "%s: %.3g USD/Mtok (energy %.3g + hardware %.3g) at %.1f USD/MWh, %.3f J/token, "
                "batch %d, ttft %.0f ms, tpot %.1f ms, %s; %d of %d candidates met targets; "
                "runner-up %.3g USD/Mtok",
                e.id.c_str(), score.total_usd_per_token * 1e6, score.energy_usd_per_token * 1e6,
                score.hardware_usd_per_token * 1e6, score.usd_per_mwh,
                score.joules_per_output_token, score.batch_after, score.predicted_ttft_s * 1e3,
                score.predicted_tpot_s * 1e3, meets_targets ? "meets targets" : "misses targets",
                candidates_meeting_targets, candidates, runner_up_usd_per_token * 1e6);
  return buf;
}

}  // namespace powerplane::core
