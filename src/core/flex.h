#pragma once
// The FlexController: each tick, per site, the power the site may draw and the actions that keep
// it there, in this order: stop miners, pause deferrable work, cap GPU power, steer new
// interactive requests to other sites, and only last shed low-priority interactive work. When the
// constraint lifts the ladder runs in reverse, GPU caps rising at a bounded slew. Pure: time and
// measurements come in as arguments; plans come out with their reasons.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/grid_event.h"

namespace powerplane::core {

// What a site is and draws now (kW are facility kW: GPU watts x PUE plus the rest).
struct SiteFlexInput {
  std::string site;
  double pue = 1.2;
  double base_kw = 0;               // lights, cooling not in PUE, networking: fixed.
  double grid_import_limit_kw = 1e9;  // the connection's limit.
  double onsite_generation_kw = 0;  // behind-the-meter wind/solar/gas now.
  double gpu_watts = 0;             // measured GPU power now (sum over endpoints).
  int gpus = 0;                     // GPUs (endpoints) whose power can be capped.
  double gpu_max_watts = 700;       // board limit per GPU.
  double gpu_min_cap_watts = 300;   // lowest cap the controller will set.
  double miners_kw = 0;             // the miners' draw when running.
  bool mining_worth_it = false;     // dispatch economics says mining beats the price now.
  double deferrable_kw = 0;         // batch work that could pause (none yet: 0).
  double operator_cap_kw = 0;       // an operator's limit on import; 0 = none.
};

// What the controller decided for one site this tick.
struct SitePlan {
  std::string site;
  double budget_kw = 0;        // the most the site may import now.
  double power_kw = 0;         // its measured facility draw.
  double import_kw = 0;        // power minus on-site generation (never below 0).
  std::optional<GridEvent> event;  // the binding or pending event, if any.
  bool miners_on = false;
  bool deferrable_paused = false;
  double gpu_cap_watts = 0;    // per GPU; 0 = uncapped.
  bool cap_rising = false;     // the cap is being raised at the slew (the constraint lifted).
  bool steer_away = false;     // new interactive work goes elsewhere while any site has room.
  bool shed_low_priority = false;  // answer non-interactive work 429 here.
  std::vector<std::string> actions;  // what changed this tick, with why.
};

struct FlexOptions {
  double cap_slew_watts_per_s = 100;  // how fast GPU caps rise when the constraint lifts.
  double headroom_fraction = 0.05;    // keep this much of the budget free before restoring.
  // Throughput lost to a cap, for predicting GPU power under one: DVFS measurements show about
  // 7% fewer tokens for 25% less power; the controller only needs power, which a cap bounds.
};

class FlexController {
 public:
  explicit FlexController(FlexOptions options = {}) : options_(options) {}

  // Plans every site for time `now_s`, `dt_s` after the previous tick. `previous` holds the
  // last tick's plans (matched by site; empty on the first tick). Events may name any site.
  std::vector<SitePlan> Tick(std::int64_t now_s, double dt_s,
                             std::span<const SiteFlexInput> sites,
                             std::span<const GridEvent> events,
                             std::span<const SitePlan> previous) const;

 private:
  SitePlan PlanSite(std::int64_t now_s, double dt_s, const SiteFlexInput& in,
                    std::span<const GridEvent> events, const SitePlan* previous) const;
  FlexOptions options_;
};

}  // namespace powerplane::core
