#include "core/router.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "testing/gpu_profiles.h"

namespace powerplane::core {
namespace {

// A small fleet built in code: sites with prices, endpoints with loads.
class FleetBuilder {
 public:
  std::uint32_t AddSite(std::string id, std::string jurisdiction, double usd_per_mwh,
                        double rtt_s = 0.01) {
    sites_.push_back({std::move(id), std::move(jurisdiction), 1.2, rtt_s});
    energy_.push_back({usd_per_mwh});
    return static_cast<std::uint32_t>(sites_.size() - 1);
  }
  std::size_t AddEndpoint(std::uint32_t site, EndpointLoad load = {}, std::uint32_t model = 0) {
    Endpoint e;
    e.id = sites_[site].id + "/e" + std::to_string(endpoints_.size());
    e.site_index = site;
    e.model_index = model;
    e.gpu = gpu_;
    e.max_batch = 64;
    e.max_queue = 16;
    e.hardware_usd_per_hour = 2.0;
    endpoints_.push_back(e);
    loads_.push_back(load);
    return endpoints_.size() - 1;
  }
  EndpointLoad& load(std::size_t i) { return loads_[i]; }
  FleetView View() const { return {sites_, energy_, endpoints_, loads_}; }
  EnergyState& energy(std::uint32_t s) { return energy_[s]; }

 private:
  std::shared_ptr<const GpuModel> gpu_ = testing::H200Llama8B();
  std::vector<Site> sites_;
  std::vector<EnergyState> energy_;
  std::vector<Endpoint> endpoints_;
  std::vector<EndpointLoad> loads_;
};

Request MakeRequest(const std::vector<std::string>* jurisdictions = nullptr) {
  Request r;
  r.prompt_tokens = 500;
  r.expected_output_tokens = 200;
  r.ttft_target_s = 1.0;
  r.tpot_target_s = 0.1;
  if (jurisdictions) r.allowed_jurisdictions = *jurisdictions;
  return r;
}

TEST(RouterTest, ChoosesTheCheaperSite) {
  FleetBuilder f;
  auto expensive = f.AddSite("dear", "US", 90);
  auto cheap = f.AddSite("cheap", "US", 20);
  f.AddEndpoint(expensive);
  auto e = f.AddEndpoint(cheap);
  Decision d = Router().Route(MakeRequest(), f.View());
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.endpoint_index, e);
  EXPECT_EQ(d.site_index, cheap);
  EXPECT_TRUE(d.meets_targets);
  EXPECT_EQ(d.candidates, 2);
  EXPECT_GT(d.runner_up_usd_per_token, d.score.total_usd_per_token);
  EXPECT_NEAR(d.score.usd_per_mwh, 20, 1e-12);
}

TEST(RouterTest, PriceChangeMovesTheChoice) {
  FleetBuilder f;
  auto a = f.AddSite("a", "US", 20);
  auto b = f.AddSite("b", "US", 40);
  f.AddEndpoint(a);
  f.AddEndpoint(b);
  EXPECT_EQ(Router().Route(MakeRequest(), f.View()).site_index, a);
  f.energy(a).usd_per_mwh = 500;
  EXPECT_EQ(Router().Route(MakeRequest(), f.View()).site_index, b);
}

TEST(RouterTest, FillsABusyEndpointBeforeWakingAnIdleOne) {
  FleetBuilder f;
  auto s = f.AddSite("s", "US", 30);
  f.AddEndpoint(s);
  auto busy = f.AddEndpoint(s, {.running = 20});
  Decision d = Router().Route(MakeRequest(), f.View());
  EXPECT_EQ(d.endpoint_index, busy);
  EXPECT_EQ(d.score.batch_after, 21);
}

TEST(RouterTest, NeverLeavesTheAllowedJurisdictions) {
  FleetBuilder f;
  auto us = f.AddSite("us", "US", 10);
  auto eu = f.AddSite("eu", "EU", 300);
  f.AddEndpoint(us);
  auto eu_e = f.AddEndpoint(eu, {.running = 64, .waiting = 15});
  std::vector<std::string> only_eu = {"EU"};
  Decision d = Router().Route(MakeRequest(&only_eu), f.View());
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.endpoint_index, eu_e);
  EXPECT_EQ(d.filtered.residency, 1);
  EXPECT_GT(d.score.predicted_ttft_s, 0.3);  // it queues behind a full batch.

  f.load(eu_e).waiting = 16;  // queue full
  d = Router().Route(MakeRequest(&only_eu), f.View());
  EXPECT_FALSE(d.placed);
  EXPECT_EQ(d.why_not, NoPlacement::kAllAtCapacity);

  f.load(eu_e) = {.healthy = false};
  d = Router().Route(MakeRequest(&only_eu), f.View());
  EXPECT_EQ(d.why_not, NoPlacement::kAllUnhealthy);

