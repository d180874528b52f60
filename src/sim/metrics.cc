#include "sim/metrics.h"

#include <cmath>
#include <cstdio>

namespace powerplane::sim {

void LatencyHistogram::Add(double seconds) {
  int bin = 0;
  if (seconds >= kMin) {
    bin = 1 + static_cast<int>(std::floor(std::log10(seconds / kMin) * kPerDecade));
    if (bin >= static_cast<int>(bins_.size())) bin = static_cast<int>(bins_.size()) - 1;
  }
  ++bins_[bin];
  ++count_;
}

double LatencyHistogram::Quantile(double q) const {
  if (count_ == 0) return 0;
  const double rank = std::ceil(q * static_cast<double>(count_));
  std::uint64_t seen = 0;
  for (std::size_t b = 0; b < bins_.size(); ++b) {
    seen += bins_[b];
    if (static_cast<double>(seen) >= rank && bins_[b] > 0) {
      if (b == 0) return 0;
      return kMin * std::pow(10.0, (static_cast<double>(b) - 0.5) / kPerDecade);
    }
  }
  return kMin * std::pow(10.0, kDecades);
}

SummaryRow MakeRow(const PolicyResult& r) {
  SummaryRow row;
  row.policy = r.policy;
  row.requests = r.requests;
  row.output_tokens = r.output_tokens;
  row.energy_mwh = r.facility_joules / 3.6e9;
  row.energy_cost_usd = r.energy_cost_usd;
  const double mtok = static_cast<double>(r.output_tokens) / 1e6;
  row.usd_per_mtok_energy = mtok > 0 ? r.energy_cost_usd / mtok : 0;
  row.usd_per_mtok_total = mtok > 0 ? (r.energy_cost_usd + r.hardware_cost_usd) / mtok : 0;
  row.j_per_token = r.output_tokens > 0 ? r.facility_joules / static_cast<double>(r.output_tokens)
                                        : 0;
  row.ttft_p50_s = r.ttft.Quantile(0.5);
  row.ttft_p99_s = r.ttft.Quantile(0.99);
  row.tpot_p99_s = r.tpot.Quantile(0.99);
  row.target_attainment =
      r.requests > 0 ? static_cast<double>(r.met_targets) / static_cast<double>(r.requests) : 0;
  row.residency_violations = r.residency_violations;
  row.dropped = r.dropped;
  row.seconds_above_target = r.seconds_above_target;
  row.mining_value_usd = r.mining_value_usd;
  row.mining_mwh = r.mining_mwh;
  row.export_value_usd = r.export_value_usd;
  row.export_mwh = r.export_mwh;
  return row;
}

namespace {

std::string Num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

template <typename T>
std::string Opt(const std::optional<T>& v, const char* none) {
  if (!v) return none;
  if constexpr (std::is_floating_point_v<T>) {
    return Num(*v);
  } else {
    return std::to_string(*v);
  }
}

}  // namespace

std::string SummaryCsvHeader() {
  return "policy,requests,output_tokens,energy_mwh,energy_cost_usd,usd_per_mtok_energy,"
         "usd_per_mtok_total,j_per_token,ttft_p50_s,ttft_p99_s,tpot_p99_s,target_attainment,"
         "residency_violations,dropped,seconds_above_target,mining_value_usd,mining_mwh,"
         "export_value_usd,export_mwh";
}

std::string SummaryCsv(const std::vector<SummaryRow>& rows) {
  std::string out = SummaryCsvHeader() + "\n";
  for (const auto& r : rows) {
    out += r.policy + "," + std::to_string(r.requests) + "," + std::to_string(r.output_tokens) +
           "," + Num(r.energy_mwh) + "," + Num(r.energy_cost_usd) + "," +
           Num(r.usd_per_mtok_energy) + "," + Num(r.usd_per_mtok_total) + "," +
           Num(r.j_per_token) + "," + Opt(r.ttft_p50_s, "") + "," + Opt(r.ttft_p99_s, "") + "," +
           Opt(r.tpot_p99_s, "") + "," + Opt(r.target_attainment, "") + "," +
           Opt(r.residency_violations, "") + "," + std::to_string(r.dropped) + "," +
           Opt(r.seconds_above_target, "") + "," + Opt(r.mining_value_usd, "") + "," +
           Opt(r.mining_mwh, "") + "," + Opt(r.export_value_usd, "") + "," +
           Opt(r.export_mwh, "") + "\n";
  }
  return out;
}

std::string SummaryJson(const std::vector<SummaryRow>& rows, const std::vector<std::string>& meta) {
  std::string out = "{\n";
  for (const auto& m : meta) out += "  " + m + ",\n";
  out += "  \"policies\": [\n";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto& r = rows[i];
    out += "    {\"policy\": \"" + r.policy + "\", \"requests\": " + std::to_string(r.requests) +
           ", \"output_tokens\": " + std::to_string(r.output_tokens) +
           ", \"energy_mwh\": " + Num(r.energy_mwh) +
           ", \"energy_cost_usd\": " + Num(r.energy_cost_usd) +
           ", \"usd_per_mtok_energy\": " + Num(r.usd_per_mtok_energy) +
           ", \"usd_per_mtok_total\": " + Num(r.usd_per_mtok_total) +
           ", \"j_per_token\": " + Num(r.j_per_token) +
           ", \"ttft_p50_s\": " + Opt(r.ttft_p50_s, "null") +
           ", \"ttft_p99_s\": " + Opt(r.ttft_p99_s, "null") +
           ", \"tpot_p99_s\": " + Opt(r.tpot_p99_s, "null") +
           ", \"target_attainment\": " + Opt(r.target_attainment, "null") +
           ", \"residency_violations\": " + Opt(r.residency_violations, "null") +
           ", \"dropped\": " + std::to_string(r.dropped) +
           ", \"seconds_above_target\": " + Opt(r.seconds_above_target, "null") +
           ", \"mining_value_usd\": " + Opt(r.mining_value_usd, "null") +
           ", \"mining_mwh\": " + Opt(r.mining_mwh, "null") +
           ", \"export_value_usd\": " + Opt(r.export_value_usd, "null") +
           ", \"export_mwh\": " + Opt(r.export_mwh, "null") + "}" +
           (i + 1 < rows.size() ? ",\n" : "\n");
  }
  out += "  ]\n}\n";
  return out;
}

}  // namespace powerplane::sim
