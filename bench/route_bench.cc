// BM_RouteDecision: one routing decision over fleets of 64, 512 and 2,048 endpoints spread over
// up to 64 sites, with seeded random loads, prices and residency rules. Reports p50/p99 per
// decision (timed one by one) besides Google Benchmark's mean.
// BM_RouteDecisionWithTenancy: the same decisions made as the gateway makes them for a tenant's
// request: the key identified, the tenant's per-minute limits taken, the request built from the
// tenant's jurisdictions and targets, routed, its budget reserved and settled. Reports the route
// decision's p50/p99 inside that path and the whole path's.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <random>

#include "core/route_index.h"
#include "core/router.h"
#include "fleet/config.h"
#include "gateway/tenancy.h"
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
    e.id = "e";
    e.id += std::to_string(i);
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

// How many distinct requests a benchmark cycles through: 256, or PP_BENCH_REQUESTS. (Few
// requests, repeated, let the branch predictor and caches learn them: 65,536 measured slower.)
std::size_t RequestCount() {
  const char* n = std::getenv("PP_BENCH_REQUESTS");
  const long count = n ? std::atol(n) : 256;
  return static_cast<std::size_t>(std::max(1L, count));
}

// Sorts `ns` (per-call times) and reports its p50 and p99 in microseconds as `<prefix>p50_us` and
// `<prefix>p99_us`.
void ReportPercentiles(benchmark::State& state, std::vector<double>& ns, const std::string& prefix) {
  if (ns.empty()) return;
  std::sort(ns.begin(), ns.end());
  state.counters[prefix + "p50_us"] = ns[ns.size() / 2] / 1e3;
  state.counters[prefix + "p99_us"] = ns[ns.size() * 99 / 100] / 1e3;
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
  std::vector<core::Request> requests(RequestCount());
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
  ReportPercentiles(state, ns, "");
  state.counters["placed_frac"] = static_cast<double>(placed) / std::max<std::size_t>(1, i);
  // The share of candidates the router had to score (the rest were ruled out by bounds).
  state.counters["scored_frac"] = static_cast<double>(scored) / std::max<std::uint64_t>(1, candidates);
  // Candidates looked at per decision (with the index, only those in the cells it visited).
  state.counters["candidates"] = static_cast<double>(candidates) / std::max<std::size_t>(1, i);
  state.counters["sites"] = static_cast<double>(fleet.sites.size());
}

void RouteDecisionWithTenancy(benchmark::State& state) {
  std::mt19937_64 rng(42);
  Fleet fleet = MakeFleet(static_cast<int>(state.range(0)), rng);
  const core::RouteIndex index(fleet.endpoints, fleet.loads);
  core::FleetView view = fleet.View();
  view.index = &index;
  // Twenty tenants with limits and budgets that the run does not reach; one in five EU-only.
  gateway::TenantDirectory directory;
  std::vector<std::string> keys;
  for (int t = 0; t < 20; ++t) {
    gateway::Tenant tenant;
    tenant.id = "tenant-";
    tenant.id += std::to_string(t);
    if (t % 5 == 0) tenant.jurisdictions = {"EU"};
    tenant.rpm = 1'000'000'000;
    tenant.tpm = 1'000'000'000'000;
    tenant.budget_usd = 1e12;
    tenant.budget_period = core::BudgetPeriod::kDay;
    keys.emplace_back("pp-bench-key-");
    keys.back() += std::to_string(t);
    directory.Add(tenant, {fleet::Sha256Hex(keys.back())});
  }
  gateway::Tenancy tenancy(std::move(directory));
  // The same requests, cycled, as BM_RouteDecision uses: only tenancy differs.
  std::uniform_int_distribution<int> prompt(50, 4000), out(16, 512);
  std::vector<std::pair<int, int>> sizes(RequestCount());
  for (auto& [p, o] : sizes) {
    p = prompt(rng);
    o = out(rng);
  }
  core::Router router;
  std::vector<double> route_ns, path_ns;
  route_ns.reserve(1 << 20);
  path_ns.reserve(1 << 20);
  std::size_t i = 0;
  for (auto _ : state) {
    const std::string& key = keys[i % keys.size()];
    const auto [prompt_tokens, output_tokens] = sizes[i++ % sizes.size()];
    const auto t0 = std::chrono::steady_clock::now();
    const gateway::Identity who = tenancy.Identify(key);
    const gateway::Tenant& tenant = *who.tenant;
    const std::int64_t worst_tokens = prompt_tokens + output_tokens;
    const gateway::Admission rate = tenancy.AdmitRate(tenant, worst_tokens);
    core::Request r;
    r.prompt_tokens = prompt_tokens;
    r.expected_output_tokens = tenancy.ExpectedOutputTokens(tenant, output_tokens);
    r.ttft_target_s = tenant.ttft_target_s;
    r.tpot_target_s = tenant.tpot_target_s;
    r.allowed_jurisdictions = tenant.jurisdictions;
    r.priority = tenant.priority;
    const auto t1 = std::chrono::steady_clock::now();
    core::Decision d = router.Route(r, view);
    const auto t2 = std::chrono::steady_clock::now();
    const double worst_usd = 1e-4;
    const gateway::Admission spend = tenancy.AdmitSpend(tenant, worst_usd);
    tenancy.Settle(tenant, worst_tokens, worst_tokens / 2, worst_usd, worst_usd / 2);
    const auto t3 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(d);
    benchmark::DoNotOptimize(rate);
    benchmark::DoNotOptimize(spend);
    if (route_ns.size() < route_ns.capacity()) {
      route_ns.push_back(std::chrono::duration<double, std::nano>(t2 - t1).count());
      path_ns.push_back(std::chrono::duration<double, std::nano>(t3 - t0).count());
    }
  }
  ReportPercentiles(state, route_ns, "");
  ReportPercentiles(state, path_ns, "path_");
}

void BM_RouteDecision(benchmark::State& state) { RouteDecision(state, true); }
void BM_RouteDecisionScan(benchmark::State& state) { RouteDecision(state, false); }
void BM_RouteDecisionWithTenancy(benchmark::State& state) { RouteDecisionWithTenancy(state); }
BENCHMARK(BM_RouteDecision)->Arg(64)->Arg(512)->Arg(2048);
BENCHMARK(BM_RouteDecisionScan)->Arg(64)->Arg(512)->Arg(2048);
BENCHMARK(BM_RouteDecisionWithTenancy)->Arg(64)->Arg(512)->Arg(2048);

}  // namespace
}  // namespace powerplane

BENCHMARK_MAIN();
