#pragma once
// The hindsight bound: the lowest energy cost any policy could reach on a workload and its prices,
// knowing both in advance. A fluid LP over (tenant, pool of identical endpoints in a site, hour):
//   variables  z[c,p,h,b] >= 0  requests of tenant c served by pool p in hour h at decode batch b,
//              u[c,h] >= 0      requests left unserved (penalised, so only when nothing fits);
//   demand     sum_{p allowed for c, b} z[c,p,h,b] + u[c,h] = D[c,h];
//   capacity   sum_{c,b} tau[c,h,b] z[c,p,h,b] <= N_p x seconds(h)   (GPU-seconds);
//   minimise   sum PUE_s x price(s,h) x (e[c,h,b] - idle_W x tau[c,h,b]) z + idle energy cost,
// where, for the hour's mean prompt P and output O of tenant c at context P + O/2 (the GPU model):
// tau = prefill_s(P) + O x step(b)/b GPU-seconds and e = prefill J(P) + O x decode J/token(b).
// Batches b run over 1..16 and then every 8 up to max_batch (the batching curve, linearised by the
// LP mixing operating points), restricted to those whose decode step meets the tenant's TPOT target
// and whose batch fits the KV cache: the latency targets as capacity limits. Queueing, partial
// batches and drain are ignored, so every real policy costs at least this much. Solved with
// COIN-OR Clp.

#include <cstdint>
#include <expected>
#include <string>
#include <vector>

#include "sim/arrivals.h"
#include "sim/metrics.h"
#include "sim/sim_fleet.h"
#include "sim/simulator.h"

namespace powerplane::sim {

struct DemandCell {
  std::uint64_t requests = 0;
  double prompt_tokens = 0;
  double output_tokens = 0;
};

// cells[tenant][period]: what arrived in each period of `period_s` seconds.
struct Demand {
  double period_s = 3600;
  double duration_s = 0;
  std::vector<std::vector<DemandCell>> cells;
};

Demand CollectDemand(ArrivalStream stream, std::size_t tenants, double duration_s,
                     double period_s = 3600);

struct BoundResult {
  PolicyResult result;       // policy "hindsight-bound"; latency fields unused.
  double unserved_requests = 0;
};

std::expected<BoundResult, std::string> HindsightBound(const SimFleet& fleet, const Demand& demand,
                                                       const SimOptions& options);

// The summary row of the bound: latency and residency cells empty.
SummaryRow MakeBoundRow(const BoundResult& bound);

}  // namespace powerplane::sim
