// Grid flexibility in the twin: the events file, GPU caps in the analytic engine, and a
// hand-checked scenario where core::FlexController brings a site under a grid event's target.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "engine/batch_scheduler.h"
#include "sim/analytic_engine.h"
#include "sim/command.h"
#include "sim/grid_events.h"
#include "sim/simulator.h"
#include "testing/gpu_profiles.h"

namespace powerplane::sim {
namespace {

const std::vector<core::Site> kSites = {{"a", "US", 1.2, 0.01}, {"b", "US", 1.2, 0.01}};

TEST(GridEventsCsv, Parses) {
  auto e = ParseGridEventsCsv(
      "site,start_utc,duration_s,target_kw,ramp_s\n# comment\n\n"
      "a,2024-08-19T05:02:00Z,300,1.4,30\nb, 2024-08-19T00:00:00-05:00 ,60,0,0\r\n",
      "ev.csv", kSites);
  ASSERT_TRUE(e) << e.error();
  ASSERT_EQ(e->size(), 2u);
  EXPECT_EQ((*e)[0].site, "a");
  EXPECT_EQ((*e)[0].id, "ev.csv:4");
  EXPECT_EQ((*e)[0].start_s, 1724043720);
  EXPECT_EQ((*e)[0].duration_s, 300);
  EXPECT_DOUBLE_EQ((*e)[0].target_kw, 1.4);
  EXPECT_EQ((*e)[0].ramp_s, 30);
  EXPECT_EQ((*e)[1].start_s, 1724043600);
}

TEST(GridEventsCsv, ErrorsNameFileAndLine) {
  const std::string h = "site,start_utc,duration_s,target_kw,ramp_s\n";
  auto bad = [&](const std::string& text) {
    auto e = ParseGridEventsCsv(text, "ev.csv", kSites);
    return e ? std::string("(parsed)") : e.error();
  };
  EXPECT_EQ(bad("site,start\n").substr(0, 9), "ev.csv:1:");
  EXPECT_EQ(bad(""),
            "ev.csv:1: empty; want the header 'site,start_utc,duration_s,target_kw,ramp_s'");
  EXPECT_EQ(bad(h + "c,2024-08-19T05:00:00Z,60,1,0\n"), "ev.csv:2: no site 'c' in the fleet");
  EXPECT_EQ(bad(h + "\na,2024-08-19T05:00:00Z,0,1,0\n").substr(0, 20), "ev.csv:3: duration_s");
  EXPECT_EQ(bad(h + "a,yesterday,60,1,0\n").substr(0, 19), "ev.csv:2: start_utc");
  EXPECT_EQ(bad(h + "a,2024-08-19T05:00:00Z,60,-1,0\n").substr(0, 19), "ev.csv:2: target_kw");
  EXPECT_EQ(bad(h + "a,2024-08-19T05:00:00Z,60,1\n"), "ev.csv:2: want 5 fields, got 4");
}

TEST(AnalyticEngine, HonoursAPowerCapAsTheSchedulerDoes) {
  auto gpu = testing::H200Llama8B();
  AnalyticEngine e(gpu.get(), 256, 900000, nullptr);
  e.SetPowerCapWatts(350);
  struct : FinishSink {
    FinishedRequest last;
    void OnFinished(const FinishedRequest& r) override { last = r; }
  } sink;
  ASSERT_TRUE(e.Add(1, 0, 1000, 11));
  e.Drain(sink);
  // Prefill at 698 W and decode at 421.9 W both run at the 350 W cap, slower by the DVFS rule.
  const double f_prefill = engine::BatchScheduler::CapThroughputFactor(698, 350);
  const double f_decode = engine::BatchScheduler::CapThroughputFactor(421.9, 350);
  EXPECT_NEAR(f_prefill, 1 - 0.28 * (1 - 350 / 698.0), 1e-12);
  const double prefill = 1000 / 38300.0 / f_prefill;
  double decode = 0;
  for (int c = 1001; c <= 1010; ++c) decode += (0.005234 + 3.0e-8 * (c - 1024)) / f_decode;
  EXPECT_NEAR(sink.last.first_token_s, prefill, 1e-9);
  EXPECT_NEAR(sink.last.finish_s, prefill + decode, 1e-9);
  EXPECT_NEAR(e.joules_total(), 350 * (prefill + decode), 1e-6);
}

// Two US sites: "dear" (80 USD/MWh) and "cheap" (20 USD/MWh, PUE 1.1, base load 0.5 kW), two
// endpoints each. The production router sends the work to "cheap".
SimFleet TwoSites() {
  SimFleet f;
  f.sites = {{"dear", "US", 1.2, 0.004}, {"cheap", "US", 1.1, 0.004}};
  f.prices = {grid::PriceSeries::Constant(80), grid::PriceSeries::Constant(20)};
  f.price_labels = {"fixed", "fixed"};
  f.flex.resize(2);
  f.flex[1].base_kw = 0.5;
  const auto gpu = testing::H200Llama8B();
  for (std::uint32_t s : {0u, 0u, 1u, 1u}) {
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
  f.tenants = {{"any", {}, core::PriorityClass::kInteractive, 1.0, 0.05, 1.0}};
  f.models = {"llama-3.1-8b"};
  return f;
}

ArrivalStream Steady(double duration_s) {
  // About 19 requests/s of 1,000 prompt and 100 output tokens.
  static const Trace t = [] {
    Trace x;
    for (int i = 0; i < 20; ++i) x.requests.push_back({i * 0.05, 1000, 100});
    x.span_s = 1.0;
    return x;
  }();
  ArrivalOptions a;
  a.duration_s = duration_s;
  a.tenant_weights = {1.0};
  return ArrivalStream(t, nullptr, a);
}

SimOptions WithEvent(double target_kw) {
  SimOptions o;
  o.start = *grid::ParseUtcTimestamp("2024-08-19T05:00:00Z");
  o.duration_s = 480;
  o.power_plot_step_s = 30;
  // From 120 s for 300 s, 30 s to get under the target.
  o.events = {
      {"ev", "cheap", target_kw, o.start.time_since_epoch().count() + 120, 300, 30, "test"}};
  return o;
}

TEST(SitePower, AnEventCapsTheSiteUnderItsTargetAfterTheRamp) {
  // Target 1.2 kW: 0.7 kW left for two GPUs at PUE 1.1, so the controller caps each at
  // 700 / 1.1 / 2 = 318.2 W (above its 300 W floor): no steering needed.
  const SimOptions o = WithEvent(1.2);
  const PolicyResult r = RunPolicy(TwoSites(), Steady(o.duration_s), Policy::kPowerplane, o);
  ASSERT_TRUE(r.seconds_above_target);
  EXPECT_EQ(*r.seconds_above_target, 0);
  const auto& import = r.site_import_kw[1];
  const auto& budget = r.site_budget_kw[1];
  ASSERT_GE(import.size(), 16u);
  // Before the event: busy (two GPUs at about 370 W) and over 1.2 kW; no budget.
  EXPECT_GT(import[3], 1.25);
  EXPECT_TRUE(std::isnan(budget[3]));
  // Bound from 150 s (plot steps 5..13): at most the target, still serving (well above the idle
  // 0.776 kW; the router moves some work to "dear" as the capped GPUs slow down).
  for (std::size_t b = 5; b <= 13; ++b) {
    EXPECT_DOUBLE_EQ(budget[b], 1.2);
    EXPECT_LE(import[b], 1.2 + 1e-9) << b;
    EXPECT_GT(import[b], 0.9) << b;
  }
  // After the event the cap rises at 100 W/s and the site is busy again.
  EXPECT_GT(import[15], 1.25);
  // Everything still served: capping slows the GPUs, it does not drop work.
  EXPECT_EQ(r.dropped, 0u);
  EXPECT_EQ(r.served, r.requests);

  // A plain load balancer is only metered: it stays over the target through the event.
  const PolicyResult ll = RunPolicy(TwoSites(), Steady(o.duration_s), Policy::kLeastLoaded, o);
  ASSERT_TRUE(ll.seconds_above_target);
  EXPECT_GT(*ll.seconds_above_target, 200);
}

TEST(SitePower, ATargetBelowTheLowestCapSteersWorkAway) {
  // Target 0.9 kW: 0.4 kW for two GPUs is 182 W each, under the 300 W floor: the controller
  // steers new work to "dear"; the site drains within the ramp and idles at
  // 0.5 + 2 x 125.6 x 1.1 / 1000 = 0.776 kW.
  const SimOptions o = WithEvent(0.9);
  const PolicyResult r = RunPolicy(TwoSites(), Steady(o.duration_s), Policy::kPowerplane, o);
  EXPECT_EQ(*r.seconds_above_target, 0);
  for (std::size_t b = 5; b <= 13; ++b) {
    EXPECT_NEAR(r.site_import_kw[1][b], 0.5 + 2 * 125.6 * 1.1 / 1e3, 1e-6) << b;
  }
  EXPECT_EQ(r.served, r.requests);
}

TEST(SimCommand, EventsFileEndToEnd) {
  // The demo fleet for two minutes; granbury-tx (8 GPUs, PUE 1.25, base 1.5 kW, 7.3 kW of miners)
  // gets a 5 kW target 20 s in with a 30 s ramp: miners stop, GPUs are capped at
  // 3,500 / 1.25 / 8 = 350 W.
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / "sim-events";
  std::filesystem::create_directories(dir);
  {
    std::ofstream ev(dir / "events.csv");
    ev << "site,start_utc,duration_s,target_kw,ramp_s\n"
       << "granbury-tx,2024-08-19T05:00:20Z,600,5.0,30\n";
  }
  SimCommandOptions o;
  o.data_dir = std::filesystem::path(PP_SOURCE_DIR) / "data";
  o.load = 0.7;
  o.start = "2024-08-19T05:00:00Z";
  o.duration = "2m";
  o.events_path = (dir / "events.csv").string();
  o.out_dir = (dir / "out").string();
  o.bound = false;
  o.progress = false;
  ASSERT_EQ(RunSimCommand(o), 0);
  std::ifstream csv(dir / "out/summary.csv");
  std::string line, header;
  std::getline(csv, header);
  EXPECT_NE(header.find(",dropped,seconds_above_target,mining_value_usd,"), std::string::npos);
  std::map<std::string, std::vector<std::string>> cells;
  while (std::getline(csv, line)) {
    std::vector<std::string> c;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ',');) c.push_back(x);
    cells[c[0]] = c;
  }
  ASSERT_TRUE(cells.contains("powerplane"));
  EXPECT_EQ(cells["powerplane"][14], "0");                // seconds above the target.
  EXPECT_GT(std::stod(cells["least-loaded"][14]), 60.0);  // a plain balancer stays over.
  std::ifstream html(dir / "out/report.html");
  std::stringstream page;
  page << html.rdbuf();
  EXPECT_NE(page.str().find("Power vs budget per site"), std::string::npos);

  o.events_path = (dir / "missing.csv").string();
  EXPECT_EQ(RunSimCommand(o), 2);
}

}  // namespace
}  // namespace powerplane::sim
