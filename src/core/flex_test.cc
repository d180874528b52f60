#include "core/flex.h"

#include <gtest/gtest.h>

#include <random>

namespace powerplane::core {
namespace {

SiteFlexInput Site(double gpu_watts) {
  SiteFlexInput in;
  in.site = "s";
  in.pue = 1.25;
  in.base_kw = 2;
  in.gpus = 8;
  in.gpu_watts = gpu_watts;
  in.gpu_min_cap_watts = 300;
  in.gpu_max_watts = 700;
  in.miners_kw = 14;
  in.mining_worth_it = true;
  return in;
}

GridEvent Event(double target_kw, std::int64_t start = 0, std::int64_t duration = 3600,
                std::int64_t ramp = 10) {
  return {"e1", "s", target_kw, start, duration, ramp, "admin"};
}

TEST(FlexTest, MinersStopFirstAndThatMayBeEnough) {
  FlexController c;
  std::vector<SitePlan> prev;
  std::vector<SiteFlexInput> sites = {Site(8 * 500)};  // 5 kW of GPUs x 1.25 + 2 base
  prev = c.Tick(0, 0.25, sites, {}, prev);
  ASSERT_TRUE(prev[0].miners_on);
  EXPECT_EQ(prev[0].gpu_cap_watts, 0);
  // 50% of the draw with miners (2 + 5 + 14 = 21 kW): stopping the miners is enough.
  std::vector<GridEvent> events = {Event(10.5, 1)};
  auto plan = c.Tick(1, 0.25, sites, events, prev);
  EXPECT_FALSE(plan[0].miners_on);
  EXPECT_EQ(plan[0].gpu_cap_watts, 0);
  EXPECT_FALSE(plan[0].steer_away);
  ASSERT_FALSE(plan[0].actions.empty());
  EXPECT_NE(plan[0].actions[0].find("stop miners"), std::string::npos) << plan[0].actions[0];
  EXPECT_NE(plan[0].actions[0].find("event e1"), std::string::npos);
}

TEST(FlexTest, GpusAreCappedWhenMinersAreNotEnoughThenSteeredThenShed) {
  FlexController c;
  std::vector<SiteFlexInput> sites = {Site(8 * 650)};  // 6.5 kW x 1.25 = 8.1 kW + 2 base
  // Target 7 kW: 5 kW for GPUs = 500 W each.
  std::vector<GridEvent> events = {Event(7)};
  auto plan = c.Tick(0, 0.25, sites, events, {});
  EXPECT_FALSE(plan[0].miners_on);
  EXPECT_NEAR(plan[0].gpu_cap_watts, 500, 1e-6);
  EXPECT_FALSE(plan[0].steer_away);
  // Target 4 kW: even 300 W caps (3 kW) do not fit in 2 kW: steer, and shed what is over.
  events = {Event(4)};
  sites[0].gpu_watts = 8 * 300;
  plan = c.Tick(1, 0.25, sites, events, plan);
  EXPECT_EQ(plan[0].gpu_cap_watts, 300);
  EXPECT_TRUE(plan[0].steer_away);
  EXPECT_TRUE(plan[0].shed_low_priority);
}

TEST(FlexTest, RestoresInReverseAtTheSlew) {
  FlexOptions o;
  o.cap_slew_watts_per_s = 100;
  FlexController c(o);
  std::vector<SiteFlexInput> sites = {Site(8 * 500)};
  std::vector<GridEvent> events = {Event(7, 0, 10)};
  auto plan = c.Tick(0, 1, sites, events, {});
  ASSERT_NEAR(plan[0].gpu_cap_watts, 500, 1e-6);
  // The event ends at t=10: caps rise 100 W per second, miners come back last.
  double last_cap = plan[0].gpu_cap_watts;
  int t = 10;
  for (; t < 20 && plan[0].gpu_cap_watts != 0; ++t) {
    plan = c.Tick(t, 1, sites, events, plan);
    if (plan[0].gpu_cap_watts != 0) {
      EXPECT_LE(plan[0].gpu_cap_watts - last_cap, 100 + 1e-9);
      EXPECT_FALSE(plan[0].miners_on);
      last_cap = plan[0].gpu_cap_watts;
    }
  }
  EXPECT_EQ(plan[0].gpu_cap_watts, 0);
  EXPECT_GE(t, 12);
  plan = c.Tick(t, 1, sites, events, plan);
  EXPECT_TRUE(plan[0].miners_on);
}

TEST(FlexTest, MinersStopWhenMiningNoLongerPays) {
  FlexController c;
  std::vector<SiteFlexInput> sites = {Site(1000)};
  auto plan = c.Tick(0, 1, sites, {}, {});
  ASSERT_TRUE(plan[0].miners_on);
  sites[0].mining_worth_it = false;
  plan = c.Tick(1, 1, sites, {}, plan);
  EXPECT_FALSE(plan[0].miners_on);
  EXPECT_NE(plan[0].actions[0].find("no longer beats the price"), std::string::npos);
}

// Property: under random events, loads and generation, once an event's ramp is over the site's
// import never exceeds the event's target, as long as the target leaves room for the base load
// and the GPUs at their lowest cap (below that the controller must be steering and shedding).
TEST(FlexPropertyTest, NeverAboveATargetAfterTheRamp) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    FlexController c;
    std::uniform_real_distribution<double> u(0, 1);
    SiteFlexInput in = Site(0);
    in.gpus = 1 + static_cast<int>(u(rng) * 16);
    in.base_kw = u(rng) * 5;
    in.miners_kw = u(rng) * 30;
    in.pue = 1.05 + u(rng) * 0.4;
    std::vector<GridEvent> events;
    std::vector<SitePlan> plan;
    for (int t = 0; t < 300; ++t) {
      // Now and then a new event with a random target and ramp.
      if (u(rng) < 0.03) {
        const double full_kw = in.base_kw + in.gpus * 0.7 * in.pue + in.miners_kw;
        events = {{"e" + std::to_string(t), "s", full_kw * (0.2 + 0.8 * u(rng)), t,
                   static_cast<std::int64_t>(5 + u(rng) * 60), static_cast<std::int64_t>(u(rng) * 5),
                   "test"}};
      }
      in.onsite_generation_kw = u(rng) < 0.5 ? 0 : u(rng) * 5;
      in.mining_worth_it = u(rng) < 0.8;
      const double demand_w = in.gpus * (126 + u(rng) * 574);
      // The GPUs draw their demand, bounded by the cap in force.
      const double cap = plan.empty() ? 0 : plan[0].gpu_cap_watts;
      in.gpu_watts = cap > 0 ? std::min(demand_w, cap * in.gpus) : demand_w;
      std::vector<SiteFlexInput> sites = {in};
      plan = c.Tick(t, 1, sites, events, plan);
      // Apply the plan: the draw after this tick's actions, with demand as it is.
      const SitePlan& p = plan[0];
      const double gpu_w = p.gpu_cap_watts > 0 ? std::min(demand_w, p.gpu_cap_watts * in.gpus)
                                               : demand_w;
      const double draw = in.base_kw + gpu_w * in.pue / 1e3 + (p.miners_on ? in.miners_kw : 0);
      const double import_kw = std::max(0.0, draw - in.onsite_generation_kw);
      for (const auto& e : events) {
        if (!e.BindingAt(t)) continue;
        const double floor_kw = in.base_kw + in.gpus * in.gpu_min_cap_watts * in.pue / 1e3 -
                                in.onsite_generation_kw;
        if (e.target_kw >= floor_kw) {
          ASSERT_LE(import_kw, e.target_kw + 1e-6)
              << "trial " << trial << " t " << t << " cap " << p.gpu_cap_watts;
        } else {
          EXPECT_TRUE(p.steer_away) << "trial " << trial << " t " << t;
        }
      }
    }
  }
}

}  // namespace
}  // namespace powerplane::core

#include "core/dispatch.h"

namespace powerplane::core {
namespace {

TEST(DispatchTest, MiningValueMatchesTheReferenceFigures) {
  // REFERENCE.md: at 38 USD/PH/day, 13.5 J/TH is about 117 USD/MWh and 18 J/TH about 88.
  EXPECT_NEAR(MiningUsdPerMwh(38, 13.5), 117.3, 0.1);
  EXPECT_NEAR(MiningUsdPerMwh(38, 18), 88.0, 0.1);
  // Inference at 0.077 J/token, PUE 1.25, 0.20 USD per million tokens: about 7,480 USD/MWh.
  EXPECT_NEAR(InferenceUsdPerMwh(0.077, 1.25, 0.20), 7480, 5);
  auto ranked = RankUses(7480, 117, 3000);
  EXPECT_EQ(ranked[0].use, "inference");
  EXPECT_EQ(ranked[1].use, "export");
  EXPECT_EQ(RankUses(10, 117, -1).size(), 2u);
}

}  // namespace
}  // namespace powerplane::core
