#include "sim/command.h"

#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <fstream>

#include "fleet/config.h"
#include "grid/time.h"
#include "sim/arrivals.h"
#include "sim/grid_events.h"
#include "sim/hindsight.h"
#include "sim/report.h"
#include "sim/sim_fleet.h"
#include "sim/simulator.h"
#include "sim/trace.h"

namespace powerplane::sim {
namespace {

int Fail(const std::string& message) {
  std::fprintf(stderr, "powerplane sim: %s\n", message.c_str());
  return 2;
}

bool WriteFile(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  return static_cast<bool>(out);
}

// A progress bar on stderr, drawn only once a run has taken more than two seconds.
class ProgressBar {
 public:
  ProgressBar(bool enabled, std::string label)
      : enabled_(enabled), label_(std::move(label)), began_(std::chrono::steady_clock::now()) {}
  ~ProgressBar() {
    if (drawn_) std::fputc('\n', stderr);
  }
  void Update(double fraction) {
    if (!enabled_) return;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - began_).count();
    if (elapsed < 2.0 && fraction < 1.0) return;
    if (elapsed < 2.0 && !drawn_) return;
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(fraction * kWidth);
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(kWidth, '.');
    std::fprintf(stderr, "\r%-16s [%s] %3.0f%%  %.0f s", label_.c_str(), bar.c_str(),
                 fraction * 100, elapsed);
    std::fflush(stderr);
    drawn_ = true;
  }

 private:
  bool enabled_;
  std::string label_;
  std::chrono::steady_clock::time_point began_;
  bool drawn_ = false;
};

}  // namespace

std::expected<double, std::string> ParseDuration(std::string_view text) {
  double unit = 1;
  std::string_view number = text;
  if (!text.empty()) {
    switch (text.back()) {
      case 's': unit = 1; break;
      case 'm': unit = 60; break;
      case 'h': unit = 3600; break;
      case 'd': unit = 86400; break;
      default: unit = 0;
    }
    if (unit != 0) number.remove_suffix(1);
    if (unit == 0) unit = 1;
  }
  double v = 0;
  const auto r = std::from_chars(number.data(), number.data() + number.size(), v);
  if (number.empty() || r.ec != std::errc() || r.ptr != number.data() + number.size() || v <= 0) {
    return std::unexpected("--duration '" + std::string(text) +
                           "': want a positive number of seconds or 90m, 1h, 1d, 7d");
  }
  return v * unit;
}

