#include "fleet/fleet.h"

#include <gtest/gtest.h>

#include "testing/gpu_profiles.h"

namespace powerplane::fleet {
namespace {

Fleet TwoSiteFleet() {
  std::vector<core::Site> sites = {{"a", "US", 1.2, 0.01}, {"b", "EU", 1.2, 0.01}};
  std::vector<core::Endpoint> endpoints;
  for (std::uint32_t s = 0; s < 2; ++s) {
    core::Endpoint e;
    e.id = sites[s].id + "/e0";
    e.site_index = s;
    e.gpu = testing::H200Llama8B();
    e.max_batch = 4;
    e.max_queue = 1;
    endpoints.push_back(e);
  }
  return Fleet(sites, {"m"}, endpoints, {{"127.0.0.1", 1}, {"127.0.0.1", 2}});
}

core::Request Req() {
  core::Request r;
  r.prompt_tokens = 100;
  r.expected_output_tokens = 100;
  return r;
}

TEST(FleetTest, AdmissionCountsLoadUntilFinish) {
  Fleet f = TwoSiteFleet();
  f.SetMarketPrice(0, 10);
  f.SetMarketPrice(1, 50);
  core::Request r = Req();
  for (int i = 0; i < 5; ++i) {
    auto d = f.RouteAndAdmit(r);
    ASSERT_TRUE(d.placed);
    EXPECT_EQ(d.site_index, 0u) << i;
  }
  // Site a is full (batch 4 + queue 1): the next goes to b.
  EXPECT_EQ(f.RouteAndAdmit(r).site_index, 1u);
  EXPECT_EQ(f.Status().endpoints[0].in_flight, 5);
  f.Finish(0, r);
  EXPECT_EQ(f.Status().endpoints[0].in_flight, 4);
  EXPECT_EQ(f.RouteAndAdmit(r).site_index, 0u);
}

TEST(FleetTest, PriceOverrideWinsUntilCleared) {
  Fleet f = TwoSiteFleet();
  f.SetMarketPrice(0, 10);
  f.SetPriceOverride(0, 900.0);
  EXPECT_DOUBLE_EQ(f.UsdPerMwh(0), 900);
  f.SetMarketPrice(0, 12);
  EXPECT_DOUBLE_EQ(f.UsdPerMwh(0), 900);
  f.SetPriceOverride(0, std::nullopt);
  EXPECT_DOUBLE_EQ(f.UsdPerMwh(0), 12);
  EXPECT_FALSE(f.Status().sites[0].override_usd_per_mwh.has_value());
}

TEST(FleetTest, FailureTakesAnEndpointOutAndAProbePutsItBack) {
  Fleet f = TwoSiteFleet();
  f.SetMarketPrice(0, 10);
  f.SetMarketPrice(1, 50);
  f.MarkFailure(0, "connection refused");
  EXPECT_FALSE(f.Healthy(0));
  EXPECT_EQ(f.RouteAndAdmit(Req()).site_index, 1u);
  f.MarkProbeOk(0, ScrapedLoad{});
  EXPECT_TRUE(f.Healthy(0));
  EXPECT_EQ(f.RouteAndAdmit(Req()).site_index, 0u);
}

// An endpoint that answers its probes but fails requests: each failure in a row holds it out
// twice as long (probes cannot put it back sooner); failures while it is out count once; an
// answer ends the streak.
TEST(FleetTest, FailedRequestsOpenABreakerThatProbesCannotClose) {
  using std::chrono::seconds;
  Fleet f = TwoSiteFleet();
  f.SetMarketPrice(0, 10);
  f.SetMarketPrice(1, 50);
  const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  f.ReportFailure(0, "answered 500", t0);
  f.ReportFailure(0, "answered 500", t0 + std::chrono::milliseconds(500));  // while open.
  EXPECT_EQ(f.Status().endpoints[0].failures_in_a_row, 1);
  f.MarkProbeOk(0, ScrapedLoad{}, t0 + std::chrono::milliseconds(900));
  EXPECT_FALSE(f.Healthy(0));
  EXPECT_EQ(f.RouteAndAdmit(Req()).site_index, 1u);
  // Not a last resort either: with the other one out, nothing is placed.
  f.MarkFailure(1, "probe refused");
  EXPECT_EQ(f.RouteAndAdmit(Req()).why_not, core::NoPlacement::kAllUnhealthy);
  f.MarkProbeOk(1, ScrapedLoad{}, t0 + std::chrono::milliseconds(900));
  // Half-open after the cool-down; the next failure holds it out 2 s, then 4 s.
  f.MarkProbeOk(0, ScrapedLoad{}, t0 + Fleet::kFailureCoolDown);
  EXPECT_TRUE(f.Healthy(0));
  f.ReportFailure(0, "answered 500", t0 + seconds(2));
  f.MarkProbeOk(0, ScrapedLoad{}, t0 + seconds(3));
  EXPECT_FALSE(f.Healthy(0));
  f.MarkProbeOk(0, ScrapedLoad{}, t0 + seconds(4));
  EXPECT_TRUE(f.Healthy(0));
  f.ReportFailure(0, "answered 500", t0 + seconds(4));
  EXPECT_EQ(f.Status().endpoints[0].failures_in_a_row, 3);
  f.MarkProbeOk(0, ScrapedLoad{}, t0 + seconds(7));
  EXPECT_FALSE(f.Healthy(0));
  f.MarkProbeOk(0, ScrapedLoad{}, t0 + seconds(8));
  EXPECT_TRUE(f.Healthy(0));
  // An answer ends the streak: the next failure holds it out for the first cool-down again.
  f.ReportAnswer(0, -1, 0.2, t0 + seconds(8));
  EXPECT_EQ(f.Status().endpoints[0].failures_in_a_row, 0);
  f.ReportFailure(0, "connection refused", t0 + seconds(9));
  f.MarkProbeOk(0, ScrapedLoad{}, t0 + seconds(9) + Fleet::kFailureCoolDown);
  EXPECT_TRUE(f.Healthy(0));
  // The cool-down stops growing at its cap.
  for (int i = 1; i <= 12; ++i) f.ReportFailure(0, "answered 500", t0 + seconds(100 * i));
  EXPECT_EQ(f.Status().endpoints[0].failures_in_a_row, 13);
  const auto last = t0 + seconds(1200);
  f.MarkProbeOk(0, ScrapedLoad{}, last + Fleet::kFailureCoolDownMax - std::chrono::milliseconds(1));
  EXPECT_FALSE(f.Healthy(0));
  f.MarkProbeOk(0, ScrapedLoad{}, last + Fleet::kFailureCoolDownMax);
  EXPECT_TRUE(f.Healthy(0));
}

TEST(FleetTest, ASlowStreakOpensTheBreakerForTheCoolDown) {
  Fleet f = TwoSiteFleet();
  const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  // Slow answers not in a row do not trip it.
  for (int i = 0; i < 3 * Fleet::kSlowStreak; ++i) {
    f.ReportAnswer(0, i % 2 == 0 ? 10.0 : 0.2, 0.2, t0);
  }
  EXPECT_TRUE(f.Healthy(0));
  for (int i = 0; i < Fleet::kSlowStreak; ++i) f.ReportAnswer(0, 10.0, 0.2, t0);
  EXPECT_FALSE(f.Healthy(0));
  EXPECT_TRUE(f.Healthy(1));
  // A probe inside the cool-down does not put it back; one after it does.
  f.MarkProbeOk(0, ScrapedLoad{}, t0 + Fleet::kBreakerCoolDown - std::chrono::milliseconds(1));
  EXPECT_FALSE(f.Healthy(0));
  f.MarkProbeOk(0, ScrapedLoad{}, t0 + Fleet::kBreakerCoolDown);
  EXPECT_TRUE(f.Healthy(0));
  EXPECT_NE(f.Status().endpoints[0].last_error.find("slow"), std::string::npos);
}

// Slow is not down: when every endpoint is held out by the latency breaker alone, requests still
// go to them (the cheaper first); one that has failed, or is excluded for this request, is not.
TEST(FleetTest, SlowEndpointsStillServeWhenNothingHealthyIsLeft) {
  Fleet f = TwoSiteFleet();
  f.SetMarketPrice(0, 10);
  f.SetMarketPrice(1, 50);
  const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  for (std::uint32_t e : {0u, 1u}) {
    for (int i = 0; i < Fleet::kSlowStreak; ++i) f.ReportAnswer(e, 10.0, 0.2, t0);
  }
  ASSERT_FALSE(f.Healthy(0));
  ASSERT_FALSE(f.Healthy(1));
  core::Decision d = f.RouteAndAdmit(Req());
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.site_index, 0u);
  EXPECT_FALSE(f.Healthy(0));  // still out: used only for want of anything else.
  EXPECT_EQ(f.RouteAndAdmit(Req(), {0}).site_index, 1u);
  f.MarkFailure(1, "connection refused");
  EXPECT_FALSE(f.RouteAndAdmit(Req(), {0}).placed);
  EXPECT_EQ(f.RouteAndAdmit(Req()).site_index, 0u);
  f.MarkFailure(0, "connection refused");
  EXPECT_EQ(f.RouteAndAdmit(Req()).why_not, core::NoPlacement::kAllUnhealthy);
}

// The slow endpoint also takes what a full healthy one cannot, and when it is full too the
// answer is "at capacity" (the caller waits for a slot), not "unhealthy". Answers from requests
// it took while held out do not hold it out longer; a probe that answers during the cool-down
// makes it usable again after a failure; its power still counts at its site.
TEST(FleetTest, ASlowEndpointTakesTheOverflowWithoutBeingHeldOutLonger) {
  Fleet f = TwoSiteFleet();
  f.SetMarketPrice(0, 10);
  f.SetMarketPrice(1, 50);
  const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  for (int i = 0; i < Fleet::kSlowStreak; ++i) f.ReportAnswer(1, 10.0, 0.2, t0);
  ASSERT_FALSE(f.Healthy(1));
  const int capacity = 5;  // max_batch 4 + max_queue 1.
  for (int i = 0; i < capacity; ++i) EXPECT_EQ(f.RouteAndAdmit(Req()).site_index, 0u) << i;
  core::Decision overflow = f.RouteAndAdmit(Req());
  ASSERT_TRUE(overflow.placed);
  EXPECT_EQ(overflow.site_index, 1u);
  EXPECT_FALSE(overflow.meets_targets);
  for (int i = 1; i < capacity; ++i) ASSERT_TRUE(f.RouteAndAdmit(Req()).placed);
  EXPECT_EQ(f.RouteAndAdmit(Req()).why_not, core::NoPlacement::kAllAtCapacity);
  // Slow answers while it is held out do not push the cool-down further.
  for (int i = 0; i < Fleet::kSlowStreak; ++i) {
    f.ReportAnswer(1, 10.0, 0.2, t0 + std::chrono::seconds(1));
  }
  ScrapedLoad drawing;
  drawing.watts = 500;
  f.MarkProbeOk(1, drawing, t0 + std::chrono::seconds(2));
  EXPECT_EQ(f.Status().sites[1].gpu_watts, 500);  // held out, but serving: its draw counts.
  f.MarkFailure(1, "probe timed out");
  f.MarkProbeOk(1, drawing, t0 + std::chrono::seconds(3));  // answering again, still held out.
  EXPECT_FALSE(f.Healthy(1));
  f.Finish(0, Req());
  f.Finish(1, Req());
  EXPECT_TRUE(f.RouteAndAdmit(Req(), {0}).placed);  // usable as a slow endpoint again.
  f.MarkProbeOk(1, drawing, t0 + Fleet::kBreakerCoolDown);
  EXPECT_TRUE(f.Healthy(1));
}

TEST(FleetTest, ExcludedEndpointsAreSkippedForOneDecision) {
  Fleet f = TwoSiteFleet();
  f.SetMarketPrice(0, 10);
  f.SetMarketPrice(1, 50);
  EXPECT_EQ(f.RouteAndAdmit(Req(), {0}).site_index, 1u);
  EXPECT_TRUE(f.Healthy(0));
}

TEST(FleetTest, ScrapedLoadCountsTrafficFromElsewhere) {
  Fleet f = TwoSiteFleet();
  f.MarkProbeOk(0, ScrapedLoad{.running = 4, .waiting = 1, .kv_usage_fraction = 0.5});
  auto st = f.Status();
  EXPECT_EQ(st.endpoints[0].load.running, 4);
  EXPECT_EQ(st.endpoints[0].load.waiting, 1);
  f.SetMarketPrice(0, 10);
  f.SetMarketPrice(1, 50);
  EXPECT_EQ(f.RouteAndAdmit(Req()).site_index, 1u);  // a is full with others' work.
}

}  // namespace
}  // namespace powerplane::fleet
