#pragma once
// Site power on virtual time. Every tick each site's draw is metered (its GPUs' average watts over
// the tick x PUE, plus base load and running miners, less on-site wind) and checked against the
// grid events binding then. With control on (policy `powerplane`) core::FlexController plans each
// site as runtime.cc's FlexTick does live: miners on or off by the dispatch economics, GPU caps
// (applied to the AnalyticEngines by the caller), and the steer and shed flags the router reads.
// Without control (the baselines) the sites are only metered: no miners, no caps.
// Pure: virtual time and meter readings come in as arguments.

#include <cstdint>
#include <span>
#include <vector>

#include "core/flex.h"
#include "core/grid_event.h"
#include "core/types.h"
#include "grid/time.h"
#include "sim/metrics.h"
#include "sim/sim_fleet.h"

namespace powerplane::sim {

class SitePowerLoop {
 public:
  // `fleet` and `events` must outlive the loop. Virtual time 0 is `start`; ticks every `tick_s`
  // from tick_s on; the power plot averages over `plot_step_s`.
  SitePowerLoop(const SimFleet& fleet, std::span<const core::GridEvent> events, grid::UtcTime start,
                double tick_s, double plot_step_s, bool control);

  double next_tick_s() const { return next_tick_s_; }

  // The tick at next_tick_s(). `site_gpu_joules[s]`: GPU joules site s's endpoints have used
  // since virtual time 0 (the engines advanced to next_tick_s()); `usd_per_mwh[s]`: the price now.
  // With control, sets the steer/shed flags in `energy`; caps then hold the GPU cap per site.
  void Tick(std::span<const double> site_gpu_joules, std::span<const double> usd_per_mwh,
            std::span<core::EnergyState> energy);

  // Per site: the GPU cap in watts the controller set (0 = none); all 0 without control.
  const std::vector<double>& caps() const { return caps_; }

  // Copies the metrics and the power plot into `r`.
  void AddTo(PolicyResult* r) const;

 private:
  const SimFleet& fleet_;
  std::span<const core::GridEvent> events_;
  std::int64_t start_epoch_s_;
  double tick_s_;
  double plot_step_s_;
  bool control_;
  core::FlexController controller_;
  double next_tick_s_;
  std::vector<SimSiteFlex> flex_;  // per site (defaults where the fleet has none).
  std::vector<int> gpus_;
  std::vector<double> gpu_max_watts_;
  std::vector<double> last_joules_;
  std::vector<core::SitePlan> plans_;
  std::vector<double> caps_;
  std::vector<bool> miners_on_;
  // Metrics.
  double seconds_above_target_ = 0;
  double mining_revenue_usd_ = 0, mining_energy_usd_ = 0, mining_mwh_ = 0;
  double export_usd_ = 0, export_mwh_ = 0;
  std::vector<std::vector<double>> import_kws_, budget_kw_;  // per site per plot step.
};

}  // namespace powerplane::sim
