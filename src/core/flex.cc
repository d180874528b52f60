#include "core/flex.h"

#include <algorithm>
#include <cstdio>

namespace powerplane::core {
namespace {

std::string Format(const char* fmt, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, fmt, a, b, c);
  return buf;
}

}  // namespace

std::vector<SitePlan> FlexController::Tick(std::int64_t now_s, double dt_s,
                                           std::span<const SiteFlexInput> sites,
                                           std::span<const GridEvent> events,
                                           std::span<const SitePlan> previous) const {
  std::vector<SitePlan> plans;
  plans.reserve(sites.size());
  for (const auto& in : sites) {
    const SitePlan* prev = nullptr;
    for (const auto& p : previous) {
      if (p.site == in.site) prev = &p;
    }
    plans.push_back(PlanSite(now_s, dt_s, in, events, prev));
  }
  return plans;
}

SitePlan FlexController::PlanSite(std::int64_t now_s, double dt_s, const SiteFlexInput& in,
                                  std::span<const GridEvent> events,
                                  const SitePlan* prev) const {
  SitePlan plan;
  plan.site = in.site;
  const bool miners_were_on = prev ? prev->miners_on : false;
  const double prev_cap = prev ? prev->gpu_cap_watts : 0;

  // The budget on grid import: the connection, the operator's cap, and the tightest event that
  // is active (an event is honoured from its start: the ramp is the deadline, not a grace).
  double import_budget = in.grid_import_limit_kw;
  if (in.operator_cap_kw > 0) import_budget = std::min(import_budget, in.operator_cap_kw);
  for (const auto& e : events) {
    if (e.site != in.site || !e.ActiveAt(now_s)) continue;
    if (!plan.event || e.target_kw < plan.event->target_kw) plan.event = e;
  }
  if (plan.event) import_budget = std::min(import_budget, plan.event->target_kw);
  plan.budget_kw = import_budget;

  // What the site draws now, with the miners as they were.
  const double gpu_kw = in.gpu_watts * in.pue / 1e3;
  const double miners_now_kw = miners_were_on ? in.miners_kw : 0;
  plan.power_kw = in.base_kw + gpu_kw + miners_now_kw + (prev && prev->deferrable_paused ? 0 : in.deferrable_kw);
  plan.import_kw = std::max(0.0, plan.power_kw - in.onsite_generation_kw);
  // Power the site may use in all: the import budget plus what it makes itself.
  const double usable_kw = import_budget + in.onsite_generation_kw;
  const double margin_kw = options_.headroom_fraction * std::max(usable_kw, 0.0);

  // Build the draw from the bottom up, each use only if it fits: base, then inference (GPUs,
  // capped only as far as needed), then the flexible loads. Interactive inference is never
  // displaced by mining.
  double room_kw = usable_kw - in.base_kw;

  // GPUs: the cap is the highest per-GPU power that fits the room (not below the minimum cap),
  // whatever they draw now: a cap that does not bind costs nothing and keeps the site under its
  // budget when load grows. No cap when full power fits.
  const double per_gpu_fit_w =
      in.gpus > 0 ? std::max(0.0, room_kw) * 1e3 / in.pue / in.gpus : in.gpu_max_watts;
  double cap = per_gpu_fit_w >= in.gpu_max_watts
                   ? 0
                   : std::clamp(per_gpu_fit_w, in.gpu_min_cap_watts, in.gpu_max_watts);
  // Restoring: a cap rises at most by the slew per tick; it falls at once.
  if (prev_cap > 0) {
    const double max_rise = options_.cap_slew_watts_per_s * std::max(dt_s, 0.0);
    const double wanted = cap > 0 ? cap : in.gpu_max_watts;
    if (wanted > prev_cap) {
      cap = std::min(wanted, prev_cap + max_rise);
      if (cap >= in.gpu_max_watts) cap = 0;
      plan.cap_rising = cap > 0;
    }
  }
  plan.gpu_cap_watts = cap;
  const double gpu_kw_now = cap > 0 ? std::min(gpu_kw, cap * in.gpus * in.pue / 1e3) : gpu_kw;
  // What inference may grow to here: its GPUs at their cap (or board limit).
  const double gpu_reserved_kw =
      in.gpus * (cap > 0 ? cap : in.gpu_max_watts) * in.pue / 1e3;

  // Over even at the lowest cap: new interactive work goes elsewhere while others have room;
  // and if the site is still over by more than the margin, shed low-priority work.
  const double over_kw = gpu_kw_now - room_kw;
  const bool cannot_fit = in.gpus > 0 && per_gpu_fit_w < in.gpu_min_cap_watts;
  if (cannot_fit || over_kw > 0) {
    plan.steer_away = true;
    if (over_kw > margin_kw) plan.shed_low_priority = true;
  } else if (prev && prev->steer_away && room_kw - gpu_reserved_kw < margin_kw &&
             per_gpu_fit_w < in.gpu_max_watts) {
    plan.steer_away = true;  // hysteresis: accept again only with headroom to spare.
  }
  room_kw -= gpu_kw_now;

  // Deferrable work pauses before interactive work is squeezed.
  plan.deferrable_paused = in.deferrable_kw > 0 && room_kw < in.deferrable_kw;
  if (!plan.deferrable_paused) room_kw -= in.deferrable_kw;

  // Miners: only on power left once inference has room to grow to its cap, only when mining
  // beats the price, and with headroom to spare before restarting (first off, last on).
  const double miner_room =
      usable_kw - in.base_kw - gpu_reserved_kw - (plan.deferrable_paused ? 0 : in.deferrable_kw);
  plan.miners_on = in.miners_kw > 0 && in.mining_worth_it && cap == 0 &&
                   miner_room - (miners_were_on ? 0 : margin_kw) >= in.miners_kw;

  // Reasons, for what changed.
  auto why = [&] {
    return plan.event ? "event " + plan.event->id + " target " + Format("%.1f kW", plan.event->target_kw)
                      : Format("import limit %.1f kW", import_budget);
  };
  if (miners_were_on && !plan.miners_on) {
    plan.actions.push_back(Format("stop miners (%.1f kW): ", in.miners_kw) +
                           (in.mining_worth_it ? why() : "mining no longer beats the price"));
  }
  if (!miners_were_on && plan.miners_on) {
    plan.actions.push_back(
        room_kw < 1e8 ? Format("start miners (%.1f kW): mining beats the price, %.1f kW free",
                               in.miners_kw, room_kw)
                      : Format("start miners (%.1f kW): mining beats the price", in.miners_kw));
  }
  if (cap > 0 && (prev_cap == 0 || cap < prev_cap)) {
    plan.actions.push_back(Format("cap GPUs at %.0f W: ", cap) + why());
  } else if (prev_cap > 0 && cap == 0) {
    plan.actions.push_back("uncap GPUs: constraint lifted");
  } else if (plan.cap_rising && !prev->cap_rising) {
    plan.actions.push_back(Format("raise GPU caps from %.0f W at %.0f W/s: constraint lifted",
                                  prev_cap, options_.cap_slew_watts_per_s));
  }
  if (plan.deferrable_paused && !(prev && prev->deferrable_paused)) {
    plan.actions.push_back(Format("pause deferrable work (%.1f kW): ", in.deferrable_kw) + why());
  } else if (!plan.deferrable_paused && prev && prev->deferrable_paused) {
    plan.actions.push_back("resume deferrable work");
  }
  if (plan.steer_away && !(prev && prev->steer_away)) {
    plan.actions.push_back("steer new interactive work to other sites: " + why());
  } else if (!plan.steer_away && prev && prev->steer_away) {
    plan.actions.push_back("accept new interactive work again");
  }
  if (plan.shed_low_priority && !(prev && prev->shed_low_priority)) {
    plan.actions.push_back("shed low-priority work (429): still over at the lowest GPU cap");
  }
  return plan;
}

}  // namespace powerplane::core
