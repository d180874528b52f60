// BM_RouteDecision: one routing decision over fleets of 64, 512 and 2,048 endpoints spread over
// up to 64 sites, with seeded random loads, prices and residency rules. Reports p50/p99 per
// decision (timed one by one) besides Google Benchmark's mean.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "core/route_index.h"
#include "core/router.h"
#include "testing/gpu_profiles.h"

namespace powerplane {
namespace {

struct Fleet {
  std::vector<core::Site> sites;
  std::vector<core::EnergyState> energy;
  std::vector<core::Endpoint> endpoints;
  std::vector<core::EndpointLoad> loads;
  core::FleetView View() const { return {sites, energy, endpoints, loads}; }
};

Fleet MakeFleet(int endpoints, std::mt19937_64& rng) {
  Fleet f;
  const int sites = std::min(64, std::max(1, endpoints / 8));
  std::uniform_real_distribution<double> price(-10, 300), rtt(0.002, 0.12);
  for (int s = 0; s < sites; ++s) {
    f.sites.push_back({"site-" + std::to_string(s), s % 4 == 0 ? "EU" : "US", 1.1 + 0.01 * (s % 30),
                       rtt(rng)});
    f.energy.push_back({price(rng)});
  }
  auto gpu = testing::H200Llama8B();
  std::uniform_int_distribution<int> running(0, 256), waiting(0, 8);
  for (int i = 0; i < endpoints; ++i) {
    core::Endpoint e;
    e.id = "e" + std::to_string(i);
    // Grouped by site, as a fleet file declares them (fleet::Fleet keeps that order).
    e.site_index = static_cast<std::uint32_t>(static_cast<long>(i) * sites / endpoints);
    e.model_index = static_cast<std::uint32_t>(i % 8 == 7 ? 1 : 0);
    e.gpu = gpu;
    e.max_batch = 256;
    e.max_queue = 64;
    e.kv_token_capacity = 900000;
    e.hardware_usd_per_hour = 2.0;
    f.endpoints.push_back(e);
    core::EndpointLoad l;
    l.running = running(rng);
    l.waiting = l.running == 256 ? waiting(rng) : 0;
    l.kv_tokens_used = l.running * 1500;
    l.mean_context_tokens = 1500;
    l.healthy = i % 50 != 0;
    f.loads.push_back(l);
  }
  return f;
}

// With `indexed`, the view carries a RouteIndex, as fleet::Fleet's does; without, the router
// visits every endpoint.
void RouteDecision(benchmark::State& state, bool indexed) {
  std::mt19937_64 rng(42);
  Fleet fleet = MakeFleet(static_cast<int>(state.range(0)), rng);
  const core::RouteIndex index(fleet.endpoints, fleet.loads);
  core::FleetView view = fleet.View();
  if (indexed) view.index = &index;
  const std::vector<std::string> eu = {"EU"};
  std::vector<core::Request> requests(256);
  std::uniform_int_distribution<int> prompt(50, 4000), out(16, 512);
  for (std::size_t i = 0; i < requests.size(); ++i) {
    auto& r = requests[i];
    r.prompt_tokens = prompt(rng);
    r.expected_output_tokens = out(rng);
    r.ttft_target_s = 1.0;
    r.tpot_target_s = 0.05;
    if (i % 5 == 0) r.allowed_jurisdictions = eu;
  }
  core::Router router;
  std::vector<double> ns;
  ns.reserve(1 << 20);
  std::size_t i = 0;
  std::uint64_t placed = 0, scored = 0, candidates = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    core::Decision d = router.Route(requests[i++ % requests.size()], view);
    const auto t1 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(d);
    placed += d.placed;
    scored += static_cast<std::uint64_t>(d.scored);
    candidates += static_cast<std::uint64_t>(d.candidates);
    if (ns.size() < ns.capacity()) ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
  }
  std::sort(ns.begin(), ns.end());
  if (!ns.empty()) {
    state.counters["p50_us"] = ns[ns.size() / 2] / 1e3;
    state.counters["p99_us"] = ns[ns.size() * 99 / 100] / 1e3;
  }
  state.counters["placed_frac"] = static_cast<double>(placed) / std::max<std::size_t>(1, i);
  // The share of candidates the router had to score (the rest were ruled out by bounds).
  state.counters["scored_frac"] = static_cast<double>(scored) / std::max<std::uint64_t>(1, candidates);
  // Candidates looked at per decision (with the index, only those in the cells it visited).
  state.counters["candidates"] = static_cast<double>(candidates) / std::max<std::size_t>(1, i);
  state.counters["sites"] = static_cast<double>(fleet.sites.size());
}
void BM_RouteDecision(benchmark::State& state) { RouteDecision(state, true); }
void BM_RouteDecisionScan(benchmark::State& state) { RouteDecision(state, false); }
BENCHMARK(BM_RouteDecision)->Arg(64)->Arg(512)->Arg(2048);
BENCHMARK(BM_RouteDecisionScan)->Arg(64)->Arg(512)->Arg(2048);

}  // namespace
}  // namespace powerplane

BENCHMARK_MAIN();
