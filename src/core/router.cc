#include "core/router.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <limits>

namespace powerplane::core {
namespace {

constexpr std::size_t kMaxSitesOnStack = 256;
constexpr std::size_t kMaxEndpointsOnStack = 4096;

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

  void Offer(double c, std::size_t i) {
    if (c < cost) {
      second = cost;
      cost = c;
      index = static_cast<std::int64_t>(i);
    } else if (c < second) {
      second = c;
    }
  }
  double RunnerUp() const { return second == std::numeric_limits<double>::infinity() ? 0 : second; }
};

// Candidates that could meet the targets, grouped by batch and price (router pass 1).
constexpr int kBatchBuckets = 16;
constexpr int kBatchBucketWidth = 16;  // batches per bucket; the last bucket takes the rest.
constexpr int kPriceGroups = 4;        // sites split by price, cheapest first.
struct Bucket {
  std::int32_t head = -1;  // first candidate; the rest through `next`.
  int top = 0;             // the largest batch a candidate in it joins.
  double least_usd_per_joule = std::numeric_limits<double>::infinity();
};

// What the router needs of a site for one request, worked out once per site.
struct SiteTerms {
  bool allowed = false;  // in one of the tenant's jurisdictions.
  bool refuses = false;  // shedding and this request is not interactive, or pausing batch work.
  bool steered = false;
  // USD per joule of GPU energy (price x PUE); the energy cost of a token is at least the
  // prefill share times this when the price is not negative.
  double usd_per_joule = 0;
  bool price_negative = false;
  int price_group = 0;  // 0..kPriceGroups-1 by usd_per_joule among the allowed sites.
};

// The largest batch at which a request could still meet its TPOT target, per GPU model (a fleet
// has few): endpoints fuller than that are passed over once some candidate meets the targets.
class BatchLimits {
 public:
  BatchLimits(const RequestShape& shape, double tpot_limit_s)
      : shape_(shape), tpot_limit_s_(tpot_limit_s) {}
  int For(const GpuModel* gpu) {
    for (int i = 0; i < used_; ++i) {
      if (gpus_[i] == gpu) return limits_[i];
    }
    const int limit = gpu->LargestBatchWithin(
        tpot_limit_s_, shape_.inverse_expected_output * gpu->PrefillSeconds(shape_.prompt_tokens));
    if (used_ < kSlots) {
      gpus_[used_] = gpu;
      limits_[used_++] = limit;
    }
    return limit;
  }

 private:
  static constexpr int kSlots = 8;
  const RequestShape& shape_;
  double tpot_limit_s_;
  std::array<const GpuModel*, kSlots> gpus_{};
  std::array<int, kSlots> limits_{};
  int used_ = 0;
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
  // Residency, steering and the price are worked out once per site, not per endpoint.
  std::array<SiteTerms, kMaxSitesOnStack> terms_small;
  std::vector<SiteTerms> terms_large;
  SiteTerms* terms = terms_small.data();
  if (fleet.sites.size() > kMaxSitesOnStack) {
    terms_large.resize(fleet.sites.size());
    terms = terms_large.data();
  }
  for (std::size_t s = 0; s < fleet.sites.size(); ++s) {
    const EnergyState& energy = fleet.site_energy[s];
    SiteTerms& t = terms[s];
    t.allowed = SiteAllowed(request, fleet.sites[s]);
    t.refuses = (energy.shed_low_priority && request.priority != PriorityClass::kInteractive) ||
                (energy.pause_deferrable && request.priority == PriorityClass::kBatch);
    t.steered = energy.steer_away;
    t.usd_per_joule = energy.usd_per_mwh * fleet.sites[s].pue * (1.0 / kJoulesPerMwh);
    t.price_negative = energy.usd_per_mwh < 0;
  }
  double least_price = std::numeric_limits<double>::infinity();
  double most_price = -std::numeric_limits<double>::infinity();
  for (std::size_t s = 0; s < fleet.sites.size(); ++s) {
    if (!terms[s].allowed) continue;
    least_price = std::min(least_price, terms[s].usd_per_joule);
    most_price = std::max(most_price, terms[s].usd_per_joule);
  }
  if (most_price > least_price) {
    const double per_group = kPriceGroups / (most_price - least_price);
    for (std::size_t s = 0; s < fleet.sites.size(); ++s) {
      terms[s].price_group = std::clamp(
          static_cast<int>((terms[s].usd_per_joule - least_price) * per_group), 0, kPriceGroups - 1);
    }
  }
  const RequestShape shape = ShapeOf(request);
  const double ttft_limit = kTargetHeadroom * request.ttft_target_s;
  const double tpot_limit = kTargetHeadroom * request.tpot_target_s;