int RunSimCommand(const SimCommandOptions& o) {
  fleet::FleetConfig config;
  if (o.fleet_path.empty()) {
    auto demo = fleet::ParseFleetConfig(fleet::DemoConfigToml(), "demo fleet");
    if (!demo) return Fail(demo.error());
    config = std::move(*demo);
  } else {
    auto loaded = fleet::LoadFleetConfig(o.fleet_path);
    if (!loaded) return Fail(loaded.error());
    config = std::move(*loaded);
  }
  std::vector<PriceOverride> overrides;
  for (const auto& p : o.prices) {
    auto parsed = ParsePriceOverride(p);
    if (!parsed) return Fail(parsed.error());
    overrides.push_back(std::move(*parsed));
  }
  std::map<std::string, double> mix;
  if (!o.tenant_mix.empty()) {
    auto parsed = ParseTenantMix(o.tenant_mix);
    if (!parsed) return Fail(parsed.error());
    mix = std::move(*parsed);
  }
  auto fleet = BuildSimFleet(config, o.data_dir, overrides, mix);
  if (!fleet) return Fail(fleet.error());
  std::vector<core::GridEvent> events;
  if (!o.events_path.empty()) {
    auto loaded = LoadGridEventsCsv(o.events_path, fleet->sites);
    if (!loaded) return Fail(loaded.error());
    events = std::move(*loaded);
  }
  const std::string trace_path = o.trace_path.empty()
      ? (o.data_dir / "traces/azure-llm-2023-conv.csv").string() : o.trace_path;
  auto trace = LoadAzureTrace(trace_path);
  if (!trace) return Fail(trace.error());
  std::optional<RateCurve> curve;
  if (!o.rate_curve_path.empty()) {
    auto loaded = LoadRateCurve(o.rate_curve_path);
    if (!loaded) return Fail(loaded.error());
    curve = std::move(*loaded);
  }
  auto start = grid::ParseUtcTimestamp(o.start.empty() ? config.market_start : o.start);
  if (!start) return Fail("--start: " + start.error());
  auto duration = ParseDuration(o.duration);
  if (!duration) return Fail(duration.error());
  std::vector<Policy> policies;
  if (o.policy == "all") {
    policies = AllPolicies();
  } else {
    Policy p;
    if (!ParsePolicy(o.policy, &p)) {
      return Fail("--policy '" + o.policy + "': want round-robin, least-loaded, nearest, "
                  "cheapest-price, powerplane or all");
    }
    policies = {p};
  }
  if (o.rate_scale && o.load) return Fail("give --rate-scale or --load, not both");

  const RateCurve* curve_ptr = curve ? &*curve : nullptr;
  const double base_rate = ArrivalStream::MeanRateRps(*trace, curve_ptr, 1.0, *duration);
  const double sustainable =
      SustainableRateRps(*fleet, trace->mean_prompt_tokens, trace->mean_output_tokens);
  double scale = o.rate_scale.value_or(1.0);
  if (o.load) {
    if (*o.load <= 0 || base_rate <= 0) return Fail("--load must be positive");
    scale = *o.load * sustainable / base_rate;
  }
  ArrivalOptions ao;
  ao.duration_s = *duration;
  ao.rate_scale = scale;
  ao.seed = o.seed;
  for (const auto& t : fleet->tenants) ao.tenant_weights.push_back(t.weight);
  ao.tenant_weights.erase(ao.tenant_weights.begin());  // drop the default {1.0}.

  SimOptions so;
  so.start = *start;
  so.duration_s = *duration;
  so.expected_output_tokens = config.default_output_tokens;
  so.learn_output_lengths = !o.fixed_output_length;
  so.events = std::move(events);

  std::printf("powerplane sim: %zu sites, %zu endpoints; trace %s (mean %.0f in / %.0f out)%s; "
              "start %s, %.0f s; mean rate %.1f req/s = %.2f x sustainable %.1f req/s\n",
              fleet->sites.size(), fleet->endpoints.size(), trace->name.c_str(),
              trace->mean_prompt_tokens, trace->mean_output_tokens,
              curve ? (", rate curve " + curve->name).c_str() : "",
              grid::FormatUtc(*start).c_str(), *duration, base_rate * scale,
              sustainable > 0 ? base_rate * scale / sustainable : 0, sustainable);
  const bool tty = o.progress && isatty(2);
  std::vector<SummaryRow> rows;
  std::vector<PolicyResult> results;
  for (Policy p : policies) {
    ProgressBar bar(tty, std::string(ToString(p)));
    so.progress = [&bar](double f) { bar.Update(f); };
    const auto began = std::chrono::steady_clock::now();
    PolicyResult r = RunPolicy(*fleet, ArrivalStream(*trace, curve_ptr, ao), p, so);
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
    so.progress = nullptr;
    std::printf("  %-15s %10llu requests in %6.2f s wall (%.0f simulated requests/s)\n",
                r.policy.c_str(), static_cast<unsigned long long>(r.requests), wall,
                wall > 0 ? static_cast<double>(r.requests) / wall : 0.0);
    rows.push_back(MakeRow(r));
    results.push_back(std::move(r));
  }
  if (o.bound) {
    const Demand demand =
        CollectDemand(ArrivalStream(*trace, curve_ptr, ao), fleet->tenants.size(), *duration);
    auto bound = HindsightBound(*fleet, demand, so);
    if (!bound) return Fail(bound.error());
    rows.push_back(MakeBoundRow(*bound));
  }
  std::error_code ec;
  std::filesystem::create_directories(o.out_dir, ec);
  if (ec) return Fail(o.out_dir + ": " + ec.message());
  const std::filesystem::path dir(o.out_dir);
  char meta_rate[128];
  std::snprintf(meta_rate, sizeof meta_rate, "\"mean_rate_rps\": %.6g, \"sustainable_rate_rps\": %.6g",
                base_rate * scale, sustainable);
  const std::vector<std::string> meta = {
      "\"start\": \"" + grid::FormatUtc(*start) + "\"",
      "\"duration_s\": " + std::to_string(static_cast<long long>(*duration)),
      "\"seed\": " + std::to_string(o.seed),
      "\"trace\": \"" + trace->name + "\"",
      "\"rate_curve\": \"" + (curve ? curve->name : std::string()) + "\"",
      "\"grid_events\": " + std::to_string(so.events.size()),
      meta_rate};
  if (!WriteFile(dir / "summary.csv", SummaryCsv(rows)) ||
      !WriteFile(dir / "summary.json", SummaryJson(rows, meta))) {
    return Fail("cannot write into " + o.out_dir);
  }
  ReportInput ri;
  ri.fleet = &*fleet;
  ri.options = &so;
  ri.rows = &rows;
  ri.results = &results;
  ri.title = "powerplane sim: " + trace->name + (curve ? " shaped by " + curve->name : "") +
             ", from " + grid::FormatUtc(*start);
  if (!WriteFile(dir / "report.html", BuildReportHtml(ri))) {
    return Fail("cannot write report.html into " + o.out_dir);
  }
  std::printf("\n%s\nwrote %s/summary.csv, summary.json, report.html\n", SummaryCsv(rows).c_str(),
              o.out_dir.c_str());
  return 0;
}

}  // namespace powerplane::sim
