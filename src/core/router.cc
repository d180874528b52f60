#include "core/router.h"

#include "core/route_index.h"

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
// Every field is set for each site before use; no initializers, so that an array of them on the
// stack costs nothing to declare.
struct SiteTerms {
  bool allowed;  // in one of the tenant's jurisdictions.
  bool refuses;  // shedding and this request is not interactive, or pausing batch work.
  bool steered;
  // USD per joule of GPU energy (price x PUE); the energy cost of a token is at least the
  // prefill share times this when the price is not negative.
  double usd_per_joule;
  bool price_negative;
  int price_group;  // 0..kPriceGroups-1 by usd_per_joule among the allowed sites.
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

namespace {

// One routing decision in progress: the per-site terms, the best candidates found so far and
// the counts. ScanAll visits every endpoint; ScanIndexed only the cells of a RouteIndex whose
// bound could still change the choice. Both find the same endpoint (RouterPruningTest).
class Search {
 public:
  Search(const Request& request, const FleetView& fleet, Decision& d)
      : request_(request),
        fleet_(fleet),
        d_(d),
        shape_(ShapeOf(request)),
        ttft_limit_(kTargetHeadroom * request.ttft_target_s),
        tpot_limit_(kTargetHeadroom * request.tpot_target_s),
        batch_limits_(shape_, tpot_limit_) {
    // Residency, steering and the price are worked out once per site, not per endpoint.
    if (fleet.sites.size() > kMaxSitesOnStack) {
      terms_large_.resize(fleet.sites.size());
      terms_ = terms_large_.data();
    }
    for (std::size_t s = 0; s < fleet.sites.size(); ++s) {
      const EnergyState& energy = fleet.site_energy[s];
      SiteTerms& t = terms_[s];
      t.allowed = SiteAllowed(request, fleet.sites[s]);
      t.refuses = (energy.shed_low_priority && request.priority != PriorityClass::kInteractive) ||
                  (energy.pause_deferrable && request.priority == PriorityClass::kBatch);
      t.steered = energy.steer_away;
      t.usd_per_joule = energy.usd_per_mwh * fleet.sites[s].pue * (1.0 / kJoulesPerMwh);
      t.price_negative = energy.usd_per_mwh < 0;
      t.price_group = 0;  // set by ScanAll, the one path that buckets by price.
    }
  }

  void ScanAll();
  void ScanIndexed(const RouteIndex& index);
  void Finish();

 private:
  // What the bound of an index cell needs of a GPU model, per request. Set whole by TermsFor.
  struct GpuTerms {
    const GpuModel* gpu;
    int batch_limit;   // larger batches cannot meet the TPOT target.
    bool bounded;      // the bound holds for this GPU model.
    std::array<int, RouteIndex::kBuckets> lo;   // each bucket's least batch...
    std::array<int, RouteIndex::kBuckets> top;  // ...and its largest.
    std::array<double, RouteIndex::kBuckets> least_decode_watts;  // at lo (0: no bound).
    double prefill_joules_per_output;
  };
  // A lower bound on the cost per token of any candidate in bucket k of `group` at `site`.
  double CellBound(const RouteIndex::Group& group, const SiteTerms& site, const GpuTerms& gpu,
                   double others_context, int k) const;
  const GpuTerms& TermsFor(const GpuModel* gpu, int most_max_batch);
  void Score(std::size_t i);
  // Filters and scores the endpoints of one index cell.
  void Visit(const RouteIndex& index, const RouteIndex::Group& group, int bucket);
  bool AnyMeets() const { return meeting_.index >= 0 || steered_meeting_.index >= 0; }

