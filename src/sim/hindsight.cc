#include "sim/hindsight.h"

#include <coin/ClpSimplex.hpp>
#include <coin/CoinPackedMatrix.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

#include "core/cost_model.h"

namespace powerplane::sim {
namespace {

struct Pool {
  std::size_t site = 0;
  const core::GpuModel* gpu = nullptr;
  int max_batch = 1;
  std::int64_t kv = 0;
  int count = 0;
};

std::vector<int> Batches(int max_batch) {
  std::vector<int> b;
  for (int i = 1; i <= std::min(16, max_batch); ++i) b.push_back(i);
  for (int i = 24; i <= max_batch; i += 8) b.push_back(i);
  if (b.back() != max_batch) b.push_back(max_batch);
  return b;
}

}  // namespace

Demand CollectDemand(ArrivalStream stream, std::size_t tenants, double duration_s,
                     double period_s) {
  Demand d;
  d.period_s = period_s;
  d.duration_s = duration_s;
  const auto periods = static_cast<std::size_t>(std::ceil(duration_s / period_s));
  d.cells.assign(tenants, std::vector<DemandCell>(std::max<std::size_t>(1, periods)));
  Arrival a;
  while (stream.Next(&a)) {
    const auto h = std::min(static_cast<std::size_t>(a.t_s / period_s), d.cells[0].size() - 1);
    DemandCell& c = d.cells[a.tenant][h];
    ++c.requests;
    c.prompt_tokens += a.prompt_tokens;
    c.output_tokens += a.output_tokens;
  }
  return d;
}

std::expected<BoundResult, std::string> HindsightBound(const SimFleet& fleet, const Demand& demand,
                                                       const SimOptions& options) {
  std::map<std::tuple<std::size_t, const core::GpuModel*, int, std::int64_t>, std::size_t> index;
  std::vector<Pool> pools;
  for (const auto& e : fleet.endpoints) {
    const auto key = std::make_tuple(std::size_t{e.site_index}, e.gpu.get(), e.max_batch,
                                     e.kv_token_capacity);
    auto [it, fresh] = index.try_emplace(key, pools.size());
    if (fresh) pools.push_back({e.site_index, e.gpu.get(), e.max_batch, e.kv_token_capacity, 0});
    ++pools[it->second].count;
  }
  const std::size_t periods = demand.cells.empty() ? 0 : demand.cells[0].size();
  const std::size_t tenants = demand.cells.size();
  // Mean price per (site, period), sampled each minute.
  std::vector<std::vector<double>> price(fleet.sites.size(), std::vector<double>(periods));
  std::vector<double> seconds(periods);
  for (std::size_t h = 0; h < periods; ++h) {
    const double t0 = static_cast<double>(h) * demand.period_s;
    seconds[h] = std::min(demand.period_s, demand.duration_s - t0);
    for (std::size_t s = 0; s < fleet.sites.size(); ++s) {
      double sum = 0;
      int n = 0;
      for (double t = t0; t < t0 + seconds[h]; t += 60, ++n) {
        sum += fleet.prices[s].UsdPerMwhAt(options.start +
                                           std::chrono::seconds(static_cast<std::int64_t>(t)));
      }
      price[s][h] = n > 0 ? sum / n : 0;
    }
  }
  // Rows: demand (tenant, period) then capacity (pool, period).
  const int demand_rows = static_cast<int>(tenants * periods);
  const int rows = demand_rows + static_cast<int>(pools.size() * periods);
  std::vector<int> r_idx, c_idx;
  std::vector<double> val, obj, col_energy, col_output, row_lo(rows), row_hi(rows);
  std::vector<char> slack;
  constexpr double kPenaltyUsd = 1e3;  // per unserved request: far above any energy cost.
  int col = 0;
  double idle_cost = 0, idle_joules = 0;
  for (std::size_t p = 0; p < pools.size(); ++p) {
    const Pool& pool = pools[p];
    const double pue = fleet.sites[pool.site].pue;
    for (std::size_t h = 0; h < periods; ++h) {
      const double j = pool.gpu->IdleWatts() * pool.count * seconds[h];
      idle_joules += j * pue;
      idle_cost += core::EnergyCostUsd(j, price[pool.site][h], pue);
      const int row = demand_rows + static_cast<int>(p * periods + h);
      row_lo[row] = -COIN_DBL_MAX;
      row_hi[row] = pool.count * seconds[h];
    }
  }
  for (std::size_t c = 0; c < tenants; ++c) {
    const SimTenant& tenant = fleet.tenants[c];
    for (std::size_t h = 0; h < periods; ++h) {
      const DemandCell& cell = demand.cells[c][h];
      const int drow = static_cast<int>(c * periods + h);
      row_lo[drow] = row_hi[drow] = static_cast<double>(cell.requests);
      if (cell.requests == 0) continue;
      const double n = static_cast<double>(cell.requests);
      const double prompt = cell.prompt_tokens / n, output = cell.output_tokens / n;
      const double ctx = prompt + 0.5 * output;
      for (std::size_t p = 0; p < pools.size(); ++p) {
        const Pool& pool = pools[p];
        if (!fleet.Allowed(c, pool.site)) continue;
        const core::GpuModel& gpu = *pool.gpu;
        const double pue = fleet.sites[pool.site].pue;
        const double prefill_s = gpu.PrefillSeconds(prompt);
        const double prefill_j = gpu.profile().prefill_watts * prefill_s;
        for (int b : Batches(pool.max_batch)) {
          const double step = gpu.StepSeconds(b, ctx);
          const bool fits_kv = pool.kv <= 0 || b * (prompt + output) <= pool.kv;
          if (b > 1 && (step > tenant.tpot_target_s || !fits_kv)) continue;
          const double tau = prefill_s + output * step / b;
          const double e = prefill_j + output * gpu.DecodeWatts(b, ctx) * step / b;
          const double marginal_j = e - gpu.IdleWatts() * tau;
          obj.push_back(core::EnergyCostUsd(marginal_j, price[pool.site][h], pue));
          col_energy.push_back(marginal_j * pue);
          col_output.push_back(output);
          slack.push_back(0);
          r_idx.insert(r_idx.end(), {drow, demand_rows + static_cast<int>(p * periods + h)});
          c_idx.insert(c_idx.end(), {col, col});
          val.insert(val.end(), {1.0, tau});
          ++col;
        }
      }
      obj.push_back(kPenaltyUsd);  // unserved
      col_energy.push_back(0);
      col_output.push_back(0);
      slack.push_back(1);
      r_idx.push_back(drow);
      c_idx.push_back(col);
      val.push_back(1.0);
      ++col;
    }
  }
  BoundResult out;
  out.result.policy = "hindsight-bound";
  for (const auto& t : demand.cells) {
    for (const auto& cell : t) out.result.requests += cell.requests;
  }
  if (col > 0) {
    CoinPackedMatrix matrix(true, r_idx.data(), c_idx.data(), val.data(),
                            static_cast<CoinBigIndex>(val.size()));
    matrix.setDimensions(rows, col);
    std::vector<double> col_lo(col, 0.0), col_hi(col, COIN_DBL_MAX);
    ClpSimplex lp;
    lp.setLogLevel(0);
    lp.loadProblem(matrix, col_lo.data(), col_hi.data(), obj.data(), row_lo.data(),
                   row_hi.data());
    lp.dual();
    if (lp.status() != 0) return std::unexpected("hindsight LP: Clp status " + std::to_string(lp.status()));
    const double* z = lp.primalColumnSolution();
    double output_tokens = 0;
    for (int i = 0; i < col; ++i) {
      if (slack[i]) {
        out.unserved_requests += z[i];
        continue;
      }
      out.result.energy_cost_usd += obj[i] * z[i];
      out.result.facility_joules += col_energy[i] * z[i];
      output_tokens += col_output[i] * z[i];
    }
    out.result.output_tokens = static_cast<std::uint64_t>(std::llround(output_tokens));
  }
  out.result.energy_cost_usd += idle_cost;
  out.result.facility_joules += idle_joules;
  out.result.dropped = static_cast<std::uint64_t>(std::llround(out.unserved_requests));
  out.result.horizon_s = demand.duration_s;
  for (const auto& e : fleet.endpoints) {
    out.result.hardware_cost_usd += e.hardware_usd_per_hour * demand.duration_s / 3600.0;
  }
  return out;
}

SummaryRow MakeBoundRow(const BoundResult& bound) {
  SummaryRow row = MakeRow(bound.result);
  row.ttft_p50_s.reset();
  row.ttft_p99_s.reset();
  row.tpot_p99_s.reset();
  row.target_attainment.reset();
  row.residency_violations.reset();
  return row;
}

}  // namespace powerplane::sim
