#include "core/router.h"
#include "core/route_index.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <limits>
#include <random>
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

TEST(RouterTest, PausedDeferrableWorkGoesElsewhereOrWaits) {
  FleetBuilder f;
  auto cheap = f.AddSite("cheap", "US", 10);
  auto dear = f.AddSite("dear", "US", 90);
  f.AddEndpoint(cheap);
  f.AddEndpoint(dear);
  f.energy(cheap).pause_deferrable = true;
  Request batch = MakeRequest();
  batch.priority = PriorityClass::kBatch;
  Decision d = Router().Route(batch, f.View());
  ASSERT_TRUE(d.placed);
  EXPECT_EQ(d.site_index, dear);
  EXPECT_EQ(d.filtered.shed, 1);
  // Interactive and standard work still goes to the cheap site.
  Request interactive = MakeRequest();
  EXPECT_EQ(Router().Route(interactive, f.View()).site_index, cheap);
  // With batch work paused everywhere, it is not placed (the gateway makes it wait).
  f.energy(dear).pause_deferrable = true;
  d = Router().Route(batch, f.View());
  EXPECT_FALSE(d.placed);
  EXPECT_EQ(d.why_not, NoPlacement::kAllAtCapacity);
}

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

namespace powerplane::core {
namespace {

// The router scores only candidates whose cost bound could still change the choice. This
// reference scores every candidate; on random fleets both must choose the same endpoint with the
// same cost and runner-up.
struct Reference {
  std::int64_t index = -1;
  double cost = 0, runner_up = 0;
};
Reference ReferenceRoute(const Request& request, const FleetView& fleet) {
  const double inf = std::numeric_limits<double>::infinity();
  // best/second per list: meeting, steered meeting, missing, steered missing.
  std::array<double, 4> best{inf, inf, inf, inf}, second{inf, inf, inf, inf};
  std::array<std::int64_t, 4> at{-1, -1, -1, -1};
  for (std::size_t i = 0; i < fleet.endpoints.size(); ++i) {
    const Endpoint& e = fleet.endpoints[i];
    const Site& site = fleet.sites[e.site_index];
    const EnergyState& energy = fleet.site_energy[e.site_index];
    if (e.model_index != request.model_index || !fleet.loads[i].healthy) continue;
    if (!request.allowed_jurisdictions.empty() &&
        std::find(request.allowed_jurisdictions.begin(), request.allowed_jurisdictions.end(),
                  site.jurisdiction) == request.allowed_jurisdictions.end()) {
      continue;
    }
    if (energy.shed_low_priority && request.priority != PriorityClass::kInteractive) continue;
    if (energy.pause_deferrable && request.priority == PriorityClass::kBatch) continue;
    if (!Admits(request, e, fleet.loads[i])) continue;
    const CostBreakdown c = ScoreCandidate(request, site, energy, e, fleet.loads[i]);
    const int list = (MeetsTargets(request, c) ? 0 : 2) + (energy.steer_away ? 1 : 0);
    if (c.total_usd_per_token < best[list]) {
      second[list] = best[list];
      best[list] = c.total_usd_per_token;
      at[list] = static_cast<std::int64_t>(i);
    } else if (c.total_usd_per_token < second[list]) {
      second[list] = c.total_usd_per_token;
    }
  }
  for (int list = 0; list < 4; ++list) {
    if (at[list] >= 0) return {at[list], best[list], second[list] == inf ? 0 : second[list]};
  }
  return {};
}

TEST(RouterPruningTest, ChoosesWhatScoringEveryCandidateChooses) {
  std::mt19937_64 rng(7);
  auto gpu = testing::H200Llama8B();
  // A slower, hungrier second GPU model, so some groups mix models and are not bounded.
  GpuProfile slower = testing::H200Llama8BProfile();
  for (auto& point : slower.decode) {
    point.step_s *= 1.7;
    point.watts *= 0.8;
  }
  auto gpu2 = std::make_shared<const GpuModel>(slower);
  int pruned_somewhere = 0, visited_fewer = 0, unplaced = 0;
  for (int round = 0; round < 300; ++round) {
    const int site_count = 1 + static_cast<int>(rng() % 12);
    const int endpoint_count = 1 + static_cast<int>(rng() % 200);
    std::vector<Site> sites;
    std::vector<EnergyState> energy;
    std::uniform_real_distribution<double> price(-40, 400), rtt(0.001, 0.2), unit(0, 1);
    for (int s = 0; s < site_count; ++s) {
      sites.push_back({"s" + std::to_string(s), s % 3 == 0 ? "EU" : "US", 1.05 + 0.4 * unit(rng),
                       rtt(rng)});
      EnergyState st{price(rng)};
      st.steer_away = unit(rng) < 0.15;
      st.shed_low_priority = unit(rng) < 0.1;
      st.pause_deferrable = unit(rng) < 0.2;
      energy.push_back(st);
    }
    std::vector<Endpoint> endpoints;
    std::vector<EndpointLoad> loads;
    for (int i = 0; i < endpoint_count; ++i) {
      Endpoint e;
      e.id = "e" + std::to_string(i);
      e.site_index = static_cast<std::uint32_t>(rng() % site_count);
      e.model_index = rng() % 10 == 0 ? 1 : 0;
      e.gpu = rng() % 8 == 0 ? gpu2 : gpu;
      e.max_batch = 32 + static_cast<int>(rng() % 225);
      e.max_queue = static_cast<int>(rng() % 64);
      e.kv_token_capacity = rng() % 4 == 0 ? 0 : 400000 + static_cast<std::int64_t>(rng() % 600000);
      e.hardware_usd_per_hour = 0.5 + 3 * unit(rng);
      endpoints.push_back(e);
      EndpointLoad l;
      l.running = static_cast<int>(rng() % (e.max_batch + 1));
      l.waiting = l.running == e.max_batch ? static_cast<int>(rng() % (e.max_queue + 1)) : 0;
      l.kv_tokens_used = static_cast<std::int64_t>(l.running) * (200 + rng() % 3000);
      l.mean_context_tokens = rng() % 5 == 0 ? 0 : 100 + static_cast<double>(rng() % 6000);
      l.healthy = rng() % 20 != 0;
      loads.push_back(l);
    }
    const FleetView view{sites, energy, endpoints, loads};
    // The same fleet through an index built at other loads and brought up to date with Update,
    // as fleet::Fleet keeps it.
    std::vector<EndpointLoad> stale = loads;
    for (auto& l : stale) {
      l.running = static_cast<int>(rng() % 300);
      l.mean_context_tokens = rng() % 3 == 0 ? 0 : static_cast<double>(rng() % 8000);
    }
    RouteIndex index(endpoints, stale);
    for (std::size_t i = 0; i < endpoints.size(); ++i) {
      index.Update(static_cast<std::uint32_t>(i), endpoints[i], loads[i]);
    }
    FleetView indexed = view;
    indexed.index = &index;
    const std::vector<std::string> eu = {"EU"};
    for (int q = 0; q < 20; ++q) {
      Request r;
      r.prompt_tokens = 1 + static_cast<int>(rng() % 6000);
      r.expected_output_tokens = 1 + static_cast<int>(rng() % 1000);
      r.ttft_target_s = 0.2 + 2 * unit(rng);
      r.tpot_target_s = 0.01 + 0.15 * unit(rng);
      r.priority = rng() % 4 == 0 ? PriorityClass::kBatch : PriorityClass::kInteractive;
      r.model_index = rng() % 10 == 0 ? 1 : 0;
      if (rng() % 4 == 0) r.allowed_jurisdictions = eu;
      const Decision d = Router().Route(r, view);
      const Reference want = ReferenceRoute(r, view);
      ASSERT_EQ(d.placed, want.index >= 0) << "round " << round << " request " << q;
      const Decision di = Router().Route(r, indexed);
      ASSERT_EQ(di.placed, d.placed) << "round " << round << " request " << q;
      ASSERT_EQ(di.why_not, d.why_not) << "round " << round << " request " << q;
      if (!d.placed) {
        // Nothing placed: the index visited everything, so its counts are a scan's.
        ASSERT_EQ(di.filtered.unhealthy, d.filtered.unhealthy) << "round " << round;
        ASSERT_EQ(di.filtered.shed, d.filtered.shed) << "round " << round;
        ASSERT_EQ(di.filtered.at_capacity, d.filtered.at_capacity) << "round " << round;
        ++unplaced;
        continue;
      }
      ASSERT_DOUBLE_EQ(d.score.total_usd_per_token, want.cost) << "round " << round;
      ASSERT_DOUBLE_EQ(d.runner_up_usd_per_token, want.runner_up) << "round " << round;
      ASSERT_EQ(d.endpoint_index, static_cast<std::uint32_t>(want.index)) << "round " << round;
      pruned_somewhere += d.scored < d.candidates;
      ASSERT_DOUBLE_EQ(di.score.total_usd_per_token, want.cost) << "round " << round;
      ASSERT_DOUBLE_EQ(di.runner_up_usd_per_token, want.runner_up) << "round " << round;
      ASSERT_EQ(di.endpoint_index, static_cast<std::uint32_t>(want.index)) << "round " << round;
      visited_fewer += di.candidates < d.candidates;
    }
  }
  EXPECT_GT(pruned_somewhere, 100);  // the bounds do prune.
  EXPECT_GT(visited_fewer, 100);     // and the index skips whole cells.
  EXPECT_GT(unplaced, 10);           // some requests find nothing, and say why.
}

}  // namespace
}  // namespace powerplane::core
