// The gateway over emulated engines, all on loopback with OS-chosen ports: streaming, metering,
// errors, price-following, residency, and health.

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <boost/asio/write.hpp>
#include <cctype>
#include <chrono>
#include <nlohmann/json.hpp>
#include <sstream>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <sys/socket.h>

#include "engine/engine.h"
#include "engine/gpu_profiles.h"
#include "fleet/fleet.h"
#include "runtime/runtime.h"
#include "test_client.h"

namespace powerplane {
namespace {
using json = nlohmann::json;
using testing::SseData;
using testing::TestClient;
namespace http = net::http;

// Two US sites at different fixed prices and a small EU site, with small batches so that
// saturation is easy to reach.
constexpr const char* kFleet = R"(
[gateway]
admin_key = "admin"
default_output_tokens = 64

[[sites]]
id = "cheap"
jurisdiction = "US"
network_rtt_ms = 2
price = 20.0
  [[sites.endpoints]]
  count = 1
  gpu = "h200"
  model = "llama-3.1-8b"
  max_batch = 64

[[sites]]
id = "dear"
jurisdiction = "US"
network_rtt_ms = 2
price = 80.0
  [[sites.endpoints]]
  count = 1
  gpu = "h200"
  model = "llama-3.1-8b"
  max_batch = 64

[[sites]]
id = "eu"
jurisdiction = "EU"
network_rtt_ms = 20
price = 300.0
  [[sites.endpoints]]
  count = 1
  gpu = "h200"
  model = "llama-3.1-8b"
  max_batch = 2
  max_queue = 0

[[tenants]]
id = "anyone"
keys = ["key-any"]
ttft_target_ms = 2000
tpot_target_ms = 100

[[tenants]]
id = "eu-only"
keys = ["key-eu"]
jurisdictions = ["EU"]
ttft_target_ms = 2000
tpot_target_ms = 100
)";

std::string ChatBody(int max_tokens, bool stream, bool include_usage = false) {
  json b = {{"model", "llama-3.1-8b"},
            {"max_tokens", max_tokens},
            {"messages", {{{"role", "user"}, {"content", "Tell me about the grid."}}}}};
  if (stream) b["stream"] = true;
  if (include_usage) b["stream_options"] = {{"include_usage", true}};
  return b.dump();
}

// The gateway of `fleet` on a loopback port, with the repository's data; null (and a failure
// recorded) when it does not start.
std::unique_ptr<runtime::Runtime> StartRuntime(const std::string& fleet, int threads,
                                               runtime::UpOptions o = {}) {
  auto config = fleet::ParseFleetConfig(fleet, "test fleet");
  EXPECT_TRUE(config) << config.error();
  if (!config) return nullptr;
  o.listen = "127.0.0.1:0";
  o.data_dir = PP_SOURCE_DIR "/data";
  o.threads = threads;
  auto rt = runtime::Runtime::Start(*config, o);
  EXPECT_TRUE(rt) << rt.error();
  return rt ? std::move(*rt) : nullptr;
}

// `client`'s chat request with `body` and the key "key-any"; how long it took in `took_s`.
testing::StreamResult TimedChat(TestClient& client, const std::string& body, double* took_s) {
  const auto start = std::chrono::steady_clock::now();
  auto r = client.Chat("key-any", body);
  *took_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

// A fleet of one site whose endpoints are the engines at 127.0.0.1:`ports` (ones the test
// runs), and the tenant "anyone" with the key "key-any".
std::string OneEngineFleet(std::vector<unsigned short> ports) {
  std::string urls;
  for (auto port : ports) {
    urls += (urls.empty() ? "\"" : ", \"") + ("http://127.0.0.1:" + std::to_string(port)) + "\"";
  }
  return R"(
[gateway]
admin_key = "admin"
[[sites]]
id = "one"
jurisdiction = "US"
price = 20.0
  [[sites.endpoints]]
  urls = [)" +
         urls + R"(]
  gpu = "h200"
  model = "llama-3.1-8b"
[[tenants]]
id = "anyone"
keys = ["key-any"]
)";
}

class GatewayIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    runtime_ = StartRuntime(kFleet, 2).release();  // engines at real time (speed 1).
    ASSERT_NE(runtime_, nullptr);
    client_ = new TestClient("127.0.0.1", runtime_->port());
  }
  static void TearDownTestSuite() {
    delete client_;
    delete runtime_;
  }
  void SetUp() override {
    // Each test starts with market prices and every engine healthy.
    Admin(http::verb::delete_, "/admin/sites/cheap/price");
    Admin(http::verb::delete_, "/admin/sites/dear/price");
  }
  static testing::StreamResult Admin(http::verb verb, std::string target, std::string body = {}) {
    return client_->Call(verb, std::move(target), std::move(body), "admin");
  }
  static runtime::Runtime* runtime_;
  static TestClient* client_;
};
runtime::Runtime* GatewayIntegrationTest::runtime_ = nullptr;
TestClient* GatewayIntegrationTest::client_ = nullptr;

TEST_F(GatewayIntegrationTest, StreamsChunksAsTheEngineEmitsThem) {
  auto r = client_->Chat("key-any", ChatBody(80, /*stream=*/true));
  ASSERT_EQ(r.status, 200) << r.error << r.body;
  EXPECT_EQ(r.Header("content-type"), "text/event-stream");
  EXPECT_FALSE(r.Header("x-request-id").empty());
  EXPECT_EQ(r.Header("x-powerplane-site"), "cheap");
  EXPECT_FALSE(r.Header("x-powerplane-endpoint").empty());
  auto events = SseData(r.body);
  ASSERT_GE(events.size(), 81u);
  EXPECT_EQ(events.back(), "[DONE]");
  // The client did not ask for usage: the chunk the gateway asked for is stripped.
  for (const auto& e : events) EXPECT_EQ(e.find("\"choices\":[]"), std::string::npos) << e;
  // 80 tokens at ~5 ms a step take ~0.4 s at real time; the first bytes must come long before
  // the last, or the relay buffered the stream.
  ASSERT_GE(r.chunks.size(), 10u);
  const double first = r.chunks.front().at_s, last = r.chunks.back().at_s;
  EXPECT_GT(last - first, 0.25);
  EXPECT_LT(first, 0.5 * last);
}

