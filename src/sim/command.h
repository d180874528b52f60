#pragma once
// `powerplane sim`: reads the inputs, runs the policies and the bound, writes DIR/summary.csv,
// DIR/summary.json and DIR/report.html. The I/O shell around the pure simulator: files, the
// terminal (progress bar on stderr) and the wall clock (progress only) live here.

#include <cstdint>
#include <expected>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace powerplane::sim {

struct SimCommandOptions {
  std::string fleet_path;             // empty = the demo fleet.
  std::filesystem::path data_dir;     // prices/, energy/, traces/.
  std::string trace_path;             // empty = data_dir/traces/azure-llm-2023-conv.csv.
  std::string rate_curve_path;        // empty = replay the trace's own arrivals.
  std::optional<double> rate_scale;
  std::optional<double> load;         // fraction of the fleet's sustainable request rate.
  std::vector<std::string> prices;    // SITE=FILE[:COLUMN]
  std::string tenant_mix;             // TENANT=WEIGHT,...
  // Plan every request with the fleet's default output length instead of each tenant's learned
  // one (the gateway's behaviour before it learned them).
  bool fixed_output_length = false;
  std::string events_path;            // grid events CSV (sim/grid_events.h); empty = none.
  std::string start;                  // ISO 8601; empty = the fleet file's market start.
  std::string duration = "1h";
  std::uint64_t seed = 1;
  std::string policy = "all";
  std::string out_dir = "sim-out";
  bool bound = true;                  // solve the hindsight LP.
  bool progress = true;               // progress bar on stderr for runs over ~2 s.
};

// Runs the command; messages go to stdout/stderr. Returns the process exit code.
int RunSimCommand(const SimCommandOptions& options);

// "1h", "1d", "7d", "90m", "30s" or plain seconds.
std::expected<double, std::string> ParseDuration(std::string_view text);

}  // namespace powerplane::sim