  // Candidates at sites steered away (over their power budget) are kept apart and used only
  // when no other site has one; latency targets come first. So the choice is the best of the
  // first non-empty of: meeting, steered_meeting, missing, steered_missing.
  Best meeting, steered_meeting, missing, steered_missing;
  BatchLimits batch_limits(shape, tpot_limit);

  // Scores candidate i and offers it to the list it belongs to, unless it cannot matter.
  const auto score = [&](std::size_t i) {
    const Endpoint& e = fleet.endpoints[i];
    const SiteTerms& site = terms[e.site_index];
    const Timing t = PredictTiming(shape, fleet.sites[e.site_index], e, fleet.loads[i]);
    const bool meets = t.ttft_s <= ttft_limit && t.tpot_s <= tpot_limit;
    ++d.scored;
    d.candidates_meeting_targets += meets;
    // Once a candidate meets the targets, none that misses them can be chosen.
    if (!meets && (meeting.index >= 0 || steered_meeting.index >= 0)) return;
    Best& best = meets ? (site.steered ? steered_meeting : meeting)
                       : (site.steered ? steered_missing : missing);
    // Skip the energy model when even a lower bound on the cost cannot change the best or the
    // runner-up: hardware per token plus the prefill's energy (decode energy is not negative
    // at a price that is not).
    if (!site.price_negative) {
      const double floor =
          HardwareUsdPerToken(e, t) + site.usd_per_joule * e.gpu->JoulesPerPromptToken() *
                                          shape.prompt_tokens * shape.inverse_expected_output;
      if (floor >= best.second) return;
    }
    CostBreakdown c;
    CostFromTiming(shape, fleet.sites[e.site_index], fleet.site_energy[e.site_index].usd_per_mwh,
                   e, t, &c);
    best.Offer(c.total_usd_per_token, i);
  };

  // Pass 1: the filters, counted. Candidates that could meet the TPOT target at all go into
  // buckets by the batch they would join and their site's price; the rest into `too_full`,
  // scored only when nothing meets the targets. The lists are linked through `next`.
  std::array<Bucket, kBatchBuckets * kPriceGroups> buckets;
  std::int32_t too_full = -1;
  std::array<std::int32_t, kMaxEndpointsOnStack> next_small;
  std::vector<std::int32_t> next_large;
  std::int32_t* next = next_small.data();
  if (fleet.endpoints.size() > kMaxEndpointsOnStack) {
    next_large.resize(fleet.endpoints.size());
    next = next_large.data();
  }
  const GpuModel* only_gpu = nullptr;
  for (std::size_t i = 0; i < fleet.endpoints.size() && only_gpu == nullptr; ++i) {
    if (fleet.endpoints[i].model_index == request.model_index) only_gpu = fleet.endpoints[i].gpu.get();
  }
  bool bound_holds = true;  // see pass 2.
  double least_hardware_usd_per_hour = std::numeric_limits<double>::infinity();
  double least_context = std::numeric_limits<double>::infinity();  // of a candidate's others.
  double most_context = 0;

  for (std::size_t i = 0; i < fleet.endpoints.size(); ++i) {
    const Endpoint& e = fleet.endpoints[i];
    const EndpointLoad& load = fleet.loads[i];
    if (e.model_index != request.model_index) {
      ++d.filtered.wrong_model;
      continue;
    }
    const SiteTerms& site = terms[e.site_index];
    if (!site.allowed) {
      ++d.filtered.residency;
      continue;
    }
    if (!load.healthy) {
      ++d.filtered.unhealthy;
      continue;
    }
    if (site.refuses) {
      ++d.filtered.shed;
      continue;
    }
    if (!Admits(request, e, load)) {
      ++d.filtered.at_capacity;
      continue;
    }
    ++d.candidates;
    const int batch = std::min(load.running + load.waiting + 1, e.max_batch);
    const auto index = static_cast<std::int32_t>(i);
    if (batch > batch_limits.For(e.gpu.get())) {
      next[i] = too_full;
      too_full = index;
      continue;
    }
    const int batch_bucket = std::min(kBatchBuckets - 1, batch / kBatchBucketWidth);
    Bucket& bucket = buckets[site.price_group * kBatchBuckets + batch_bucket];
    next[i] = bucket.head;
    bucket.head = index;
    bucket.top = std::max(bucket.top, batch);
    bucket.least_usd_per_joule = std::min(bucket.least_usd_per_joule, site.usd_per_joule);
    // Fleet-wide extremes (cheaper to keep than per bucket, and still bounds).
    least_hardware_usd_per_hour = std::min(least_hardware_usd_per_hour, e.hardware_usd_per_hour);
    const double others_context =
        load.mean_context_tokens > 0 ? load.mean_context_tokens : shape.own_context_tokens;
    least_context = std::min(least_context, others_context);
    most_context = std::max(most_context, others_context);
    bound_holds = bound_holds && e.gpu.get() == only_gpu;
  }

