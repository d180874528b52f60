#include "core/cost_model.h"

#include <algorithm>
#include <cmath>

namespace powerplane::core {

CostBreakdown ScoreCandidate(const Request& request, const Site& site, const EnergyState& energy,
                             const Endpoint& endpoint, const EndpointLoad& load) {
  const GpuModel& gpu = *endpoint.gpu;
  CostBreakdown c;
  const int occupied = load.running + load.waiting;
  c.batch_after = std::min(occupied + 1, endpoint.max_batch);

  // The request's own mean context over its life: prompt plus half its output.
  const double own_context = request.prompt_tokens + 0.5 * request.expected_output_tokens;
  const double others = std::min(occupied, endpoint.max_batch - 1);
  const double others_context =
      load.mean_context_tokens > 0 ? load.mean_context_tokens : own_context;
  c.context_tokens = (others * others_context + own_context) / (others + 1);

  const double step_s = gpu.StepSeconds(c.batch_after, c.context_tokens);
  const double expected_out = std::max(1, request.expected_output_tokens);
  c.joules_per_output_token =
      gpu.JoulesPerOutputToken(c.batch_after, c.context_tokens) +
      gpu.JoulesPerPromptToken() * request.prompt_tokens / expected_out;
  c.usd_per_mwh = energy.usd_per_mwh;
  c.pue = site.pue;
  c.energy_usd_per_token = EnergyCostUsd(c.joules_per_output_token, c.usd_per_mwh, c.pue);
  const double tokens_per_s = c.batch_after / step_s;
  c.hardware_usd_per_token = endpoint.hardware_usd_per_hour / 3600.0 / tokens_per_s;
  c.total_usd_per_token = c.energy_usd_per_token + c.hardware_usd_per_token;

  // Time to first token: the network round trip, the wait for a batch slot, then prefill.
  // With a free slot the request joins at the next step; otherwise it waits for the requests
  // ahead of it to finish, at the full batch's pace.
  double queue_s = step_s;
  const int ahead = occupied + 1 - endpoint.max_batch;
  if (ahead > 0) {
    const double full_step_s = gpu.StepSeconds(endpoint.max_batch, c.context_tokens);
    const double request_s = expected_out * full_step_s;
    queue_s += ahead * request_s / endpoint.max_batch;
  }
  c.predicted_ttft_s = site.network_rtt_s + queue_s + gpu.PrefillSeconds(request.prompt_tokens);
  c.predicted_tpot_s = step_s;
  return c;
}

}  // namespace powerplane::core
