// Following the grid, end to end: a grid event posted through the admin API brings a site under
// its target within the ramp, miners first, GPUs capped on the emulated engines, interactive
// traffic moved (not dropped) while another site has room; everything returns afterwards.

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "fleet/grid_state.h"
#include "runtime/runtime.h"
#include "test_client.h"

namespace powerplane {
namespace {
using json = nlohmann::json;
using testing::TestClient;
namespace http = net::http;

constexpr const char* kFleet = R"(
[gateway]
admin_key = "admin"
[mining]
hashprice_usd_per_ph_day = 38.0
[flex]
cap_slew_watts_per_s = 400

[[sites]]
id = "mine"
jurisdiction = "US"
price = 20.0
base_kw = 0.5
gpu_min_cap_watts = 150
miners = { count = 1, th_per_s = 270.0, watts = 3645.0 }
  [[sites.endpoints]]
  count = 2
  gpu = "h200"
  max_batch = 64

[[sites]]
id = "other"
jurisdiction = "US"
price = 60.0
  [[sites.endpoints]]
  count = 1
  gpu = "h200"
  max_batch = 64

[[tenants]]
id = "t"
keys = ["key"]
ttft_target_ms = 3000
tpot_target_ms = 200
)";

json Fleet(TestClient& c) {
  return json::parse(c.Call(http::verb::get, "/admin/fleet", "", "admin").body);
}

TEST(FlexIntegrationTest, AnEventBringsTheSiteUnderTargetAndEverythingReturns) {
  auto config = fleet::ParseFleetConfig(kFleet, "flex fleet");
  ASSERT_TRUE(config) << config.error();
  runtime::UpOptions o;
  o.listen = "127.0.0.1:0";
  o.data_dir = PP_SOURCE_DIR "/data";
  o.engine_speed = 1.0;
  o.threads = 2;
  auto rt = runtime::Runtime::Start(*config, o);
  ASSERT_TRUE(rt) << rt.error();
  TestClient admin("127.0.0.1", (*rt)->port());

  // Mining beats a 20 USD/MWh price (S21-class at 38 USD/PH/day: ~117 USD/MWh): miners run.
  const auto until_miners = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (!Fleet(admin)["sites"][0].value("miners_on", false) &&
         std::chrono::steady_clock::now() < until_miners) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  json before = Fleet(admin)["sites"][0];
  ASSERT_TRUE(before["miners_on"].get<bool>());

  // Steady interactive load while the event runs.
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> load;
  for (int i = 0; i < 4; ++i) {
    load.emplace_back([&] {
      TestClient c("127.0.0.1", (*rt)->port());
      while (!stop) {
        auto r = c.Chat("key", R"({"model":"llama-3.1-8b","max_tokens":40,"stream":true,
                                   "messages":[{"role":"user","content":"hello"}]})");
        (r.status == 200 && r.body.find("[DONE]") != std::string::npos ? ok : failed)++;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const json loaded = Fleet(admin)["sites"][0];
  const double draw_kw = loaded["power_kw"].get<double>();
  // The base load plus 70% of what the GPUs draw now: stopping the miners is not enough, the
  // GPUs must be capped too.
  const double target_kw = 0.5 + 0.7 * 1.2 * loaded["gpu_power_kw"].get<double>();
  ASSERT_LT(target_kw, draw_kw);
  auto posted = admin.Call(http::verb::post, "/admin/grid-events",
                           json{{"site", "mine"}, {"target_kw", target_kw}, {"duration_s", 4},
                                {"ramp_s", 2}}.dump(),
                           "admin");
  ASSERT_EQ(posted.status, 201) << posted.body;
  const auto event_start = std::chrono::steady_clock::now();

  // Within the ramp (2 s) the site's import is at or under the target, and stays there.
  bool under = false;
  double worst_after_ramp = 0;
  json during;
  while (std::chrono::steady_clock::now() - event_start < std::chrono::milliseconds(3500)) {
    during = Fleet(admin)["sites"][0];
    const double import_kw = during["import_kw"].get<double>();
    if (import_kw <= target_kw + 1e-6) under = true;
    if (std::chrono::steady_clock::now() - event_start > std::chrono::seconds(2)) {
      worst_after_ramp = std::max(worst_after_ramp, import_kw);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(under);
  EXPECT_LE(worst_after_ramp, target_kw + 1e-6);
  EXPECT_FALSE(during["miners_on"].get<bool>());
  EXPECT_FALSE(during["gpu_cap_w"].is_null());
  const auto actions = during["actions"].dump();
  EXPECT_LT(actions.find("stop miners"), actions.find("cap GPUs")) << actions;

  // The event ends after 4 s: caps rise at the slew, then miners restart.
  const auto until_restored = std::chrono::steady_clock::now() + std::chrono::seconds(8);
  json after;
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    after = Fleet(admin)["sites"][0];
  } while ((!after["gpu_cap_w"].is_null() || !after["miners_on"].get<bool>()) &&
           std::chrono::steady_clock::now() < until_restored);
  EXPECT_TRUE(after["gpu_cap_w"].is_null());
  EXPECT_TRUE(after["miners_on"].get<bool>());
  stop = true;
  for (auto& t : load) t.join();
  // Interactive work was moved or slowed, never dropped: another site had room.
  EXPECT_GT(ok.load(), 0);
  EXPECT_EQ(failed.load(), 0);

  // The same state in /metrics.
  auto metrics = admin.Call(http::verb::get, "/metrics").body;
  EXPECT_NE(metrics.find("powerplane_grid_events_received_total 1"), std::string::npos);
  EXPECT_NE(metrics.find("powerplane_flex_actions_total{site=\"mine\"}"), std::string::npos);
  EXPECT_NE(metrics.find("powerplane_site_budget_kw"), std::string::npos);
  (*rt)->Stop();
}

TEST(FlexIntegrationTest, MinersStopWhenTheHashpriceFalls) {
  auto config = fleet::ParseFleetConfig(kFleet, "flex fleet");
  ASSERT_TRUE(config) << config.error();
  runtime::UpOptions o;
  o.listen = "127.0.0.1:0";
  o.data_dir = PP_SOURCE_DIR "/data";
  o.threads = 1;
  auto rt = runtime::Runtime::Start(*config, o);
  ASSERT_TRUE(rt) << rt.error();
  TestClient admin("127.0.0.1", (*rt)->port());
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  ASSERT_TRUE(Fleet(admin)["sites"][0]["miners_on"].get<bool>());
  // At 5 USD/PH/day, 13.5 J/TH mining earns ~15 USD/MWh, less than the 20 USD/MWh price.
  ASSERT_EQ(admin.Call(http::verb::post, "/admin/hashprice", R"({"usd_per_ph_day": 5})", "admin")
                .status,
            200);
  const auto t0 = std::chrono::steady_clock::now();
  while (Fleet(admin)["sites"][0]["miners_on"].get<bool>() &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_FALSE(Fleet(admin)["sites"][0]["miners_on"].get<bool>());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
  auto bad = admin.Call(http::verb::post, "/admin/grid-events", R"({"site":"nowhere","target_kw":1})",
                        "admin");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(admin.Call(http::verb::delete_, "/admin/grid-events/none", "", "admin").status, 404);
  (*rt)->Stop();
}

}  // namespace
}  // namespace powerplane

#include "grid/time.h"
#include "openadr/test_vtn.h"

namespace powerplane {
namespace {

// An OpenADR 3 VTN (written from the spec, in-process) sends an IMPORT_CAPACITY_LIMIT event for
// the site: `powerplane up --openadr-vtn` maps it to a grid event and the site obeys it.
TEST(FlexIntegrationTest, AnOpenAdrEventFromAVtnIsObeyed) {
  openadr::TestVtn vtn;
  auto config = fleet::ParseFleetConfig(std::string(kFleet) + "\n[openadr]\npoll_interval_ms = 200\n",
                                        "flex fleet");
  ASSERT_TRUE(config) << config.error();
  runtime::UpOptions o;
  o.listen = "127.0.0.1:0";
  o.data_dir = PP_SOURCE_DIR "/data";
  o.threads = 1;
  o.openadr_vtn = vtn.url();
  o.openadr_client_id = "ven-1";
  o.openadr_client_secret = "secret-1";
  auto rt = runtime::Runtime::Start(*config, o);
  ASSERT_TRUE(rt) << rt.error();
  TestClient admin("127.0.0.1", (*rt)->port());
  const auto now_s = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  const std::string start =
      grid::FormatUtc(grid::UtcTime{std::chrono::seconds(now_s - 1)});
  json event = {{"id", "ev-7"},
                {"programID", "prog-1"},
                {"eventName", "evening peak"},
                {"targets", {"mine"}},
                {"intervalPeriod", {{"start", start}, {"duration", "PT1H"}}},
                {"intervals",
                 {{{"id", 0},
                   {"payloads", {{{"type", "IMPORT_CAPACITY_LIMIT"}, {"values", {1.5}}}}}}}}};
  vtn.SetEvents(json::array({event}).dump());
  const auto t0 = std::chrono::steady_clock::now();
  json site;
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    site = Fleet(admin)["sites"][0];
  } while ((site["event"].is_null() || site["miners_on"].get<bool>()) &&
           std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  ASSERT_FALSE(site["event"].is_null()) << site.dump();
  EXPECT_EQ(site["event"]["source"], "openadr");
  EXPECT_EQ(site["target_kw"], 1.5);
  EXPECT_FALSE(site["miners_on"].get<bool>());
  auto events = json::parse(admin.Call(http::verb::get, "/admin/grid-events", "", "admin").body);
  EXPECT_EQ(events["events"][0]["id"].get<std::string>().rfind("ev-7", 0), 0u);
  (*rt)->Stop();
}

}  // namespace
}  // namespace powerplane

namespace powerplane {
namespace {

constexpr const char* kBatchFleet = R"(
[gateway]
admin_key = "admin"

[[sites]]
id = "cheap"
jurisdiction = "US"
price = 20.0
base_kw = 0.2
  [[sites.endpoints]]
  count = 1
  gpu = "h200"
  max_batch = 64

[[sites]]
id = "dear"
jurisdiction = "US"
price = 60.0
  [[sites.endpoints]]
  count = 1
  gpu = "h200"
  max_batch = 64

[[tenants]]
id = "nightly-evals"
keys = ["batch-key"]
class = "batch"
ttft_target_ms = 10000
tpot_target_ms = 500
)";

// Batch-class requests are the site's deferrable work: an event asking for half the draw pauses
// them there (before any GPU cap), new batch work runs at the other site, and it comes back
// when the event ends.
TEST(FlexIntegrationTest, AnEventPausesDeferrableWorkFirstAndItResumesAfter) {
  auto config = fleet::ParseFleetConfig(kBatchFleet, "batch fleet");
  ASSERT_TRUE(config) << config.error();
  runtime::UpOptions o;
  o.listen = "127.0.0.1:0";
  o.data_dir = PP_SOURCE_DIR "/data";
  o.engine_speed = 1.0;
  o.threads = 2;
  auto rt = runtime::Runtime::Start(*config, o);
  ASSERT_TRUE(rt) << rt.error();
  TestClient admin("127.0.0.1", (*rt)->port());

  std::atomic<bool> stop{false};
  std::atomic<int> failed{0};
  std::mutex mu;
  std::vector<std::pair<std::chrono::steady_clock::time_point, std::string>> placed;
  std::vector<std::thread> load;
  for (int i = 0; i < 4; ++i) {
    load.emplace_back([&] {
      TestClient c("127.0.0.1", (*rt)->port());
      while (!stop) {
        auto r = c.Chat("batch-key", R"({"model":"llama-3.1-8b","max_tokens":40,"stream":true,
                                         "messages":[{"role":"user","content":"evaluate"}]})");
        if (r.status != 200) {
          ++failed;
          continue;
        }
        std::lock_guard lock(mu);
        placed.emplace_back(std::chrono::steady_clock::now(), r.Header("x-powerplane-site"));
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  const json loaded = Fleet(admin)["sites"][0];
  ASSERT_GT(loaded["in_flight_batch"].get<int>(), 0) << loaded.dump();
  // Room for the base load and the GPU at its lowest cap (300 W x PUE 1.2) with a little to
  // spare, but not for the batch work running now.
  const double target_kw = 0.2 + 1.2 * 0.33;
  ASSERT_LT(target_kw, loaded["power_kw"].get<double>()) << loaded.dump();
  auto posted = admin.Call(http::verb::post, "/admin/grid-events",
                           json{{"site", "cheap"}, {"target_kw", target_kw}, {"duration_s", 3},
                                {"ramp_s", 1}}.dump(),
                           "admin");
  ASSERT_EQ(posted.status, 201) << posted.body;
  const auto event_start = std::chrono::steady_clock::now();
  bool paused = false;
  while (!paused && std::chrono::steady_clock::now() - event_start < std::chrono::seconds(2)) {
    paused = Fleet(admin)["sites"][0]["deferrable_paused"].get<bool>();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(paused);
  const auto paused_at = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  const json during = Fleet(admin)["sites"][0];
  const auto window_end = std::chrono::steady_clock::now();
  // Pausing the batch work was enough: interactive work is neither steered nor shed.
  EXPECT_TRUE(during["deferrable_paused"].get<bool>());
  EXPECT_FALSE(during["steer_away"].get<bool>()) << during.dump();
  EXPECT_FALSE(during["shed_low_priority"].get<bool>());
  EXPECT_NE(during["actions"].dump().find("pause deferrable work"), std::string::npos);
  // Resumes after the event (3 s) ends.
  const auto until_resumed = std::chrono::steady_clock::now() + std::chrono::seconds(6);
  while (Fleet(admin)["sites"][0]["deferrable_paused"].get<bool>() &&
         std::chrono::steady_clock::now() < until_resumed) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_FALSE(Fleet(admin)["sites"][0]["deferrable_paused"].get<bool>());
  stop = true;
  for (auto& t : load) t.join();

  int cheap_while_paused = 0, dear_while_paused = 0;
  for (const auto& [at, site] : placed) {
    // Requests that completed well inside the pause started after it began.
    if (at > paused_at + std::chrono::milliseconds(400) && at < window_end) {
      (site == "cheap" ? cheap_while_paused : dear_while_paused)++;
    }
  }
  EXPECT_EQ(cheap_while_paused, 0);
  EXPECT_GT(dear_while_paused, 0);
  EXPECT_EQ(failed.load(), 0);
  // Resumed and idle: batch work goes to the cheaper site again.
  TestClient c("127.0.0.1", (*rt)->port());
  auto r = c.Chat("batch-key", R"({"model":"llama-3.1-8b","max_tokens":4,
                                  "messages":[{"role":"user","content":"evaluate"}]})");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("x-powerplane-site"), "cheap");
  (*rt)->Stop();
}

}  // namespace
}  // namespace powerplane