  // Pass 2: the buckets in order of a lower bound on the cost of their candidates; once a
  // bucket's bound is no lower than the runner-up among those meeting the targets, no candidate
  // left can change the choice. The bound holds for one GPU model whose step per sequence falls
  // and whose power rises with the batch. A candidate joining batch b in [lo, top] has a mean
  // context between ((b - 1) x the least (most) context of the others + its own) / b, each
  // extreme at lo or at top; so its step per token is at least S = StepSeconds(top, ctx_lo) / top
  // and at most StepSeconds(lo, ctx_hi) / lo, and its decode power is at least the reference
  // power at lo and at most the board limit. Its cost is at least
  //   least hardware x S + least price x (decode + prefill joules per output token)
  // with the decode joules taken at their least for a price that is not negative, else at most.
  std::array<std::pair<double, int>, kBatchBuckets * kPriceGroups> order;
  int filled = 0;
  for (int k = 0; k < static_cast<int>(buckets.size()); ++k) {
    const Bucket& bucket = buckets[k];
    if (bucket.head < 0) continue;
    const int lo = std::max(1, (k % kBatchBuckets) * kBatchBucketWidth);
    double bound = -std::numeric_limits<double>::infinity();
    if (bound_holds) {
      const auto context_at = [&](int b, double others) {
        return ((b - 1) * others + shape.own_context_tokens) * only_gpu->InverseBatch(b);
      };
      const double low_context = std::min(context_at(lo, least_context),
                                          context_at(bucket.top, least_context));
      const double least_step_per_token = only_gpu->StepSeconds(bucket.top, low_context) *
                                          only_gpu->InverseBatch(bucket.top);
      double decode_joules = 0;
      if (bucket.least_usd_per_joule >= 0) {
        if (only_gpu->WattsRiseWithBatch()) {
          decode_joules = only_gpu->DecodeWatts(lo, 0) * least_step_per_token;
        }
      } else {
        const double high_context = std::max(context_at(lo, most_context),
                                             context_at(bucket.top, most_context));
        decode_joules = only_gpu->profile().max_watts *
                        only_gpu->StepSeconds(lo, high_context) *
                        only_gpu->InverseBatch(lo);
      }
      bound = least_hardware_usd_per_hour * (1.0 / 3600.0) * least_step_per_token +
              bucket.least_usd_per_joule *
                  (decode_joules + only_gpu->JoulesPerPromptToken() * shape.prompt_tokens *
                                       shape.inverse_expected_output);
    }
    order[filled++] = {bound, k};
  }
  std::sort(order.begin(), order.begin() + filled);
  for (int o = 0; o < filled; ++o) {
    if (meeting.index >= 0 && order[o].first >= meeting.second) break;
    for (std::int32_t i = buckets[order[o].second].head; i >= 0; i = next[i]) {
      score(static_cast<std::size_t>(i));
    }
  }
  // Pass 3: nothing meets the targets; the fullest candidates may still be the best of those.
  if (meeting.index < 0 && steered_meeting.index < 0) {
    for (std::int32_t i = too_full; i >= 0; i = next[i]) score(static_cast<std::size_t>(i));
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
                      : missing.index >= 0         ? missing
                                                   : steered_missing;
  d.endpoint_index = static_cast<std::uint32_t>(chosen.index);
  d.site_index = fleet.endpoints[d.endpoint_index].site_index;
  Score(shape, fleet.sites[d.site_index], fleet.site_energy[d.site_index].usd_per_mwh,
        fleet.endpoints[d.endpoint_index], fleet.loads[d.endpoint_index], &d.score);
  d.meets_targets = &chosen == &meeting || &chosen == &steered_meeting;
  d.at_steered_site = &chosen == &steered_meeting || &chosen == &steered_missing;
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
