#pragma once
// The cost of a token at an endpoint now: energy (price x joules x PUE) plus amortised hardware.
//   c = J(e, b+1, ctx) x PUE_s x p_s(now) + h_e / r_e(b+1)
// where prefill joules are spread over the request's expected output tokens.

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

// Scores `request` at `endpoint` with load `load` in a site with `site`/`energy`. Pure.
CostBreakdown ScoreCandidate(const Request& request, const Site& site, const EnergyState& energy,
                             const Endpoint& endpoint, const EndpointLoad& load);

// Energy cost in USD of `joules` at `usd_per_mwh` with facility overhead `pue`.
inline double EnergyCostUsd(double joules, double usd_per_mwh, double pue) {
  return joules * pue * usd_per_mwh / kJoulesPerMwh;
}

}  // namespace powerplane::core
