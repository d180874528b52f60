#pragma once
// What a policy run measured, and the summary rows written to summary.csv / summary.json.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace powerplane::sim {

// Latency quantiles from a log-spaced histogram: 200 bins per decade from 0.1 ms to 10,000 s, so
// a quantile is exact to within 1.2%. Fixed memory, order-independent, deterministic.
class LatencyHistogram {
 public:
  void Add(double seconds);
  // The q-quantile (0..1), at the geometric middle of its bin; 0 when empty.
  double Quantile(double q) const;
  std::uint64_t count() const { return count_; }

 private:
  static constexpr int kPerDecade = 200;
  static constexpr int kDecades = 8;
  static constexpr double kMin = 1e-4;
  std::array<std::uint64_t, kPerDecade * kDecades + 2> bins_{};
  std::uint64_t count_ = 0;
};

struct PolicyResult {
  std::string policy;
  std::uint64_t requests = 0;      // arrived.
  std::uint64_t served = 0;        // finished on an endpoint.
  std::uint64_t dropped = 0;       // no endpoint admitted them.
  std::uint64_t output_tokens = 0;     // produced for served requests.
  std::uint64_t trace_output_tokens_served = 0;  // the trace's sizes of the requests served.
  std::uint64_t met_targets = 0;
  std::uint64_t residency_violations = 0;
  double horizon_s = 0;             // arrivals window plus drain.
  double gpu_joules = 0;            // all GPUs, busy and idle.
  double facility_joules = 0;       // gpu joules x PUE.
  double energy_cost_usd = 0;
  double hardware_cost_usd = 0;
  LatencyHistogram ttft;
  LatencyHistogram tpot;
  // GPU joules per site per bucket (see SimOptions::bucket_s), for the report.
  std::vector<std::vector<double>> site_bucket_joules;
  // Grid flexibility (sim/site_power.h); empty where the fleet or the inputs have none.
  std::optional<double> seconds_above_target;  // summed over sites, with a binding event only.
  std::optional<double> mining_value_usd;      // hashprice revenue less the miners' energy cost.
  std::optional<double> mining_mwh;
  std::optional<double> export_value_usd;      // surplus on-site generation at the site's price.
  std::optional<double> export_mwh;
  // Mean grid import (kW) and the tightest budget (NaN: no limit) per site per power_step_s.
  double power_step_s = 0;
  std::vector<std::vector<double>> site_import_kw;
  std::vector<std::vector<double>> site_budget_kw;
};

// One row of the summary. Optional cells are written empty (CSV) / null (JSON).
struct SummaryRow {
  std::string policy;
  std::uint64_t requests = 0;
  std::uint64_t output_tokens = 0;
  double energy_mwh = 0;
  double energy_cost_usd = 0;
  double usd_per_mtok_energy = 0;
  double usd_per_mtok_total = 0;
  double j_per_token = 0;
  std::optional<double> ttft_p50_s, ttft_p99_s, tpot_p99_s, target_attainment;
  std::optional<std::uint64_t> residency_violations;
  std::uint64_t dropped = 0;
  // After the required columns; empty where not applicable.
  std::optional<double> seconds_above_target, mining_value_usd, mining_mwh, export_value_usd,
      export_mwh;
};

SummaryRow MakeRow(const PolicyResult& r);

// The CSV header: the required columns in order, then the grid-flexibility ones.
std::string SummaryCsvHeader();
std::string SummaryCsv(const std::vector<SummaryRow>& rows);
// `meta` is a JSON object's members (already formatted, e.g. "\"seed\": 1"), may be empty.
std::string SummaryJson(const std::vector<SummaryRow>& rows, const std::vector<std::string>& meta);

}  // namespace powerplane::sim
