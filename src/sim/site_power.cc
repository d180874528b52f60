#include "sim/site_power.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/dispatch.h"

namespace powerplane::sim {
namespace {

// Budgets at or above this are the "no limit" default of the fleet file.
constexpr double kUnlimitedKw = 1e8;

}  // namespace

SitePowerLoop::SitePowerLoop(const SimFleet& fleet, std::span<const core::GridEvent> events,
                             grid::UtcTime start, double tick_s, double plot_step_s, bool control)
    : fleet_(fleet),
      events_(events),
      start_epoch_s_(start.time_since_epoch().count()),
      tick_s_(tick_s),
      plot_step_s_(plot_step_s),
      control_(control),
      controller_(core::FlexOptions{fleet.cap_slew_watts_per_s, 0.05}),
      next_tick_s_(tick_s) {
  const std::size_t n = fleet.sites.size();
  flex_.resize(n);
  for (std::size_t s = 0; s < n && s < fleet.flex.size(); ++s) flex_[s] = fleet.flex[s];
  gpus_.assign(n, 0);
  gpu_max_watts_.assign(n, 700);
  for (const auto& e : fleet.endpoints) {
    if (gpus_[e.site_index]++ == 0) gpu_max_watts_[e.site_index] = e.gpu->profile().max_watts;
  }
  last_joules_.assign(n, 0);
  caps_.assign(n, 0);
  miners_on_.assign(n, false);
  import_kws_.resize(n);
  budget_kw_.resize(n);
}

void SitePowerLoop::Tick(std::span<const double> site_gpu_joules,
                         std::span<const double> usd_per_mwh, std::span<core::EnergyState> energy) {
  const double t_s = next_tick_s_;
  next_tick_s_ += tick_s_;
  const double dt = tick_s_;
  const std::int64_t now_s = start_epoch_s_ + static_cast<std::int64_t>(std::llround(t_s));
  const grid::UtcTime now{std::chrono::seconds(now_s)};
  // The meter reads the interval [t_s - dt, t_s): it is held to the budget in force at its start.
  const std::int64_t metered_s =
      start_epoch_s_ + static_cast<std::int64_t>(std::floor(t_s - dt + 1e-9));
  const std::size_t n = fleet_.sites.size();
  const std::size_t plot_bucket =
      static_cast<std::size_t>(std::max(0.0, std::floor((t_s - 0.5 * dt) / plot_step_s_)));
  const double hashprice = fleet_.hashprice_usd_per_ph_day;

  std::vector<core::SiteFlexInput> inputs(n);
  std::vector<double> import_kw(n), generation_kw(n);
  for (std::size_t s = 0; s < n; ++s) {
    const SimSiteFlex& f = flex_[s];
    const double gpu_watts = (site_gpu_joules[s] - last_joules_[s]) / dt;
    last_joules_[s] = site_gpu_joules[s];
    generation_kw[s] = f.wind ? f.wind_capacity_kw * f.wind->At(now) : 0;
    const double miners_kw = miners_on_[s] ? f.miners_kw : 0;
    const double power_kw = f.base_kw + gpu_watts * fleet_.sites[s].pue / 1e3 + miners_kw;
    import_kw[s] = std::max(0.0, power_kw - generation_kw[s]);
    if (f.can_export && generation_kw[s] > power_kw) {
      const double mwh = (generation_kw[s] - power_kw) * dt / 3.6e6;
      export_mwh_ += mwh;
      export_usd_ += mwh * usd_per_mwh[s];
    }
    // Grid targets: above the tightest binding event's target (the ramp over) counts.
    double target = std::numeric_limits<double>::infinity();
    double budget = f.grid_import_limit_kw;
    for (const auto& e : events_) {
      if (e.site != fleet_.sites[s].id) continue;
      if (e.BindingAt(metered_s)) target = std::min(target, e.target_kw);
      if (e.ActiveAt(metered_s)) budget = std::min(budget, e.target_kw);
    }
    if (import_kw[s] > target + 1e-9) seconds_above_target_ += dt;
    if (import_kws_[s].size() <= plot_bucket) {
      import_kws_[s].resize(plot_bucket + 1, 0.0);
      budget_kw_[s].resize(plot_bucket + 1, std::numeric_limits<double>::quiet_NaN());
    }
    import_kws_[s][plot_bucket] += import_kw[s] * dt;
    if (budget < kUnlimitedKw) {
      double& b = budget_kw_[s][plot_bucket];
      b = std::isnan(b) ? budget : std::min(b, budget);
    }

    core::SiteFlexInput& in = inputs[s];
    in.site = fleet_.sites[s].id;
    in.pue = fleet_.sites[s].pue;
    in.base_kw = f.base_kw;
    in.grid_import_limit_kw = f.grid_import_limit_kw;
    in.gpu_min_cap_watts = f.gpu_min_cap_watts;
    in.gpu_watts = gpu_watts;
    in.gpus = gpus_[s];
    in.gpu_max_watts = gpu_max_watts_[s];
    in.onsite_generation_kw = generation_kw[s];
    in.miners_kw = f.miners_kw;
    in.mining_worth_it = core::MiningUsdPerMwh(hashprice, f.miner_joules_per_th) > usd_per_mwh[s];
  }
  if (!control_) return;

  plans_ = controller_.Tick(now_s, dt, inputs, events_, plans_);
  for (std::size_t s = 0; s < n; ++s) {
    const core::SitePlan& p = plans_[s];
    caps_[s] = p.gpu_cap_watts;
    energy[s].steer_away = p.steer_away;
    energy[s].shed_low_priority = p.shed_low_priority;
    miners_on_[s] = p.miners_on;
    if (p.miners_on) {
      // The miners run until the next tick.
      const double mwh = flex_[s].miners_kw * dt / 3.6e6;
      mining_mwh_ += mwh;
      mining_energy_usd_ += mwh * usd_per_mwh[s];
      mining_revenue_usd_ += flex_[s].miner_th_per_s / 1e3 * hashprice * dt / 86400.0;
    }
  }
}

void SitePowerLoop::AddTo(PolicyResult* r) const {
  bool any_miners = false, any_export = false;
  for (const auto& f : flex_) {
    any_miners = any_miners || f.miners_kw > 0;
    any_export = any_export || (f.can_export && f.wind);
  }
  r->seconds_above_target = events_.empty() ? std::nullopt : std::optional(seconds_above_target_);
  if (any_miners) {
    r->mining_value_usd = mining_revenue_usd_ - mining_energy_usd_;
    r->mining_mwh = mining_mwh_;
  }
  if (any_export) {
    r->export_value_usd = export_usd_;
    r->export_mwh = export_mwh_;
  }
  r->power_step_s = plot_step_s_;
  r->site_import_kw = import_kws_;
  for (auto& v : r->site_import_kw) {
    for (double& x : v) x /= plot_step_s_;
  }
  r->site_budget_kw = budget_kw_;
}

}  // namespace powerplane::sim