  std::vector<std::string> only_asia = {"JP"};
  d = Router().Route(MakeRequest(&only_asia), f.View());
  EXPECT_EQ(d.why_not, NoPlacement::kResidency);
}

TEST(RouterTest, LatencyTargetBeatsPrice) {
  FleetBuilder f;
  auto far = f.AddSite("far", "US", 5, /*rtt_s=*/1.5);
  auto near = f.AddSite("near", "US", 80, /*rtt_s=*/0.01);
  f.AddEndpoint(far);
  auto near_e = f.AddEndpoint(near);
  Decision d = Router().Route(MakeRequest(), f.View());
  EXPECT_EQ(d.endpoint_index, near_e);
  EXPECT_EQ(d.candidates, 2);
  EXPECT_EQ(d.candidates_meeting_targets, 1);
}

TEST(RouterTest, WhenNoCandidateMeetsTargetsTheCheapestIsChosen) {
  FleetBuilder f;
  auto a = f.AddSite("a", "US", 5, 3.0);
  auto b = f.AddSite("b", "US", 80, 2.0);
  auto a_e = f.AddEndpoint(a);
  f.AddEndpoint(b);
  Decision d = Router().Route(MakeRequest(), f.View());
  EXPECT_EQ(d.endpoint_index, a_e);
  EXPECT_FALSE(d.meets_targets);
}

TEST(RouterTest, ModelNotServed) {
  FleetBuilder f;
  auto s = f.AddSite("s", "US", 30);
  f.AddEndpoint(s, {}, /*model=*/1);
  Decision d = Router().Route(MakeRequest(), f.View());
  EXPECT_FALSE(d.placed);
  EXPECT_EQ(d.why_not, NoPlacement::kModelNotServed);
  EXPECT_NE(d.Explain(f.View()).find("model_not_served"), std::string::npos);
}

TEST(RouterTest, KvCapacityLimitsAdmission) {
  FleetBuilder f;
  auto s = f.AddSite("s", "US", 30);
  f.AddEndpoint(s, {.running = 1, .kv_tokens_used = 9'900});
  Endpoint e;
  e.max_batch = 64;
  e.max_queue = 0;
  e.kv_token_capacity = 10'000;
  Request r = MakeRequest();
  EXPECT_FALSE(Admits(r, e, {.running = 1, .kv_tokens_used = 9'900}));
  EXPECT_TRUE(Admits(r, e, {.running = 1, .kv_tokens_used = 9'000}));
  EXPECT_FALSE(Admits(r, e, {.running = 64}));
}

TEST(RouterTest, NegativePricesAreCheapest) {
  FleetBuilder f;
  auto a = f.AddSite("a", "US", 10);
  auto b = f.AddSite("b", "US", -20);
  f.AddEndpoint(a);
  f.AddEndpoint(b);
  Decision d = Router().Route(MakeRequest(), f.View());
  EXPECT_EQ(d.site_index, b);
  EXPECT_LT(d.score.energy_usd_per_token, 0);
}

}  // namespace
}  // namespace powerplane::core

namespace powerplane::core {
namespace {

TEST(RouterSteeringTest, SteeredSitesAreALastResortAndResidencyHolds) {
  FleetBuilder f;
  auto cheap = f.AddSite("cheap", "US", 10);
  auto dear = f.AddSite("dear", "US", 90);
  auto eu = f.AddSite("eu", "EU", 200);
  f.AddEndpoint(cheap);
  f.AddEndpoint(dear);
  auto eu_e = f.AddEndpoint(eu);
  f.energy(cheap).steer_away = true;
  Decision d = Router().Route(MakeRequest(), f.View());
  EXPECT_EQ(d.site_index, dear);  // moved, not dropped.
  EXPECT_FALSE(d.at_steered_site);
  // An EU-only tenant whose only site is short of power is still served there, not abroad.
  f.energy(eu).steer_away = true;
  std::vector<std::string> only_eu = {"EU"};
  d = Router().Route(MakeRequest(&only_eu), f.View());
  EXPECT_EQ(d.endpoint_index, eu_e);
  EXPECT_TRUE(d.at_steered_site);
  // Shedding refuses non-interactive work at that site (429 upstream), never moves it abroad.
  f.energy(eu).shed_low_priority = true;
  Request batch = MakeRequest(&only_eu);
  batch.priority = PriorityClass::kBatch;
  d = Router().Route(batch, f.View());
  EXPECT_FALSE(d.placed);
  EXPECT_EQ(d.filtered.shed, 1);
  EXPECT_EQ(d.why_not, NoPlacement::kAllAtCapacity);
}

}  // namespace
}  // namespace powerplane::core