TEST_F(GatewayIntegrationTest, ReportsUsageWhenAsked) {
  auto r = client_->Chat("key-any", ChatBody(20, true, /*include_usage=*/true));
  ASSERT_EQ(r.status, 200) << r.body;
  auto events = SseData(r.body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  auto usage = json::parse(events[events.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 20);
  EXPECT_GT(usage["usage"]["prompt_tokens"].get<int>(), 0);
}

TEST_F(GatewayIntegrationTest, NonStreamingAndCompletions) {
  auto r = client_->Chat("key-any", ChatBody(12, false));
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = json::parse(r.body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["usage"]["completion_tokens"], 12);
  EXPECT_FALSE(j["choices"][0]["message"]["content"].get<std::string>().empty());

  auto c = client_->Chat("key-any", R"({"model":"llama-3.1-8b","prompt":"Once","max_tokens":5})",
                         "/v1/completions");
  ASSERT_EQ(c.status, 200) << c.body;
  EXPECT_EQ(json::parse(c.body)["usage"]["completion_tokens"], 5);

  auto models = client_->Call(http::verb::get, "/v1/models", "", "key-any");
  ASSERT_EQ(models.status, 200);
  EXPECT_EQ(json::parse(models.body)["data"][0]["id"], "llama-3.1-8b");
}

TEST_F(GatewayIntegrationTest, ErrorsAreOpenAiShaped) {
  struct Case {
    std::string key, body;
    int status;
    std::string code;
    std::string message_has = {};
  } cases[] = {
      {"", ChatBody(5, false), 401, "invalid_api_key", "didn't provide an API key"},
      {"wrong", ChatBody(5, false), 401, "invalid_api_key", "Incorrect API key"},
      {"key-any", "{not json", 400, ""},
      {"key-any", R"({"model":"llama-3.1-8b"})", 400, ""},
      {"key-any", R"({"model":"gpt-9","messages":[{"role":"user","content":"x"}]})", 404,
       "model_not_found"},
      {"key-any", std::string(5 * 1024 * 1024, 'x'), 413, "request_too_large"},
  };
  for (const auto& c : cases) {
    auto r = client_->Chat(c.key, c.body);
    EXPECT_EQ(r.status, c.status) << c.body.substr(0, 60);
    auto j = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r.body;
    ASSERT_TRUE(j["error"].is_object()) << r.body;
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_TRUE(j["error"]["type"].is_string());
    EXPECT_TRUE(j["error"].contains("param"));
    if (!c.code.empty()) {
      EXPECT_EQ(j["error"]["code"], c.code) << r.body;
    }
    if (j["error"]["message"].is_string()) {
      EXPECT_NE(j["error"]["message"].get<std::string>().find(c.message_has), std::string::npos)
          << r.body;
    }
  }
  EXPECT_EQ(client_->Call(http::verb::get, "/admin/fleet").status, 401);
  EXPECT_EQ(client_->Call(http::verb::get, "/nope", "", "key-any").status, 404);
  const auto get = client_->Call(http::verb::get, "/v1/chat/completions", "", "key-any");
  EXPECT_EQ(get.status, 405);
  EXPECT_EQ(json::parse(get.body, nullptr, false)["error"]["code"], "method_not_allowed") << get.body;
}

TEST_F(GatewayIntegrationTest, TrafficFollowsThePriceAndMovesAfterAnOverride) {
  for (int i = 0; i < 5; ++i) {
    auto r = client_->Chat("key-any", ChatBody(4, false));
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(r.Header("x-powerplane-site"), "cheap");
  }
  auto o = Admin(http::verb::post, "/admin/sites/cheap/price", R"({"usd_per_mwh": 500})");
  ASSERT_EQ(o.status, 200) << o.body;
  const auto changed = std::chrono::steady_clock::now();
  auto r = client_->Chat("key-any", ChatBody(4, false));
  EXPECT_EQ(r.Header("x-powerplane-site"), "dear");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - changed).count(), 1.0);
  auto fleet_json = json::parse(Admin(http::verb::get, "/admin/fleet").body);
  EXPECT_EQ(fleet_json["sites"][0]["override_usd_per_mwh"], 500.0);

  ASSERT_EQ(Admin(http::verb::delete_, "/admin/sites/cheap/price").status, 200);
  EXPECT_EQ(client_->Chat("key-any", ChatBody(4, false)).Header("x-powerplane-site"), "cheap");
  EXPECT_EQ(Admin(http::verb::post, "/admin/sites/nowhere/price", R"({"usd_per_mwh":1})").status,
            404);
  EXPECT_EQ(Admin(http::verb::post, "/admin/sites/cheap/price", R"({"usd":1})").status, 400);
}

TEST_F(GatewayIntegrationTest, EuTenantIsNeverServedOutsideTheEu) {
  // The EU site is the most expensive; the tenant still lands there.
  for (int i = 0; i < 3; ++i) {
    auto r = client_->Chat("key-eu", ChatBody(4, false));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.Header("x-powerplane-site"), "eu");
  }
  // Saturate it (batch 2, no queue) with long streams; the rest wait, then get 429, never a US
  // site.
  std::vector<std::thread> long_streams;
  std::vector<testing::StreamResult> results(5);
  for (int i = 0; i < 5; ++i) {
    long_streams.emplace_back([&, i] {
      TestClient c("127.0.0.1", runtime_->port());
      results[i] = c.Chat("key-eu", ChatBody(i < 2 ? 600 : 4, true));
    });
    if (i == 1) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  for (auto& t : long_streams) t.join();
  int ok = 0, refused = 0;
  for (const auto& r : results) {
    if (r.status == 200) {
      ++ok;
      EXPECT_EQ(r.Header("x-powerplane-site"), "eu");
    } else {
      ++refused;
      EXPECT_TRUE(r.status == 429 || r.status == 503) << r.status;
      if (r.status == 429) {
        EXPECT_FALSE(r.Header("retry-after").empty());
      }
    }
  }
  EXPECT_GE(ok, 2);
  EXPECT_GE(refused, 1);
}

