#pragma once
// The cost of a token at an endpoint now: energy (price x joules x PUE) plus amortised hardware.
//   c = J(e, b+1, ctx) x PUE_s x p_s(now) + h_e / r_e(b+1)
// where prefill joules are spread over the request's expected output tokens. Inline: the router
// evaluates it for every candidate of every request.

#include <algorithm>

#include "core/types.h"

namespace powerplane::core {

inline constexpr double kJoulesPerMwh = 3.6e9;

// The score of one candidate, kept in the decision so logs, the dashboard and reports can show why.
struct CostBreakdown {
  int batch_after = 0;               // the endpoint's decode batch with this request added.
  double context_tokens = 0;         // mean context assumed for the batch.
  double joules_per_output_token = 0;  // decode J/token at batch_after, plus prefill share.
  double usd_per_mwh = 0;            // the site's effective price now.
  double pue = 1;
  double energy_usd_per_token = 0;
  double hardware_usd_per_token = 0;
  double total_usd_per_token = 0;
  double predicted_ttft_s = 0;       // network + queue + prefill.
  double predicted_tpot_s = 0;       // decode step at batch_after.
};

// Energy cost in USD of `joules` at `usd_per_mwh` with facility overhead `pue`.
inline double EnergyCostUsd(double joules, double usd_per_mwh, double pue) {
  return joules * pue * usd_per_mwh / kJoulesPerMwh;
}

// The parts of a request's cost that do not depend on the endpoint.
struct RequestShape {
  double prompt_tokens = 0;
  double expected_output_tokens = 1;  // at least 1.
  double inverse_expected_output = 1;
  double own_context_tokens = 0;      // prompt plus half the output: its mean context over life.
};

inline RequestShape ShapeOf(const Request& r) {
  RequestShape s;
  s.prompt_tokens = r.prompt_tokens;
  s.expected_output_tokens = std::max(1, r.expected_output_tokens);
  s.inverse_expected_output = 1.0 / s.expected_output_tokens;
  s.own_context_tokens = r.prompt_tokens + 0.5 * r.expected_output_tokens;
  return s;
}

// The latency side of a score: what the candidate's batch, context and timings would be.
struct Timing {
  int batch_after = 0;
  double inverse_batch = 1;
  double context_tokens = 0;
  double step_s = 0;
  double ttft_s = 0;
  double tpot_s = 0;
};

// Predicts the timings of a request of shape `r` at `endpoint` (load `load`) in `site`. Written
// without divisions: the router calls it for every candidate.
inline Timing PredictTiming(const RequestShape& r, const Site& site, const Endpoint& endpoint,
                            const EndpointLoad& load) {
  const GpuModel& gpu = *endpoint.gpu;
  Timing t;
  const int occupied = load.running + load.waiting;
  const int batch = std::min(occupied + 1, endpoint.max_batch);
  t.batch_after = batch;
  t.inverse_batch = gpu.InverseBatch(batch);
  const int others = std::min(occupied, endpoint.max_batch - 1);
  const double others_context =
      load.mean_context_tokens > 0 ? load.mean_context_tokens : r.own_context_tokens;
  t.context_tokens =
      (others * others_context + r.own_context_tokens) * gpu.InverseBatch(others + 1);
  t.step_s = gpu.StepSeconds(batch, t.context_tokens);

  // Time to first token: the network round trip, the wait for a batch slot, then prefill.
  // With a free slot the request joins at the next step; otherwise it waits for the requests
  // ahead of it to finish, at the full batch's pace.
  double queue_s = t.step_s;
  const int ahead = occupied + 1 - endpoint.max_batch;
  if (ahead > 0) {
    const double full_step_s = gpu.StepSeconds(endpoint.max_batch, t.context_tokens);
    queue_s += ahead * r.expected_output_tokens * full_step_s * gpu.InverseBatch(endpoint.max_batch);
  }
  const double prefill_s = gpu.PrefillSeconds(r.prompt_tokens);
  // Requests already waiting are admitted with this one and prefilled in the same phase; their
  // prompts are taken to be like this one's.
  const int waiting_admitted =
      std::min(load.waiting, std::max(0, endpoint.max_batch - load.running - 1));
  t.ttft_s = site.network_rtt_s + queue_s + prefill_s * (1 + waiting_admitted);
  // Time per output token: the decode step, plus the prefills of the requests that join the
  // batch as others finish (an engine without chunked prefill stalls the batch for each). In
  // steady state about batch / expected_output join per step; their prompts are taken to be
  // like this one's.
  t.tpot_s = t.step_s + batch * r.inverse_expected_output * prefill_s;
  return t;
}

// Hardware cost per output token: cost per second over tokens per second (batch / step).
inline double HardwareUsdPerToken(const Endpoint& endpoint, const Timing& t) {
  return endpoint.hardware_usd_per_hour * (1.0 / 3600.0) * t.step_s * t.inverse_batch;
}

// Completes a score from its timings: energy at the site's price, plus hardware.
inline void CostFromTiming(const RequestShape& r, const Site& site, double usd_per_mwh,
                           const Endpoint& endpoint, const Timing& t, CostBreakdown* c) {
  const GpuModel& gpu = *endpoint.gpu;
  c->batch_after = t.batch_after;
  c->context_tokens = t.context_tokens;
  c->joules_per_output_token =
      gpu.DecodeWatts(t.batch_after, t.context_tokens) * t.step_s * t.inverse_batch +
      gpu.JoulesPerPromptToken() * r.prompt_tokens * r.inverse_expected_output;
  c->usd_per_mwh = usd_per_mwh;
  c->pue = site.pue;
  c->energy_usd_per_token =
      c->joules_per_output_token * site.pue * usd_per_mwh * (1.0 / kJoulesPerMwh);
  c->hardware_usd_per_token = HardwareUsdPerToken(endpoint, t);
  c->total_usd_per_token = c->energy_usd_per_token + c->hardware_usd_per_token;
  c->predicted_ttft_s = t.ttft_s;
  c->predicted_tpot_s = t.tpot_s;
}

// Scores a request of shape `r` at `endpoint` (load `load`) in `site` priced `usd_per_mwh`.
inline void Score(const RequestShape& r, const Site& site, double usd_per_mwh,
                  const Endpoint& endpoint, const EndpointLoad& load, CostBreakdown* c) {
  CostFromTiming(r, site, usd_per_mwh, endpoint, PredictTiming(r, site, endpoint, load), c);
}

// Scores `request` at `endpoint` with load `load` in a site with `site`/`energy`. Pure.
inline CostBreakdown ScoreCandidate(const Request& request, const Site& site,
                                    const EnergyState& energy, const Endpoint& endpoint,
                                    const EndpointLoad& load) {
  CostBreakdown c;
  Score(ShapeOf(request), site, energy.usd_per_mwh, endpoint, load, &c);
  return c;
}

}  // namespace powerplane::core
