// The simulator end to end on a small fleet built in code: determinism, conservation, residency,
// a hand-checked scenario, and the hindsight bound below every policy.
#include <gtest/gtest.h>

#include "sim/hindsight.h"
#include "sim/simulator.h"
#include "testing/gpu_profiles.h"

namespace powerplane::sim {
namespace {

// Two US sites (cheap far, dear near) with two endpoints each, one EU site with one endpoint.
SimFleet SmallFleet() {
  SimFleet f;
  f.sites = {{"near-us", "US", 1.2, 0.004}, {"far-us", "US", 1.1, 0.020},
             {"eu", "EU", 1.3, 0.100}};
  f.prices = {grid::PriceSeries::Constant(80), grid::PriceSeries::Constant(20),
              grid::PriceSeries::Constant(50)};
  f.price_labels = {"fixed", "fixed", "fixed"};
  const auto gpu = testing::H200Llama8B();
  for (std::uint32_t s : {0u, 0u, 1u, 1u, 2u}) {
    core::Endpoint e;
    e.id = f.sites[s].id + "/" + std::to_string(f.endpoints.size());
    e.site_index = s;
    e.gpu = gpu;
    e.max_batch = 64;
    e.max_queue = 64;
    e.kv_token_capacity = 300000;
    e.hardware_usd_per_hour = 2;
    f.endpoints.push_back(e);
  }
  f.tenants = {{"any", {}, core::PriorityClass::kInteractive, 1.0, 0.05, 0.8},
               {"eu-only", {"EU"}, core::PriorityClass::kInteractive, 1.0, 0.05, 0.2}};
  f.models = {"llama-3.1-8b"};
  return f;
}

Trace SmallTrace() {
  Trace t;
  Rng rng(3);
  double offset = 0;
  for (int i = 0; i < 400; ++i) {
    offset += rng.Uniform() * 0.2;
    t.requests.push_back({offset, 100 + static_cast<int>(rng.Uniform() * 1500),
                          1 + static_cast<int>(rng.Uniform() * 300)});
  }
  t.span_s = offset;
  return t;
}

SimOptions Options(double duration_s) {
  SimOptions o;
  o.start = *grid::ParseUtcTimestamp("2024-08-19T05:00:00Z");
  o.duration_s = duration_s;
  return o;
}

ArrivalStream Stream(const Trace& t, double duration_s, double scale, std::uint64_t seed) {
  ArrivalOptions a;
  a.duration_s = duration_s;
  a.rate_scale = scale;
  a.seed = seed;
  a.tenant_weights = {0.8, 0.2};
  return ArrivalStream(t, nullptr, a);
}

TEST(Simulator, SameSeedSameSummary) {
  const SimFleet f = SmallFleet();
  const Trace t = SmallTrace();
  for (Policy p : AllPolicies()) {
    const auto a = RunPolicy(f, Stream(t, 300, 2, 9), p, Options(300));
    const auto b = RunPolicy(f, Stream(t, 300, 2, 9), p, Options(300));
    EXPECT_EQ(SummaryCsv({MakeRow(a)}), SummaryCsv({MakeRow(b)})) << ToString(p);
  }
}

TEST(Simulator, EveryRequestEndsOnceAndTokensAreConserved) {
  const SimFleet f = SmallFleet();
  const Trace t = SmallTrace();
  for (double scale : {1.0, 8.0}) {  // 8x overloads the EU endpoint: some drops.
    for (Policy p : AllPolicies()) {
      const auto r = RunPolicy(f, Stream(t, 600, scale, 1), p, Options(600));
      EXPECT_GT(r.requests, 0u);
      EXPECT_EQ(r.served + r.dropped, r.requests) << ToString(p);
      EXPECT_EQ(r.output_tokens, r.trace_output_tokens_served) << ToString(p);
      EXPECT_EQ(r.residency_violations, 0u) << ToString(p);
      EXPECT_EQ(r.ttft.count(), r.served);
      EXPECT_GT(r.energy_cost_usd, 0);
    }
  }
}

TEST(Simulator, OneRequestByHand) {
  SimFleet f = SmallFleet();
  Trace t;
  t.requests = {{0, 1000, 11}};
  ArrivalOptions a;
  a.duration_s = 1;  // a one-request trace loops every second: one arrival in [0, 1).
  a.tenant_weights = {1.0, 0.0};
  // Cheapest-price sends it to far-us (20 USD/MWh, PUE 1.1): ttft = 20 ms rtt + prefill.
  const auto r = RunPolicy(f, ArrivalStream(t, nullptr, a), Policy::kCheapestPrice, Options(1));
  ASSERT_EQ(r.served, 1u);
  const double prefill = 1000 / 38300.0;
  EXPECT_NEAR(r.ttft.Quantile(0.5), 0.020 + prefill, 0.012 * (0.020 + prefill));
  // Energy: five GPUs idle for the second, plus the request's extra above idle on far-us.
  double decode = 0, busy_j = 698 * prefill;
  for (int c = 1001; c <= 1010; ++c) {
    const double step = 0.005234 + 3.0e-8 * (c - 1024);
    decode += step;
    busy_j += 421.9 * step;
  }
  const double extra = busy_j - 125.6 * (prefill + decode);
  const double idle = 125.6 * 1;
  const double cost = (2 * idle * 1.2 * 80 + (2 * idle + extra) * 1.1 * 20 + idle * 1.3 * 50) /
                      3.6e9;
  EXPECT_NEAR(r.energy_cost_usd, cost, 1e-9);
  EXPECT_EQ(r.output_tokens, 11u);
  EXPECT_EQ(r.met_targets, 1u);
}

TEST(Simulator, ResidencyHoldsForEveryPolicy) {
  SimFleet f = SmallFleet();
  const Trace t = SmallTrace();
  ArrivalOptions a;
  a.duration_s = 120;
  a.tenant_weights = {0.0, 1.0};  // all EU-only: one EU endpoint for everything.
  for (Policy p : AllPolicies()) {
    const auto r = RunPolicy(f, ArrivalStream(t, nullptr, a), p, Options(120));
    EXPECT_EQ(r.residency_violations, 0u);
    // Only the EU site did any work above idle.
    for (std::size_t s = 0; s < 2; ++s) {
      double j = 0;
      for (double x : r.site_bucket_joules[s]) j += x;
      EXPECT_NEAR(j, 2 * 125.6 * r.horizon_s, 1e-6 * j) << ToString(p);
    }
  }
}

TEST(Hindsight, BoundIsBelowEveryPolicy) {
  SimFleet f = SmallFleet();
  f.prices[0] = grid::PriceSeries({{*grid::ParseUtcTimestamp("2024-08-19T05:00:00Z"), 80},
                                   {*grid::ParseUtcTimestamp("2024-08-19T06:00:00Z"), 10}});
  const Trace t = SmallTrace();
  const double duration = 7200;
  const Demand d = CollectDemand(Stream(t, duration, 3, 5), 2, duration);
  auto bound = HindsightBound(f, d, Options(duration));
  ASSERT_TRUE(bound) << bound.error();
  EXPECT_EQ(bound->unserved_requests, 0);
  for (Policy p : AllPolicies()) {
    const auto r = RunPolicy(f, Stream(t, duration, 3, 5), p, Options(duration));
    EXPECT_EQ(r.requests, bound->result.requests);
    EXPECT_LT(bound->result.energy_cost_usd, r.energy_cost_usd) << ToString(p);
  }
  const SummaryRow row = MakeBoundRow(*bound);
  EXPECT_EQ(row.policy, "hindsight-bound");
  EXPECT_FALSE(row.ttft_p50_s);
}

}  // namespace
}  // namespace powerplane::sim