  const Request& request_;
  const FleetView& fleet_;
  Decision& d_;
  const RequestShape shape_;
  const double ttft_limit_;
  const double tpot_limit_;
  std::array<SiteTerms, kMaxSitesOnStack> terms_small_;
  std::vector<SiteTerms> terms_large_;
  SiteTerms* terms_ = terms_small_.data();
  // Candidates at sites steered away (over their power budget) are kept apart and used only
  // when no other site has one; latency targets come first. So the choice is the best of the
  // first non-empty of: meeting, steered_meeting, missing, steered_missing.
  Best meeting_, steered_meeting_, missing_, steered_missing_;
  BatchLimits batch_limits_;
  FilterCounts filtered_;
  int candidates_ = 0;
  std::array<GpuTerms, 4> gpu_terms_;  // a fleet has few GPU models; more share the scratch.
  int gpu_terms_used_ = 0;
  GpuTerms scratch_gpu_terms_;
};

// Scores candidate i and offers it to the list it belongs to, unless it cannot matter.
void Search::Score(std::size_t i) {
  const Endpoint& e = fleet_.endpoints[i];
  const SiteTerms& site = terms_[e.site_index];
  const Timing t = PredictTiming(shape_, fleet_.sites[e.site_index], e, fleet_.loads[i]);
  const bool meets = t.ttft_s <= ttft_limit_ && t.tpot_s <= tpot_limit_;
  ++d_.scored;
  d_.candidates_meeting_targets += meets;
  // Once a candidate meets the targets, none that misses them can be chosen.
  if (!meets && AnyMeets()) return;
  Best& best = meets ? (site.steered ? steered_meeting_ : meeting_)
                     : (site.steered ? steered_missing_ : missing_);
  // Skip the energy model when even a lower bound on the cost cannot change the best or the
  // runner-up: hardware per token plus the prefill's energy (decode energy is not negative at a
  // price that is not).
  if (!site.price_negative) {
    const double floor =
        HardwareUsdPerToken(e, t) + site.usd_per_joule * e.gpu->JoulesPerPromptToken() *
                                        shape_.prompt_tokens * shape_.inverse_expected_output;
    if (floor >= best.second) return;
  }
  CostBreakdown c;
  CostFromTiming(shape_, fleet_.sites[e.site_index], fleet_.site_energy[e.site_index].usd_per_mwh,
                 e, t, &c);
  best.Offer(c.total_usd_per_token, i);
}

void Search::ScanAll() {
  // The sites' price groups, by price among the allowed sites.
  double least_price = std::numeric_limits<double>::infinity();
  double most_price = -std::numeric_limits<double>::infinity();
  for (std::size_t s = 0; s < fleet_.sites.size(); ++s) {
    if (!terms_[s].allowed) continue;
    least_price = std::min(least_price, terms_[s].usd_per_joule);
    most_price = std::max(most_price, terms_[s].usd_per_joule);
  }
  if (most_price > least_price) {
    const double per_group = kPriceGroups / (most_price - least_price);
    for (std::size_t s = 0; s < fleet_.sites.size(); ++s) {
      terms_[s].price_group =
          std::clamp(static_cast<int>((terms_[s].usd_per_joule - least_price) * per_group), 0,
                     kPriceGroups - 1);
    }
  }
  // Pass 1: the filters, counted. Candidates that could meet the TPOT target at all go into
  // buckets by the batch they would join and their site's price; the rest into the last bucket,
  // scored only when nothing meets the targets. The lists are linked through `next`.
  constexpr int kTooFull = kBatchBuckets * kPriceGroups;
  std::array<Bucket, kTooFull + 1> buckets;
  std::array<std::int32_t, kMaxEndpointsOnStack> next_small;
  std::vector<std::int32_t> next_large;
  std::int32_t* next = next_small.data();
  if (fleet_.endpoints.size() > kMaxEndpointsOnStack) {
    next_large.resize(fleet_.endpoints.size());
    next = next_large.data();
  }
  const GpuModel* only_gpu = nullptr;
  for (std::size_t i = 0; i < fleet_.endpoints.size() && only_gpu == nullptr; ++i) {
    if (fleet_.endpoints[i].model_index == request_.model_index) {
      only_gpu = fleet_.endpoints[i].gpu.get();
    }
  }
  bool bound_holds = only_gpu != nullptr && only_gpu->StepPerSequenceFalls();  // see pass 2.
  double least_hardware_usd_per_hour = std::numeric_limits<double>::infinity();
  double least_context = std::numeric_limits<double>::infinity();  // of a candidate's others.
  double most_context = 0;

  // The filters are evaluated without branches: which endpoints pass is as irregular as the
  // fleet, and a mispredicted branch costs more than evaluating them all.
  FilterCounts filtered;
  int candidates = 0;
  const std::int64_t kv_need = request_.prompt_tokens + request_.expected_output_tokens;
  for (std::size_t i = 0; i < fleet_.endpoints.size(); ++i) {
    const Endpoint& e = fleet_.endpoints[i];
    const EndpointLoad& load = fleet_.loads[i];
    const SiteTerms& site = terms_[e.site_index];
    const bool model = e.model_index == request_.model_index;
    const bool allowed = model & site.allowed;
    const bool healthy = allowed & load.healthy;
    const bool served = healthy & !site.refuses;
    const bool admits =
        served & (load.running + load.waiting < e.max_batch + e.max_queue) &
        ((e.kv_token_capacity <= 0) | (load.kv_tokens_used + kv_need <= e.kv_token_capacity));
    filtered.wrong_model += !model;
    filtered.residency += model & !site.allowed;
    filtered.unhealthy += allowed & !load.healthy;
    filtered.shed += healthy & site.refuses;
    filtered.at_capacity += served & !admits;
    if (!admits) continue;
    ++candidates;
    const int batch = std::min(load.running + load.waiting + 1, e.max_batch);
    // Too full to meet the TPOT target, or into its bucket, chosen without a branch.
    const int batch_bucket = std::min(kBatchBuckets - 1, batch / kBatchBucketWidth);
    const int slot = batch > batch_limits_.For(e.gpu.get())
                         ? kTooFull
                         : site.price_group * kBatchBuckets + batch_bucket;
    Bucket& bucket = buckets[slot];
    next[i] = bucket.head;
    bucket.head = static_cast<std::int32_t>(i);
    bucket.top = std::max(bucket.top, batch);
    bucket.least_usd_per_joule = std::min(bucket.least_usd_per_joule, site.usd_per_joule);
    // Fleet-wide extremes over every candidate, the too full included (cheaper to keep than per
    // bucket, and a wider range is still a bound).
    least_hardware_usd_per_hour = std::min(least_hardware_usd_per_hour, e.hardware_usd_per_hour);
    const double others_context =
        load.mean_context_tokens > 0 ? load.mean_context_tokens : shape_.own_context_tokens;
    least_context = std::min(least_context, others_context);
    most_context = std::max(most_context, others_context);
    bound_holds = bound_holds && e.gpu.get() == only_gpu;
  }
  filtered_ = filtered;
  candidates_ = candidates;

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
  for (int k = 0; k < kTooFull; ++k) {
    const Bucket& bucket = buckets[k];
    if (bucket.head < 0) continue;
    const int lo = std::max(1, (k % kBatchBuckets) * kBatchBucketWidth);
    double bound = -std::numeric_limits<double>::infinity();
    if (bound_holds) {
      const auto context_at = [&](int b, double others) {
        return ((b - 1) * others + shape_.own_context_tokens) * only_gpu->InverseBatch(b);
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
                  (decode_joules + only_gpu->JoulesPerPromptToken() * shape_.prompt_tokens *
                                       shape_.inverse_expected_output);
    }
    order[filled++] = {bound, k};
  }
  std::sort(order.begin(), order.begin() + filled);
  for (int o = 0; o < filled; ++o) {
    if (meeting_.index >= 0 && order[o].first >= meeting_.second) break;
    for (std::int32_t i = buckets[order[o].second].head; i >= 0; i = next[i]) {
      Score(static_cast<std::size_t>(i));
    }
  }
  // Pass 3: nothing meets the targets; the fullest candidates may still be the best of those.
  if (!AnyMeets()) {
    for (std::int32_t i = buckets[kTooFull].head; i >= 0; i = next[i]) {
      Score(static_cast<std::size_t>(i));
    }
  }
}

const Search::GpuTerms& Search::TermsFor(const GpuModel* gpu, int most_max_batch) {
  for (int g = 0; g < gpu_terms_used_; ++g) {
    if (gpu_terms_[g].gpu == gpu) return gpu_terms_[g];
  }
  GpuTerms& t = gpu_terms_used_ < static_cast<int>(gpu_terms_.size())
                    ? gpu_terms_[gpu_terms_used_++]
                    : scratch_gpu_terms_;
  t.gpu = gpu;
  t.batch_limit = batch_limits_.For(gpu);
  // The parts of CellBound that depend only on the GPU model and the bucket.
  t.bounded = gpu->StepPerSequenceFalls();
  const double max_watts = gpu->profile().max_watts;
  for (int k = 0; k < RouteIndex::kBuckets; ++k) {
    t.lo[k] = std::max(1, k * RouteIndex::kBucketWidth);
    t.top[k] = std::max(t.lo[k], k + 1 < RouteIndex::kBuckets
                                     ? (k + 1) * RouteIndex::kBucketWidth - 1
                                     : most_max_batch);
    t.least_decode_watts[k] =
        gpu->WattsRiseWithBatch() ? std::min(gpu->DecodeWatts(t.lo[k], 0), max_watts) : 0;
  }
  t.prefill_joules_per_output =
      gpu->JoulesPerPromptToken() * shape_.prompt_tokens * shape_.inverse_expected_output;
  return t;
}

// As ScanAll's pass 2 bounds a bucket, with the group's least context of the others: a candidate
// joining batch b in [lo, top] has a mean context of at least ((b - 1) x others + own) / b, at
// its least at lo or at top, so its step per token is at least StepSeconds(top, that) / top. The
// context is kept above zero, where StepSeconds is at its least.
double Search::CellBound(const RouteIndex::Group& group, const SiteTerms& site,
                         const GpuTerms& gpu, double others_context, int k) const {
  const GpuModel& model = *gpu.gpu;
  const int lo = gpu.lo[k], top = gpu.top[k];
  const double own = shape_.own_context_tokens;
  const double context =
      std::max(1e-9, std::min(((lo - 1) * others_context + own) * model.InverseBatch(lo),
                              ((top - 1) * others_context + own) * model.InverseBatch(top)));
  const double step_per_token = model.StepSeconds(top, context) * model.InverseBatch(top);
  return group.least_hardware_usd_per_hour * (1.0 / 3600.0) * step_per_token +
         site.usd_per_joule *
             (gpu.least_decode_watts[k] * step_per_token + gpu.prefill_joules_per_output);
}

void Search::Visit(const RouteIndex& index, const RouteIndex::Group& group, int bucket) {
  const std::int64_t kv_need = request_.prompt_tokens + request_.expected_output_tokens;
  for (std::int32_t i = group.head[bucket]; i >= 0; i = index.next(static_cast<std::uint32_t>(i))) {
    const Endpoint& e = fleet_.endpoints[i];
    const EndpointLoad& load = fleet_.loads[i];
    if (!load.healthy) {
      ++filtered_.unhealthy;
      continue;
    }
    if (load.running + load.waiting >= e.max_batch + e.max_queue ||
        (e.kv_token_capacity > 0 && load.kv_tokens_used + kv_need > e.kv_token_capacity)) {
      ++filtered_.at_capacity;
      continue;
    }
    ++candidates_;
    Score(static_cast<std::size_t>(i));
  }
}

void Search::ScanIndexed(const RouteIndex& index) {
  // The groups in a min-heap by a lower bound on the cost of any of their candidates, which takes
  // one step time per group. A popped group has its cells (non-empty buckets) bounded one by one
  // and visited in that order while their bound is below the runner-up among those meeting the
  // targets; the search ends when the least group bound reaches it. So only the groups that
  // could matter have their cells bounded and visited.
  struct Open {
    double bound;
    std::int32_t group;
    double others_context;
  };
  const auto after = [](const Open& a, const Open& b) { return a.bound > b.bound; };
  const auto& groups = index.groups();
  constexpr std::size_t kGroupsOnStack = 512;
  std::array<Open, kGroupsOnStack> open_small;
  std::vector<Open> open_large;
  Open* open = open_small.data();
  if (groups.size() > kGroupsOnStack) {
    open_large.resize(groups.size());
    open = open_large.data();
  }
  std::size_t open_count = 0;
  constexpr double kUnbounded = -std::numeric_limits<double>::infinity();
  const double own = shape_.own_context_tokens;
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const RouteIndex::Group& group = groups[g];
    if (group.model != request_.model_index) {
      filtered_.wrong_model += group.size;
      continue;
    }
    const SiteTerms& site = terms_[group.site];
    if (!site.allowed) {
      filtered_.residency += group.size;
      continue;
    }
    if (site.refuses) {
      // Counted as a scan counts them: an unhealthy endpoint is unhealthy before it is shed.
      for (std::uint32_t i : index.members(g)) {
        (fleet_.loads[i].healthy ? filtered_.shed : filtered_.unhealthy) += 1;
      }
      continue;
    }
    // The least context a candidate's others can have (PredictTiming takes a request's own
    // context for an endpoint that does not know its mean).
    const double others_context =
        std::min(group.least_context_tokens,
                 group.unknown_context > 0 ? own : std::numeric_limits<double>::infinity());
    Open entry{kUnbounded, static_cast<std::int32_t>(g), others_context};
    if (group.gpu != nullptr) {
      const GpuTerms& gpu = TermsFor(group.gpu, index.most_max_batch());
      // The lowest and highest buckets with candidates that could meet the TPOT target.
      int low = -1, high = -1;
      for (int k = 0; k < RouteIndex::kBuckets && gpu.lo[k] <= gpu.batch_limit; ++k) {
        if (group.count[k] == 0) continue;
        if (low < 0) low = k;
        high = k;
      }
      if (low < 0) continue;  // only too-full candidates: visited when nothing meets (below).
      if (gpu.bounded && !site.price_negative) {
        // CellBound over every bucket at once: the step per token at least at the highest
        // bucket's top and the least context, the power at least at the lowest bucket's lo.
        const GpuModel& model = *group.gpu;
        const int top = gpu.top[high];
        const double context = std::max(
            1e-9, std::min(own, ((top - 1) * others_context + own) * model.InverseBatch(top)));
        const double step_per_token = model.StepSeconds(top, context) * model.InverseBatch(top);
        entry.bound = group.least_hardware_usd_per_hour * (1.0 / 3600.0) * step_per_token +
                      site.usd_per_joule * (gpu.least_decode_watts[low] * step_per_token +
                                            gpu.prefill_joules_per_output);
      }
    }
    open[open_count++] = entry;
  }
  const auto can_stop = [&](double bound) {
    return meeting_.index >= 0 && bound >= meeting_.second;
  };
  std::make_heap(open, open + open_count, after);
  while (open_count > 0 && !can_stop(open[0].bound)) {
    std::pop_heap(open, open + open_count, after);
    const Open o = open[--open_count];
    const RouteIndex::Group& group = groups[o.group];
    const SiteTerms& site = terms_[group.site];
    const GpuTerms* gpu = group.gpu ? &TermsFor(group.gpu, index.most_max_batch()) : nullptr;
    const bool bounded = gpu && gpu->bounded && !site.price_negative;
    std::array<std::pair<double, int>, RouteIndex::kBuckets> cells;
    int cell_count = 0;
    for (int k = 0; k < RouteIndex::kBuckets; ++k) {
      if (group.count[k] == 0) continue;
      if (gpu && gpu->lo[k] > gpu->batch_limit) break;  // too full: see below.
      cells[cell_count++] = {bounded ? CellBound(group, site, *gpu, o.others_context, k)
                                     : kUnbounded,
                             k};
    }
    std::sort(cells.begin(), cells.begin() + cell_count);
    for (int c = 0; c < cell_count && !can_stop(cells[c].first); ++c) {
      Visit(index, group, cells[c].second);
    }
  }
  // Nothing meets the targets (so every cell above was visited): the fullest candidates may
  // still be the best of those.
  if (!AnyMeets()) {
    for (std::size_t g = 0; g < groups.size(); ++g) {
      const RouteIndex::Group& group = groups[g];
      const SiteTerms& site = terms_[group.site];
      if (group.model != request_.model_index || !site.allowed || site.refuses || !group.gpu) {
        continue;
      }
      const GpuTerms& gpu = TermsFor(group.gpu, index.most_max_batch());
      for (int k = 0; k < RouteIndex::kBuckets; ++k) {
        if (group.count[k] > 0 && gpu.lo[k] > gpu.batch_limit) Visit(index, group, k);
      }
    }
  }
}

void Search::Finish() {
  d_.filtered = filtered_;
  d_.candidates = candidates_;
  if (candidates_ == 0) {
    const FilterCounts& f = filtered_;
    const int served = static_cast<int>(fleet_.endpoints.size()) - f.wrong_model;
    if (served == 0) {
      d_.why_not = NoPlacement::kModelNotServed;
    } else if (f.residency == served) {
      d_.why_not = NoPlacement::kResidency;
    } else if (f.at_capacity == 0 && f.shed == 0) {
      d_.why_not = NoPlacement::kAllUnhealthy;
    } else {
      d_.why_not = NoPlacement::kAllAtCapacity;
    }
    return;
  }
  d_.placed = true;
  const Best& chosen = meeting_.index >= 0           ? meeting_
                       : steered_meeting_.index >= 0 ? steered_meeting_
                       : missing_.index >= 0         ? missing_
                                                     : steered_missing_;
  d_.endpoint_index = static_cast<std::uint32_t>(chosen.index);
  d_.site_index = fleet_.endpoints[d_.endpoint_index].site_index;
  core::Score(shape_, fleet_.sites[d_.site_index], fleet_.site_energy[d_.site_index].usd_per_mwh,
        fleet_.endpoints[d_.endpoint_index], fleet_.loads[d_.endpoint_index], &d_.score);
  d_.meets_targets = &chosen == &meeting_ || &chosen == &steered_meeting_;
  d_.at_steered_site = &chosen == &steered_meeting_ || &chosen == &steered_missing_;
  d_.runner_up_usd_per_token = chosen.RunnerUp();
}

}  // namespace

Decision Router::Route(const Request& request, const FleetView& fleet) const {
  Decision d;
  Search search(request, fleet, d);
  if (fleet.index != nullptr && fleet.index->endpoint_count() == fleet.endpoints.size()) {
    search.ScanIndexed(*fleet.index);
  } else {
    search.ScanAll();
  }
  search.Finish();
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