TEST_F(GatewayIntegrationTest, ADeadEndpointIsTakenOutAndComesBack) {
  auto& fleet = runtime_->fleet();
  // Endpoint 0 is the cheap site's only engine.
  runtime_->StopEngine(0);
  // Requests keep succeeding: the first may find the dead engine and fail over before a byte
  // reaches the client.
  for (int i = 0; i < 3; ++i) {
    auto r = client_->Chat("key-any", ChatBody(4, false));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.Header("x-powerplane-site"), "dear");
  }
  EXPECT_FALSE(fleet.Healthy(0));
  runtime_->RestartEngine(0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (!fleet.Healthy(0) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(fleet.Healthy(0));
  EXPECT_EQ(client_->Chat("key-any", ChatBody(4, false)).Header("x-powerplane-site"), "cheap");
}

TEST_F(GatewayIntegrationTest, MetricsAndFleetState) {
  client_->Chat("key-any", ChatBody(4, false));
  auto m = client_->Call(http::verb::get, "/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_NE(m.body.find("powerplane_requests_total"), std::string::npos);
  EXPECT_NE(m.body.find("powerplane_site_price_usd_per_mwh{site=\"cheap\"} 20"), std::string::npos);
  EXPECT_NE(m.body.find("powerplane_energy_joules_total"), std::string::npos);
  auto f = json::parse(Admin(http::verb::get, "/admin/fleet").body);
  ASSERT_EQ(f["sites"].size(), 3u);
  EXPECT_EQ(f["sites"][1]["usd_per_mwh"], 80.0);
  EXPECT_EQ(f["sites"][2]["jurisdiction"], "EU");
  EXPECT_EQ(f["sites"][0]["endpoints"].size(), 1u);
}

// A request still waiting on its engine when the gateway stops is a coroutine frame that the
// stopped pool destroys; its destructor gives the endpoint's slot back to the fleet, so the pool
// must go before the fleet (under ASan this was a use after free; in release, a crash at times).
TEST(GatewayShutdownTest, ARequestStillWaitingOnItsEngineDoesNotOutliveTheFleet) {
  // An engine that takes connections (the kernel completes them) and never answers.
  net::asio::io_context io;
  net::tcp::acceptor silent(io, net::tcp::endpoint(net::asio::ip::make_address("127.0.0.1"), 0));
  runtime::UpOptions o;
  o.shutdown_grace = std::chrono::milliseconds(100);
  auto runtime = StartRuntime(OneEngineFleet({silent.local_endpoint().port()}), 1, o);
  ASSERT_NE(runtime, nullptr);
  TestClient client("127.0.0.1", runtime->port());
  std::thread waiting([&] { client.Chat("key-any", ChatBody(8, true)); });
  // Until the request holds a slot at the endpoint.
  for (int i = 0; i < 200 && runtime->fleet().Status().endpoints.front().in_flight == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(runtime->fleet().Status().endpoints.front().in_flight, 1);
  runtime.reset();  // stops the pools (2 s for the request to end, which it does not), then frees.
  waiting.join();
}

// One site with one emulated engine at real time, the tenant "anyone" (key "key-any"), and a
// ledger in `dir`; started with `grace` to finish requests under way when stopped.
std::unique_ptr<runtime::Runtime> StartEmulatedWithLedger(const std::filesystem::path& dir,
                                                          std::chrono::milliseconds grace) {
  runtime::UpOptions o;
  o.state_dir = dir;
  o.shutdown_grace = grace;
  return StartRuntime(R"(
[gateway]
admin_key = "admin"
[[sites]]
id = "one"
jurisdiction = "US"
price = 20.0
  [[sites.endpoints]]
  count = 1
  gpu = "h200"
  model = "llama-3.1-8b"
[[tenants]]
id = "anyone"
keys = ["key-any"]
)",
                      1, o);
}

std::filesystem::path FreshDir(const std::string& name) {
  return std::filesystem::temp_directory_path() /
         (name + "-" + std::to_string(::getpid()) + "-" +
          std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
}

// Starts a stream of `tokens` on `runtime` on a thread of its own, and returns once its first
// event is in (the request is under way). The thread puts the whole answer in `out`.
std::thread StreamUnderWay(runtime::Runtime& runtime, TestClient& client, int tokens,
                           testing::StreamResult& out) {
  std::thread t([&client, tokens, &out] { out = client.Chat("key-any", ChatBody(tokens, true)); });
  for (int i = 0; i < 300 && runtime.fleet().Status().endpoints.front().in_flight == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // its first tokens are out.
  return t;
}

// SIGTERM of a gateway (Runtime::Stop) takes no new connection, but a stream under way goes on
// to its end, [DONE] included, and its ledger row is the whole answer's; then the stop returns.
TEST(GatewayShutdownTest, AStopLetsAStreamUnderWayFinish) {
  const auto dir = FreshDir("pp-gw-drain");
  auto runtime = StartEmulatedWithLedger(dir, std::chrono::seconds(20));
  ASSERT_NE(runtime, nullptr);
  const unsigned short port = runtime->port();
  TestClient client("127.0.0.1", port);
  testing::StreamResult r;
  std::thread streaming = StreamUnderWay(*runtime, client, 300, r);  // ~1.5 s at real time.
  const auto stop_began = std::chrono::steady_clock::now();
  std::thread stopping([&] { runtime->Stop(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  const auto late = TestClient("127.0.0.1", port).Chat("key-any", ChatBody(4, true));
  EXPECT_EQ(late.status, 0) << "a new request was taken while draining: " << late.body;
  stopping.join();
  const double stop_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stop_began).count();
  streaming.join();
  ASSERT_EQ(r.status, 200) << r.error << r.body;
  const auto events = SseData(r.body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]") << r.body;
  for (const auto& e : events) EXPECT_EQ(e.find("\"error\""), std::string::npos) << e;
  EXPECT_LT(stop_s, 10.0);
  runtime.reset();

  // The row, read back through a gateway on the same store.
  runtime = StartEmulatedWithLedger(dir, std::chrono::seconds(1));
  ASSERT_NE(runtime, nullptr);
  const auto ledger = TestClient("127.0.0.1", runtime->port())
                          .Call(http::verb::get, "/admin/ledger", {}, "admin");
  ASSERT_EQ(ledger.status, 200) << ledger.body;
  const json row = json::parse(ledger.body.substr(0, ledger.body.find('\n')));
  EXPECT_EQ(row["request_id"], r.Header("x-request-id"));
  EXPECT_EQ(row["outcome"], "ok") << row.dump();
  EXPECT_EQ(row["completion_tokens"], 300) << row.dump();
  runtime.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

// Stops `runtime` (one endpoint) while a stream of 4000 tokens (`stream`, ~20 s at real time)
// and a non-streaming request of as many (`plain`) are under way; returns how long Stop took.
double StopWithTwoRequestsUnderWay(runtime::Runtime& runtime, testing::StreamResult& stream,
                                   testing::StreamResult& plain) {
  TestClient client("127.0.0.1", runtime.port()), plain_client("127.0.0.1", runtime.port());
  std::thread streaming = StreamUnderWay(runtime, client, 4000, stream);
  std::thread waiting([&] { plain = plain_client.Chat("key-any", ChatBody(4000, false)); });
  for (int i = 0; i < 300 && runtime.fleet().Status().endpoints.front().in_flight < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const auto stop_began = std::chrono::steady_clock::now();
  runtime.Stop();
  const double stop_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stop_began).count();
  streaming.join();
  waiting.join();
  return stop_s;
}

// A request not yet answered when the stop cut it: 503 gateway_stopping, retry in a second.
void ExpectStoppingAnswer(const testing::StreamResult& plain) {
  EXPECT_EQ(plain.status, 503) << plain.error << plain.body;
  EXPECT_NE(plain.body.find("\"gateway_stopping\""), std::string::npos) << plain.body;
  EXPECT_EQ(plain.Header("retry-after"), "1");
}

// A gateway that cannot bind its address says so and makes no store: a new SQLite store was
// created before the bind failed.
TEST(GatewayStoreTest, AnAddressInUseIsRefusedBeforeAStoreIsMade) {
  net::asio::io_context io;
  net::tcp::acceptor taken(io, net::tcp::endpoint(net::asio::ip::make_address("127.0.0.1"), 0));
  const auto dir = FreshDir("pp-gw-bind");
  auto config = fleet::ParseFleetConfig(OneEngineFleet({9}), "test fleet");
  ASSERT_TRUE(config) << config.error();
  runtime::UpOptions o;
  o.listen = "127.0.0.1:" + std::to_string(taken.local_endpoint().port());
  o.data_dir = PP_SOURCE_DIR "/data";
  o.state_dir = dir;
  auto rt = runtime::Runtime::Start(*config, o);
  ASSERT_FALSE(rt);
  EXPECT_NE(rt.error().find("cannot listen on " + o.listen + ": Address already in use"),
            std::string::npos)
      << rt.error();
  EXPECT_EQ(rt.error().find(".hpp"), std::string::npos) << rt.error();  // no Boost source path.
  EXPECT_FALSE(std::filesystem::exists(dir / "powerplane.db"));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

// A model no site of the tenant's jurisdictions serves is refused for good: 403 with
// x-should-retry: false and no Retry-After (it was 503 with Retry-After: 30, which the OpenAI
// SDKs retried for a minute), and the refusal is audited.
TEST(GatewayResidencyTest, AModelNoSiteInTheJurisdictionsServesIsRefusedForGood) {
  auto runtime = StartRuntime(R"(
[gateway]
admin_key = "admin"
[[sites]]
id = "us"
jurisdiction = "US"
price = 20.0
  [[sites.endpoints]]
  count = 1
  gpu = "h200"
  model = "llama-3.1-8b"
[[sites]]
id = "eu"
jurisdiction = "EU"
price = 90.0
  [[sites.endpoints]]
  count = 1
  gpu = "h200"
  model = "other-model"
[[tenants]]
id = "eu-only"
keys = ["key-eu"]
jurisdictions = ["EU"]
)",
                              1);
  ASSERT_NE(runtime, nullptr);
  TestClient client("127.0.0.1", runtime->port());
  const auto r = client.Chat("key-eu", ChatBody(4, false));
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(json::parse(r.body)["error"]["code"], "no_capacity_in_jurisdiction") << r.body;
  EXPECT_EQ(r.Header("x-should-retry"), "false");
  EXPECT_EQ(r.Header("retry-after"), "");
}

// A fleet file's tenant changed through the admin API keeps the change across a restart: the
// file seeds a tenant the store lacks and does not overwrite one it has.
TEST(GatewayStoreTest, AnAdminChangeToAFleetFileTenantSurvivesARestart) {
  const auto dir = FreshDir("pp-gw-seed");
  auto runtime = StartEmulatedWithLedger(dir, std::chrono::seconds(1));
  ASSERT_NE(runtime, nullptr);
  const std::string change =
      R"({"id":"anyone","jurisdictions":["US"],"class":"batch","latency_target_ms":1500,"rpm":7})";
  auto posted = TestClient("127.0.0.1", runtime->port())
                    .Call(http::verb::post, "/admin/tenants", change, "admin");
  ASSERT_EQ(posted.status, 200) << posted.body;
  runtime.reset();
  runtime = StartEmulatedWithLedger(dir, std::chrono::seconds(1));
  ASSERT_NE(runtime, nullptr);
  auto listed = TestClient("127.0.0.1", runtime->port())
                    .Call(http::verb::get, "/admin/tenants", {}, "admin");
  ASSERT_EQ(listed.status, 200) << listed.body;
  json anyone;
  const json tenants = json::parse(listed.body);
  for (const auto& t : tenants["data"]) {
    if (t["id"] == "anyone") anyone = t;
  }
  ASSERT_FALSE(anyone.is_null()) << listed.body;
  EXPECT_EQ(anyone["jurisdictions"], json::array({"US"})) << anyone.dump();
  EXPECT_EQ(anyone["class"], "batch") << anyone.dump();
  EXPECT_EQ(anyone["latency_target_ms"], 1500) << anyone.dump();
  EXPECT_EQ(anyone["rpm"], 7) << anyone.dump();
  runtime.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

// A stream still under way when the grace is over is cut as a failing engine cuts one, an error
// event then [DONE], but the error says the gateway is stopping; its row has what was
// delivered. A non-streaming request is answered 503 gateway_stopping, not tried elsewhere.
TEST(GatewayShutdownTest, AStreamStillGoingWhenTheGraceEndsGetsAnErrorAndDone) {
  const auto dir = FreshDir("pp-gw-drain-cut");
  auto runtime = StartEmulatedWithLedger(dir, std::chrono::milliseconds(300));
  ASSERT_NE(runtime, nullptr);
  testing::StreamResult r, plain;
  const double stop_s = StopWithTwoRequestsUnderWay(*runtime, r, plain);
  ExpectStoppingAnswer(plain);
  EXPECT_GE(stop_s, 0.3);
  EXPECT_LT(stop_s, 3.0);
  ASSERT_EQ(r.status, 200) << r.error << r.body;
  const auto events = SseData(r.body);
  ASSERT_GE(events.size(), 2u) << r.body;
  EXPECT_EQ(events.back(), "[DONE]") << r.body;
  EXPECT_NE(events[events.size() - 2].find("\"gateway_stopping\""), std::string::npos) << r.body;
  runtime.reset();
  runtime = StartEmulatedWithLedger(dir, std::chrono::seconds(1));
  ASSERT_NE(runtime, nullptr);
  const auto ledger = TestClient("127.0.0.1", runtime->port())
                          .Call(http::verb::get, "/admin/ledger", {}, "admin");
  ASSERT_EQ(ledger.status, 200) << ledger.body;
  json row;
  for (std::size_t at = 0; at < ledger.body.size();) {
    const std::size_t nl = ledger.body.find('\n', at);
    const json one = json::parse(ledger.body.substr(at, nl - at));
    if (one["request_id"] == r.Header("x-request-id")) row = one;
    if (nl == std::string::npos) break;
    at = nl + 1;
  }
  ASSERT_FALSE(row.is_null()) << ledger.body;
  EXPECT_EQ(row["outcome"], "gateway_stopping") << row.dump();
  EXPECT_GT(row["completion_tokens"].get<int>(), 0) << row.dump();
  EXPECT_LT(row["completion_tokens"].get<int>(), 4000) << row.dump();
  runtime.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

// Accepts connections on a loopback port, on a thread of its own, and hands each to `serve` (on
// that thread); destroying it ends the accepting.
class LoopbackAcceptor {
 public:
  explicit LoopbackAcceptor(std::function<void(net::tcp::socket)> serve)
      : serve_(std::move(serve)),
        acceptor_(io_, net::tcp::endpoint(net::asio::ip::make_address("127.0.0.1"), 0)),
        thread_([this] { Run(); }) {}
  ~LoopbackAcceptor() {
    stopping_ = true;
    net::tcp::socket wake(io_);  // ends the blocking accept.
    boost::system::error_code ec;
    wake.connect(acceptor_.local_endpoint(), ec);
    thread_.join();
  }
  unsigned short port() const { return acceptor_.local_endpoint().port(); }

 private:
  void Run() {
    for (;;) {
      net::tcp::socket s(io_);
      boost::system::error_code ec;
      acceptor_.accept(s, ec);
      if (ec || stopping_) return;
      serve_(std::move(s));
    }
  }

  std::function<void(net::tcp::socket)> serve_;
  net::asio::io_context io_;
  net::tcp::acceptor acceptor_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;  // last: started once the rest is made.
};

// Reads a request from `s`: its header, then as many body bytes as it says. Empty on an error.
std::string ReadRequest(net::tcp::socket& s) {
  std::string request;
  std::array<char, 4096> buf;
  std::size_t header_end = std::string::npos, length = 0;
  boost::system::error_code ec;
  while (!ec) {
    request.append(buf.data(), s.read_some(net::asio::buffer(buf), ec));
    if (header_end == std::string::npos &&
        (header_end = request.find("\r\n\r\n")) != std::string::npos) {
      std::string head = request.substr(0, header_end);
      for (auto& c : head) c = static_cast<char>(std::tolower(c));
      if (auto at = head.find("content-length:"); at != std::string::npos) {
        length = std::stoul(head.substr(at + 15));
      }
    }
    if (header_end != std::string::npos && request.size() >= header_end + 4 + length) break;
  }
  return ec ? std::string() : request;
}

// An engine that answers every request with a whole chat completion whose end is its close (no
// Content-Length, no chunks: HTTP/1.0 style), head, body and FIN sent together.
class ClosingEngine {
 public:
  // Answers every request with `answer` (by default a whole JSON completion whose end is the
  // close) in one write, then closes.
  explicit ClosingEngine(std::string answer = DefaultAnswer()) : answer_(std::move(answer)) {}
  unsigned short port() const { return acceptor_.port(); }
  int posts() const { return posts_; }  // requests other than GETs (probes) answered.

 private:
  static std::string DefaultAnswer() {
    const std::string body =
        R"({"id":"c1","object":"chat.completion","created":1,"model":"llama-3.1-8b",)"
        R"("choices":[{"index":0,"message":{"role":"assistant","content":"hi"},)"
        R"("finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,)"
        R"("total_tokens":6}})";
    return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" +
           body;
  }

  void Answer(net::tcp::socket s) {
    const std::string request = ReadRequest(s);
    if (request.empty()) return;
    // The prober's GET /metrics gets a whole answer, whatever requests are answered with.
    if (!request.starts_with("GET ")) ++posts_;
    const std::string& answer = request.starts_with("GET ") ? kWhole : answer_;
    boost::system::error_code ec;
    net::asio::write(s, net::asio::buffer(answer), ec);
    s.close(ec);
  }

  const std::string kWhole = DefaultAnswer();
  const std::string answer_;
  std::atomic<int> posts_{0};
  LoopbackAcceptor acceptor_{[this](net::tcp::socket s) { Answer(std::move(s)); }};
};

// An engine this process did not start (`urls`), on a thread of its own, emulating an H200 at
// real time.
class ExternalEngine {
 public:
  ExternalEngine() {
    auto profile = engine::LoadGpuProfile("h200", PP_SOURCE_DIR "/data");
    EXPECT_TRUE(profile) << profile.error();
    engine::EngineOptions o;
    o.gpu = std::make_shared<const core::GpuModel>(std::move(*profile));
    engine_ = std::make_unique<engine::Engine>(
        io_.get_executor(), net::tcp::endpoint(net::asio::ip::make_address("127.0.0.1"), 0), o);
    engine_->Start();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~ExternalEngine() {
    engine_->Stop();
    work_.reset();
    io_.stop();
    thread_.join();
  }
  unsigned short port() const { return engine_->port(); }
  engine::EngineStats Stats() const { return engine_->Stats(); }

 private:
  net::asio::io_context io_;
  std::optional<net::asio::executor_work_guard<net::asio::io_context::executor_type>> work_{
      io_.get_executor()};
  std::unique_ptr<engine::Engine> engine_;
  std::thread thread_;
};

// The ledger's rows (JSON lines) read through a gateway started on the store in `dir`, by
// request id, into `rows`.
void ReadLedgerRows(const std::filesystem::path& dir, const std::string& fleet,
                    std::map<std::string, json>& rows) {
  runtime::UpOptions o;
  o.state_dir = dir;
  auto runtime = StartRuntime(fleet, 1, o);
  if (!runtime) return;
  const auto ledger =
      TestClient("127.0.0.1", runtime->port()).Call(http::verb::get, "/admin/ledger", {}, "admin");
  EXPECT_EQ(ledger.status, 200) << ledger.body;
  std::istringstream lines(ledger.body);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    json row = json::parse(line);
    ASSERT_TRUE(row["request_id"].is_string()) << line;
    const std::string id = row["request_id"].get<std::string>();
    rows[id] = std::move(row);
  }
}

// The stop's cut with engines the gateway did not start (they go on running): the gateway
// closes its exchanges with them itself, so a stream still going when the grace ends gets the
// gateway_stopping error event and [DONE], a non-streaming request still waiting is answered
// 503 gateway_stopping, and both have their rows; the engine is not blamed.
TEST(GatewayShutdownTest, TheCutEndsRequestsAtEnginesItDidNotStart) {
  ExternalEngine engine;
  const auto dir = FreshDir("pp-gw-cut-external");
  const std::string fleet = OneEngineFleet({engine.port()});
  runtime::UpOptions o;
  o.state_dir = dir;
  o.shutdown_grace = std::chrono::milliseconds(300);
  auto runtime = StartRuntime(fleet, 1, o);
  ASSERT_NE(runtime, nullptr);
  testing::StreamResult r, plain;
  const double stop_s = StopWithTwoRequestsUnderWay(*runtime, r, plain);
  EXPECT_LT(stop_s, 3.0);
  ExpectStoppingAnswer(plain);
  ASSERT_EQ(r.status, 200) << r.error << r.body;
  const auto events = SseData(r.body);
  ASSERT_GE(events.size(), 2u) << r.body;
  EXPECT_EQ(events.back(), "[DONE]") << r.body;
  EXPECT_NE(events[events.size() - 2].find("\"gateway_stopping\""), std::string::npos) << r.body;
  std::int64_t delivered = 0;
  for (const auto& e : events) delivered += e.find("\"content\"") != std::string::npos;
  runtime.reset();

  std::map<std::string, json> rows;
  ReadLedgerRows(dir, fleet, rows);
  ASSERT_TRUE(rows.contains(r.Header("x-request-id")));
  const json& row = rows[r.Header("x-request-id")];
  EXPECT_EQ(row["outcome"], "gateway_stopping") << row.dump();
  EXPECT_EQ(row["completion_tokens"].get<std::int64_t>(), delivered) << row.dump();
  ASSERT_TRUE(rows.contains(plain.Header("x-request-id")));
  EXPECT_EQ(rows[plain.Header("x-request-id")]["outcome"], "gateway_stopping");
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

// A body that ends at the engine's close is relayed as soon as it ends: the read of the answer's
// head (which waits for epoll after a short read) must not leave the body's read waiting for an
// event that the close, sent with the head, will not raise again.
TEST(GatewayUpstreamTest, AnAnswerThatEndsAtTheEnginesCloseIsRelayedAtOnce) {
  ClosingEngine engine;
  auto runtime = StartRuntime(OneEngineFleet({engine.port()}), 1);
  ASSERT_NE(runtime, nullptr);
  TestClient client("127.0.0.1", runtime->port());
  for (int i = 0; i < 3; ++i) {
    double took_s = 0;
    const auto r = TimedChat(client, ChatBody(8, false), &took_s);
    ASSERT_EQ(r.status, 200) << r.error << r.body;
    EXPECT_EQ(json::parse(r.body)["choices"][0]["message"]["content"], "hi") << r.body;
    EXPECT_LT(took_s, 0.6) << "request " << i;
  }
}

// Two US sites of one endpoint each, "cheap" (10 USD/MWh) at 127.0.0.1:`cheap` and "dear" (90)
// at 127.0.0.1:`dear`, and the tenant "anyone" with the key "key-any".
std::string CheapAndDearFleet(unsigned short cheap, unsigned short dear) {
  auto site = [](const char* id, double price, unsigned short port) {
    return std::string("[[sites]]\nid = \"") + id + "\"\njurisdiction = \"US\"\nprice = " +
           std::to_string(price) + "\n  [[sites.endpoints]]\n  urls = [\"http://127.0.0.1:" +
           std::to_string(port) + "\"]\n  gpu = \"h200\"\n  model = \"llama-3.1-8b\"\n";
  };
  return "[gateway]\nadmin_key = \"admin\"\n" + site("cheap", 10, cheap) + site("dear", 90, dear) +
         "[[tenants]]\nid = \"anyone\"\nkeys = [\"key-any\"]\n";
}

// An endpoint that answers its probes but fails every request (500) is held out by the failure
// breaker, longer after each failure in a row: the requests go to the dearer healthy site, and
// the failing one sees a few of them (one per cool-down), not every one.
TEST(GatewayUpstreamTest, AnEndpointThatFailsEveryRequestIsHeldOutThoughItsProbesAnswer) {
  const std::string error = R"({"error":{"message":"boom","type":"server_error"}})";
  ClosingEngine failing("HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                        "Content-Length: " + std::to_string(error.size()) +
                        "\r\nConnection: close\r\n\r\n" + error);
  ExternalEngine good;
  auto runtime = StartRuntime(CheapAndDearFleet(failing.port(), good.port()), 1);
  ASSERT_NE(runtime, nullptr);
  TestClient client("127.0.0.1", runtime->port());
  const auto start = std::chrono::steady_clock::now();
  int ok = 0, n = 0;
  for (; std::chrono::steady_clock::now() - start < std::chrono::milliseconds(2500); ++n) {
    const auto r = client.Chat("key-any", ChatBody(4, false));
    ok += r.status == 200;
    EXPECT_EQ(r.Header("x-powerplane-site"), "dear") << r.status << r.body;
  }
  EXPECT_EQ(ok, n);
  EXPECT_GE(n, 10);
  // Cool-downs of 1 s then 2 s in 2.5 s: two failures, three at most.
  EXPECT_GE(failing.posts(), 1);
  EXPECT_LE(failing.posts(), 3) << "of " << n;
  const auto status = runtime->fleet().Status();
  EXPECT_FALSE(status.endpoints[0].healthy);
  EXPECT_GE(status.endpoints[0].failures_in_a_row, 1);
  EXPECT_NE(status.endpoints[0].last_error.find("500"), std::string::npos);
}

// `data` as one chunk of a chunked body.
std::string Chunk(const std::string& data) {
  std::ostringstream size;
  size << std::hex << data.size();
  return size.str() + "\r\n" + data + "\r\n";
}

// An SSE event with one token of a chat completion stream.
std::string TokenEvent(const std::string& text) {
  return R"(data: {"id":"c1","object":"chat.completion.chunk","created":1,)"
         R"("model":"llama-3.1-8b","choices":[{"index":0,"delta":{"content":")" +
         text + R"("},"finish_reason":null}]})" + "\n\n";
}

const std::string kStreamHead =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";

// A stream whose engine dies after two tokens, its last bytes and its FIN in one go (the chunked
// body never ends): the client gets the two tokens, then the OpenAI error event and [DONE] at
// once. The end came with bytes that a read took, and epoll reports an edge once; the gateway
// knows of the end from the edge's EPOLLRDHUP (net/read_drained.h), not from a deadline's wake a
// second later.
TEST(GatewayUpstreamTest, AStreamWhoseEngineDiesWithItsLastBytesEndsWithAnErrorAtOnce) {
  ClosingEngine engine(kStreamHead + Chunk(TokenEvent("one")) + Chunk(TokenEvent(" two")));
  auto runtime = StartRuntime(OneEngineFleet({engine.port()}), 1);
  ASSERT_NE(runtime, nullptr);
  TestClient client("127.0.0.1", runtime->port());
  // One request: a stream that broke takes its endpoint out (by design).
  double took_s = 0;
  const auto r = TimedChat(client, ChatBody(8, true), &took_s);
  ASSERT_EQ(r.status, 200) << r.error << r.body;
  const auto events = SseData(r.body);
  ASSERT_EQ(events.size(), 4u) << r.body;
  EXPECT_NE(events[0].find("one"), std::string::npos) << r.body;
  EXPECT_NE(events[1].find("two"), std::string::npos) << r.body;
  EXPECT_EQ(json::parse(events[2])["error"]["code"], "upstream_stream_broken") << r.body;
  EXPECT_EQ(events[3], "[DONE]");
  EXPECT_LT(took_s, 0.6);
}

// An engine that takes inference requests and never answers them: it counts the requests it
// was sent and the connections the gateway then closed (which, to an engine, cancels the work).
// The prober's GETs get an empty 200.
class SilentEngine {
 public:
  SilentEngine() { acceptor_.emplace([this](net::tcp::socket s) { Take(std::move(s)); }); }
  ~SilentEngine() {
    acceptor_.reset();  // no new connections;
    {
      std::lock_guard lock(mu_);
      for (int fd : held_) ::shutdown(fd, SHUT_RDWR);  // and the held ones' reads end.
    }
    for (auto& t : holders_) t.join();
  }
  unsigned short port() const { return acceptor_->port(); }
  int requests() const { return requests_; }
  int closed() const { return closed_; }

 private:
  void Take(net::tcp::socket s) {
    std::lock_guard lock(mu_);
    held_.push_back(s.native_handle());
    holders_.emplace_back([this, s = std::move(s)]() mutable { Hold(std::move(s)); });
  }
  void Hold(net::tcp::socket s) {
    const std::string request = ReadRequest(s);
    if (request.empty()) return;
    boost::system::error_code ec;
    if (request.starts_with("GET ")) {
      net::asio::write(s, net::asio::buffer(std::string_view(
                              "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")),
                       ec);
      return;
    }
    ++requests_;
    std::array<char, 4096> buf;
    while (!ec) s.read_some(net::asio::buffer(buf), ec);  // until the gateway closes.
    ++closed_;
  }

  std::atomic<int> requests_{0}, closed_{0};
  std::mutex mu_;
  std::vector<int> held_;
  std::vector<std::thread> holders_;
  std::optional<LoopbackAcceptor> acceptor_;  // made last, reset first.
};

// Polls `done` every 10 ms for at most `limit`; true when it held.
template <typename Done>
bool Eventually(Done done, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

// An engine that takes a stream and sends no head (engines send it as soon as they take a
// request) is hung: after the stream-head timeout the attempt is abandoned (its connection
// closed, which cancels it there), the endpoint is held out, and the stream is served by the
// next best endpoint, instead of a 504 a minute later.
TEST(GatewayUpstreamTest, AStreamWhoseEngineSendsNoHeadGoesToTheNextEndpoint) {
  SilentEngine hung;
  ExternalEngine good;
  runtime::UpOptions o;
  o.stream_head_timeout = std::chrono::seconds(1);
  auto runtime = StartRuntime(CheapAndDearFleet(hung.port(), good.port()), 1, o);
  ASSERT_NE(runtime, nullptr);
  TestClient client("127.0.0.1", runtime->port());
  double took_s = 0;
  const auto r = TimedChat(client, ChatBody(8, true), &took_s);
  ASSERT_EQ(r.status, 200) << r.error << r.body;
  EXPECT_EQ(r.Header("x-powerplane-site"), "dear");
  EXPECT_EQ(SseData(r.body).back(), "[DONE]");
  EXPECT_GE(took_s, 0.9);
  EXPECT_LT(took_s, 3.0);
  EXPECT_EQ(hung.requests(), 1);
  EXPECT_TRUE(Eventually([&] { return hung.closed() == 1; }, std::chrono::seconds(2)));
  EXPECT_FALSE(runtime->fleet().Status().endpoints[0].healthy);
  // The next stream goes to the good one at once.
  const auto again_start = std::chrono::steady_clock::now();
  EXPECT_EQ(client.Chat("key-any", ChatBody(8, true)).Header("x-powerplane-site"), "dear");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - again_start).count(),
            0.9);
}

// A gateway with a ledger (SQLite in a fresh folder) over the engines at `ports`; the fleet
// file's tenant "anyone" is seeded into its store.
class LedgerGatewayTest : public ::testing::Test {
 protected:
  void Start(std::vector<unsigned short> ports, int upstream_timeout_s = 600) {
    dir_ = std::filesystem::temp_directory_path() /
           ("pp-gw-ledger-" + std::to_string(::getpid()) + "-" +
            std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    runtime::UpOptions o;
    o.state_dir = dir_;
    o.upstream_timeout_s = upstream_timeout_s;
    runtime_ = StartRuntime(OneEngineFleet(std::move(ports)), 1, o);
    ASSERT_NE(runtime_, nullptr);
    client_ = std::make_unique<TestClient>("127.0.0.1", runtime_->port());
  }
  void TearDown() override {
    client_.reset();
    runtime_.reset();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  std::vector<json> Ledger() {
    auto r = client_->Call(http::verb::get, "/admin/ledger", {}, "admin");
    EXPECT_EQ(r.status, 200) << r.body;
    std::vector<json> rows;
    std::istringstream lines(r.body);
    for (std::string line; std::getline(lines, line);) {
      if (!line.empty()) rows.push_back(json::parse(line));
    }
    return rows;
  }
  int InFlight() { return runtime_->fleet().Status().endpoints.front().in_flight; }
  // A request to `engine` (which never answers) whose client gives up after 0.3 s: expects the
  // engine's connection closed within 3 s and nothing left in flight; returns the ledger.
  std::vector<json> LeaveBeforeTheFirstByte(SilentEngine& engine, bool stream) {
    Start({engine.port()});
    if (!client_) return {};  // Start failed, and said so.
    const auto r = client_->Call(http::verb::post, "/v1/chat/completions", ChatBody(8, stream),
                                 "key-any", /*timeout_s=*/0.3);
    EXPECT_EQ(r.status, 0) << "the client should have given up first";
    EXPECT_TRUE(Eventually([&] { return engine.closed() == 1; }, std::chrono::seconds(3)))
        << "the engine's connection stayed open for a client that left";
    EXPECT_TRUE(Eventually([&] { return InFlight() == 0; }, std::chrono::seconds(1)));
    return Ledger();
  }
  // The ledger holds one row, `r`'s, ended with `outcome` and charged nothing.
  void ExpectOneUnchargedRow(const testing::StreamResult& r, const std::string& outcome) {
    const auto rows = Ledger();
    ASSERT_EQ(rows.size(), 1u);
    EXPECT_EQ(rows[0]["request_id"], r.Header("x-request-id"));
    EXPECT_EQ(rows[0]["outcome"], outcome);
    EXPECT_EQ(rows[0]["charged_usd"], 0.0);
    // Times to the millisecond: "2026-11-28T12:00:00.123Z".
    const std::string start = rows[0]["start"];
    ASSERT_EQ(start.size(), 24u) << start;
    EXPECT_EQ(start[19], '.') << start;
    EXPECT_EQ(start.back(), 'Z') << start;
  }

  std::filesystem::path dir_;
  std::unique_ptr<runtime::Runtime> runtime_;
  std::unique_ptr<TestClient> client_;
};

// A non-streaming answer comes only when the engine has generated all of it. One not given
// within --upstream-timeout is answered 504 and is not sent to another engine (the first may
// still be generating it: its connection is closed instead, which cancels it there); the ledger
// keeps its row, charged nothing.
TEST_F(LedgerGatewayTest, AnAnswerNotGivenInTimeIs504AndIsTriedNowhereElse) {
  SilentEngine a, b;
  ASSERT_NO_FATAL_FAILURE(Start({a.port(), b.port()}, 1));
  double took_s = 0;
  const auto r = TimedChat(*client_, ChatBody(8, false), &took_s);
  ASSERT_EQ(r.status, 504) << r.error << r.body;
  EXPECT_EQ(json::parse(r.body)["error"]["code"], "upstream_timeout") << r.body;
  EXPECT_GE(took_s, 0.9);
  EXPECT_LT(took_s, 3.0);
  EXPECT_EQ(a.requests() + b.requests(), 1);
  EXPECT_TRUE(Eventually([&] { return a.closed() + b.closed() == 1; }, std::chrono::seconds(2)));
  EXPECT_EQ(InFlight(), 0);
  ASSERT_NO_FATAL_FAILURE(ExpectOneUnchargedRow(r, "upstream_timeout"));
}

// A client that leaves while its non-streaming answer is being generated (nothing has been
// written to it yet) is noticed within a second: the engine's connection is closed, which
// cancels the generation, and the ledger says the client cancelled.
TEST_F(LedgerGatewayTest, AClientThatLeavesANonStreamingRequestCancelsItAtTheEngine) {
  SilentEngine engine;
  const auto rows = LeaveBeforeTheFirstByte(engine, /*stream=*/false);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["outcome"], "client_cancelled");
  EXPECT_EQ(rows[0]["completion_tokens"], 0);
  EXPECT_EQ(engine.requests(), 1);
  // /metrics counts it as the ledger does: a request the client left (499, nginx's count for
  // it), its prompt's tokens charged.
  const std::string metrics = client_->Call(http::verb::get, "/metrics").body;
  EXPECT_NE(metrics.find(R"(powerplane_requests_total{code="499",site="one"} 1)"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find(R"(powerplane_tokens_total{kind="prompt",site="one"} )" +
                         std::to_string(rows[0]["prompt_tokens"].get<int>())),
            std::string::npos)
      << metrics;
}

// The same for a stream whose engine has not answered yet (nothing is written to the client
// before the engine's head): it was held until the upstream timeout, its row upstream_timeout.
TEST_F(LedgerGatewayTest, AClientThatLeavesAStreamBeforeItsFirstByteCancelsItAtTheEngine) {
  SilentEngine engine;
  const auto rows = LeaveBeforeTheFirstByte(engine, /*stream=*/true);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["outcome"], "client_cancelled");
  EXPECT_TRUE(runtime_->fleet().Status().endpoints.front().healthy);  // not the engine's fault.
}

// A stream the engine ends with an error event of its own and no [DONE] (an engine being
// stopped) reaches the client with [DONE] after the error; its row says upstream_error, with
// the tokens delivered, not ok; and the endpoint is held out.
TEST_F(LedgerGatewayTest, AStreamTheEngineEndsWithAnErrorGetsDoneAndIsNotOk) {
  ClosingEngine engine(kStreamHead + Chunk(TokenEvent("one")) + Chunk(TokenEvent(" two")) +
                       Chunk(R"(data: {"error":{"message":"engine stopped","type":"server_error"}})"
                             "\n\n") +
                       "0\r\n\r\n");
  ASSERT_NO_FATAL_FAILURE(Start({engine.port()}));
  const auto r = client_->Chat("key-any", ChatBody(8, true));
  ASSERT_EQ(r.status, 200) << r.error << r.body;
  const auto events = SseData(r.body);
  ASSERT_EQ(events.size(), 4u) << r.body;
  EXPECT_EQ(json::parse(events[2])["error"]["message"], "engine stopped") << r.body;
  EXPECT_EQ(events[3], "[DONE]");
  const auto rows = Ledger();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["outcome"], "upstream_error");
  EXPECT_EQ(rows[0]["completion_tokens"], 2);
  EXPECT_FALSE(runtime_->fleet().Status().endpoints.front().healthy);
}

// A call whose endpoints all failed before answering has its row too (nothing charged).
TEST_F(LedgerGatewayTest, ACallNoEndpointAnsweredIsInTheLedger) {
  ClosingEngine engine(
      "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  ASSERT_NO_FATAL_FAILURE(Start({engine.port()}));
  const auto r = client_->Chat("key-any", ChatBody(8, false));
  ASSERT_GE(r.status, 500) << r.error << r.body;
  ASSERT_NO_FATAL_FAILURE(ExpectOneUnchargedRow(r, "upstream_unavailable"));
}

// A method a path does not take is 405 with the `Allow` header RFC 9110 requires of one: POST
// to /v1/models was answered 200, and the completions paths' 405s named no method.
TEST_F(GatewayIntegrationTest, AMethodAPathDoesNotTakeIs405WithTheMethodsItTakes) {
  struct Case {
    http::verb verb;
    std::string target, key, allow;
  } cases[] = {
      {http::verb::post, "/v1/models", "key-any", "GET, HEAD"},
      {http::verb::delete_, "/v1/models", "key-any", "GET, HEAD"},
      {http::verb::head, "/v1/chat/completions", "key-any", "POST"},
      {http::verb::options, "/v1/chat/completions", "key-any", "POST"},
      {http::verb::get, "/v1/chat/completions", "key-any", "POST"},
      {http::verb::put, "/v1/completions", "key-any", "POST"},
      {http::verb::post, "/metrics", "", "GET, HEAD"},
      {http::verb::post, "/healthz", "", "GET, HEAD"},
      {http::verb::post, "/admin/fleet", "admin", "GET"},
      {http::verb::get, "/admin/sites/cheap/price", "admin", "POST, PUT, DELETE"},
      {http::verb::put, "/admin/hashprice", "admin", "GET, POST"},
      {http::verb::put, "/admin/grid-events", "admin", "GET, POST"},
      {http::verb::get, "/admin/grid-events/e1", "admin", "DELETE"},
  };
  for (const auto& c : cases) {
    const auto r = client_->Call(c.verb, c.target, "", c.key);
    const std::string what = std::string(http::to_string(c.verb)) + " " + c.target;
    EXPECT_EQ(r.status, 405) << what << ": " << r.error << r.body;
    EXPECT_EQ(r.Header("allow"), c.allow) << what;
    EXPECT_FALSE(r.Header("x-request-id").empty()) << what;
    if (c.verb == http::verb::head) continue;  // its answer has no body.
    EXPECT_EQ(json::parse(r.body, nullptr, false)["error"]["code"], "method_not_allowed")
        << what << ": " << r.body;
  }
  // What each path takes it still answers; a GET path answers HEAD with the header alone.
  EXPECT_EQ(client_->Call(http::verb::get, "/v1/models", "", "key-any").status, 200);
  EXPECT_EQ(client_->Call(http::verb::get, "/metrics").status, 200);
  EXPECT_EQ(client_->Call(http::verb::get, "/healthz").status, 200);
  const auto head = client_->Call(http::verb::head, "/healthz");
  EXPECT_EQ(head.status, 200);
  EXPECT_TRUE(head.body.empty()) << head.body;
  EXPECT_EQ(head.Header("content-length"), "15");  // {"status":"ok"}
  EXPECT_EQ(client_->Call(http::verb::head, "/v1/models", "", "key-any").status, 200);
  EXPECT_EQ(Admin(http::verb::get, "/admin/fleet").status, 200);
  EXPECT_EQ(Admin(http::verb::put, "/admin/sites/cheap/price", R"({"usd_per_mwh":25})").status,
            200);
}

// The startup banner listed pp-demo-key and pp-eu-key whenever the admin key was the demo's,
// whatever tenant keys the fleet file had: it names only the demo keys the gateway accepts.
TEST(GatewayBannerTest, NamesOnlyTheDemoKeysTheFleetFileHas) {
  const auto with = [](std::string fleet, const std::string& from, const std::string& to) {
    const auto at = fleet.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    if (at != std::string::npos) fleet.replace(at, from.size(), to);
    return fleet;
  };
  const std::string demo_admin =
      with(kFleet, R"(admin_key = "admin")", R"(admin_key = "pp-admin-key")");
  // The demo admin key and pp-demo-key, no pp-eu-key.
  auto rt = StartRuntime(with(demo_admin, R"(keys = ["key-any"])", R"(keys = ["pp-demo-key"])"), 1);
  ASSERT_NE(rt, nullptr);
  std::string banner = rt->Banner();
  EXPECT_NE(banner.find("  demo keys (demo only): pp-demo-key (any jurisdiction), admin "
                        "pp-admin-key\n"),
            std::string::npos)
      << banner;
  EXPECT_EQ(banner.find("pp-eu-key"), std::string::npos) << banner;
  EXPECT_NE(banner.find("Bearer pp-demo-key"), std::string::npos) << banner;
  rt.reset();
  // pp-eu-key alone, another admin key: the try line cannot name a key it has.
  rt = StartRuntime(with(kFleet, R"(keys = ["key-eu"])", R"(keys = ["pp-eu-key"])"), 1);
  ASSERT_NE(rt, nullptr);
  banner = rt->Banner();
  EXPECT_NE(banner.find("  demo keys (demo only): pp-eu-key (EU only)\n"), std::string::npos)
      << banner;
  EXPECT_EQ(banner.find("pp-demo-key"), std::string::npos) << banner;
  EXPECT_EQ(banner.find("pp-admin-key"), std::string::npos) << banner;
  rt.reset();
  // The demo admin key and no demo tenant key.
  rt = StartRuntime(demo_admin, 1);
  ASSERT_NE(rt, nullptr);
  banner = rt->Banner();
  EXPECT_NE(banner.find("  demo keys (demo only): admin pp-admin-key\n"), std::string::npos)
      << banner;
  EXPECT_EQ(banner.find("pp-eu-key"), std::string::npos) << banner;
  EXPECT_EQ(banner.find("pp-demo-key"), std::string::npos) << banner;
}

}  // namespace
}  // namespace powerplane
