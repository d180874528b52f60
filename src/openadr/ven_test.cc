#include "openadr/ven.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "grid/time.h"
#include "net/http_client.h"
#include "net/io_pool.h"
#include "openadr/test_vtn.h"

namespace powerplane::openadr {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

std::int64_t NowS() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Utc(std::int64_t s) { return grid::FormatUtc(grid::UtcTime{std::chrono::seconds(s)}); }

// An event limiting `site` to `kw` from `start_s` for an hour (one interval, id 0).
Json Event(const std::string& id, const std::string& site, double kw, std::int64_t start_s) {
  return {{"id", id},
          {"createdDateTime", Utc(start_s)},
          {"modificationDateTime", Utc(start_s)},
          {"objectType", "EVENT"},
          {"programID", "prog-1"},
          {"targets", {site}},
          {"intervalPeriod", {{"start", Utc(start_s)}, {"duration", "PT1H"}}},
          {"intervals",
           {{{"id", 0}, {"payloads", {{{"type", "IMPORT_CAPACITY_LIMIT"}, {"values", {kw}}}}}}}}};
}

// Waits up to `timeout` for `done`; true when it came.
template <typename F>
bool WaitFor(F done, std::chrono::milliseconds timeout = 3000ms) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return done();
}

class VenTest : public ::testing::Test {
 protected:
  void SetUp() override { pool_.Start(); }
  // The pool stops once, when it is destroyed (after the Ven and the hook server).
  void TearDown() override {
    if (hook_) hook_->Stop();
    if (ven_) ven_->Stop();
    ven_.reset();
    hook_.reset();
  }

  VenOptions Options() {
    VenOptions o;
    o.vtn_url = vtn_.url();
    o.client_id = "ven-1";
    o.client_secret = "secret-1";
    o.ven_name = "powerplane-test";
    o.poll_interval = 50ms;
    o.min_poll_gap = 10ms;
    o.report_interval = 100ms;
    o.request_timeout = 300ms;
    o.default_ramp = 30s;
    return o;
  }

  void StartVen(VenOptions options, Ven::MeterCallback meter = {}) {
    auto ven = Ven::Create(
        pool_.context(0).get_executor(), std::move(options),
        [this](std::vector<core::GridEvent> events) {
          std::lock_guard lock(mu_);
          sets_.push_back(std::move(events));
        },
        std::move(meter));
    ASSERT_TRUE(ven.has_value()) << ven.error();
    ven_ = std::move(*ven);
    ven_->Start();
  }

  std::size_t SetsSeen() {
    std::lock_guard lock(mu_);
    return sets_.size();
  }
  std::vector<core::GridEvent> LastSet() {
    std::lock_guard lock(mu_);
    return sets_.empty() ? std::vector<core::GridEvent>{} : sets_.back();
  }
  // Waits for a delivered set whose first event has target `kw` (or, kw < 0, an empty set).
  bool WaitForTarget(double kw, std::chrono::milliseconds timeout = 3000ms) {
    return WaitFor(
        [&] {
          auto s = LastSet();
          if (kw < 0) return SetsSeen() > 0 && s.empty();
          return !s.empty() && s[0].target_kw == kw;
        },
        timeout);
  }

  TestVtn vtn_;
  net::IoPool pool_{1};
  std::unique_ptr<net::HttpServer> hook_;
  std::unique_ptr<Ven> ven_;
  std::mutex mu_;
  std::vector<std::vector<core::GridEvent>> sets_;
};

TEST(VtnUrl, Parses) {
  auto u = ParseVtnUrl("http://127.0.0.1:8080/openadr3/3.1.0/");
  ASSERT_TRUE(u.has_value()) << u.error();
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 8080);
  EXPECT_EQ(u->prefix, "/openadr3/3.1.0");
  auto plain = ParseVtnUrl("http://vtn.example");
  ASSERT_TRUE(plain.has_value());
  EXPECT_EQ(plain->port, 80);
  EXPECT_EQ(plain->prefix, "");
  for (const char* bad : {"https://vtn", "vtn:80", "http://", "http://h:0", "http://h:x",
                          "http://h:70000", "http://u@h", "http://h/p?q=1"}) {
    EXPECT_FALSE(ParseVtnUrl(bad).has_value()) << bad;
  }
}

TEST_F(VenTest, CreateRejectsBadOptions) {
  auto with = [&](auto change) {
    VenOptions o = Options();
    change(o);
    return Ven::Create(pool_.context(0).get_executor(), o, {}).has_value();
  };
  EXPECT_TRUE(with([](VenOptions&) {}));
  EXPECT_FALSE(with([](VenOptions& o) { o.vtn_url = "ftp://x"; }));
  EXPECT_FALSE(with([](VenOptions& o) { o.client_id.clear(); }));
  EXPECT_FALSE(with([](VenOptions& o) { o.client_secret.clear(); }));
  EXPECT_FALSE(with([](VenOptions& o) { o.poll_interval = 0ms; }));
  EXPECT_FALSE(with([](VenOptions& o) { o.callback_url = "notify"; }));
}

TEST_F(VenTest, GetsTokenAndMapsCapacityLimitToGridEvents) {
  const std::int64_t start = NowS() - 10;
  vtn_.SetEvents(Json::array({Event("evt-1", "west-tx-wind", 5000, start),
                              Event("evt-2", "granbury-tx", 7000, start + 3600)})
                     .dump());
  StartVen(Options());
  ASSERT_TRUE(WaitFor([&] { return SetsSeen() > 0; }));
  const auto set = LastSet();
  ASSERT_EQ(set.size(), 2u);
  EXPECT_EQ(set[0].id, "evt-1/0");
  EXPECT_EQ(set[0].site, "west-tx-wind");
  EXPECT_DOUBLE_EQ(set[0].target_kw, 5000);
  EXPECT_EQ(set[0].start_s, start);
  EXPECT_EQ(set[0].duration_s, 3600);
  EXPECT_EQ(set[0].ramp_s, 30);
  EXPECT_EQ(set[0].source, "openadr");
  EXPECT_EQ(set[1].site, "granbury-tx");
  EXPECT_EQ(set[1].start_s, start + 3600);
  EXPECT_EQ(vtn_.tokens_issued(), 1);
  EXPECT_EQ(vtn_.unauthorized_requests(), 0);
  // Polling goes on; an unchanged set is not handed over again.
  const int requests = vtn_.event_requests();
  ASSERT_TRUE(WaitFor([&] { return vtn_.event_requests() >= requests + 3; }));
  EXPECT_EQ(SetsSeen(), 1u);
  EXPECT_EQ(ven_->events().size(), 2u);
  // A change is handed over, and so is the end of all events.
  vtn_.SetEvents(Json::array({Event("evt-1", "west-tx-wind", 4000, start)}).dump());
  ASSERT_TRUE(WaitForTarget(4000));
  vtn_.SetEvents("[]");
  ASSERT_TRUE(WaitForTarget(-1));
  const VenStats s = ven_->stats();
  EXPECT_EQ(s.event_updates, 3u);
  EXPECT_EQ(s.polls_failed, 0u);
  EXPECT_EQ(s.tokens_obtained, 1u);
}

TEST_F(VenTest, PagesThroughManyEvents) {
  Json events = Json::array();
  for (int i = 0; i < 120; ++i) events.push_back(Event("e" + std::to_string(i), "a", i, NowS()));
  vtn_.SetEvents(events.dump());
  StartVen(Options());
  ASSERT_TRUE(WaitFor([&] { return SetsSeen() > 0; }));
  const auto set = LastSet();
  ASSERT_EQ(set.size(), 120u);
  EXPECT_EQ(set[119].id, "e119/0");
}

TEST_F(VenTest, RefreshesTheTokenBeforeItExpires) {
  vtn_.SetTokenExpiresIn(1);
  vtn_.SetEvents(Json::array({Event("evt-1", "a", 10, NowS())}).dump());
  StartVen(Options());
  ASSERT_TRUE(WaitFor([&] { return vtn_.tokens_issued() >= 2; }, 3000ms));
  EXPECT_EQ(vtn_.unauthorized_requests(), 0);
  EXPECT_EQ(ven_->stats().polls_failed, 0u);
  EXPECT_EQ(ven_->stats().auth_failures, 0u);
}

TEST_F(VenTest, WrongSecretIsCountedNotFatal) {
  vtn_.SetEvents(Json::array({Event("evt-1", "a", 10, NowS())}).dump());
  VenOptions o = Options();
  o.client_secret = "wrong";
  StartVen(o);
  ASSERT_TRUE(WaitFor([&] { return ven_->stats().auth_failures >= 3; }));
  const VenStats s = ven_->stats();
  EXPECT_EQ(s.polls_ok, 0u);
  EXPECT_GE(s.polls_failed, 3u);
  EXPECT_NE(s.last_error.find("token refused: 401"), std::string::npos) << s.last_error;
  EXPECT_EQ(SetsSeen(), 0u);
}

TEST_F(VenTest, VtnDownKeepsEventsAndRecovers) {
  const std::int64_t start = NowS();
  vtn_.SetEvents(Json::array({Event("evt-1", "a", 5000, start)}).dump());
  StartVen(Options());
  ASSERT_TRUE(WaitForTarget(5000));
  vtn_.SetMode(VtnMode::kDown);
  ASSERT_TRUE(WaitFor([&] { return ven_->stats().unreachable >= 3; }));
  EXPECT_EQ(SetsSeen(), 1u);
  EXPECT_EQ(ven_->events().size(), 1u);
  EXPECT_FALSE(ven_->stats().last_error.empty());
  vtn_.SetEvents(Json::array({Event("evt-1", "a", 3000, start)}).dump());
  vtn_.SetMode(VtnMode::kNormal);
  ASSERT_TRUE(WaitForTarget(3000));
  EXPECT_EQ(SetsSeen(), 2u);
}

TEST_F(VenTest, SlowVtnTimesOutKeepsEventsAndRecovers) {
  const std::int64_t start = NowS();
  vtn_.SetEvents(Json::array({Event("evt-1", "a", 5000, start)}).dump());
  VenOptions o = Options();
  o.request_timeout = 150ms;
  StartVen(o);
  ASSERT_TRUE(WaitForTarget(5000));
  vtn_.SetMode(VtnMode::kSlow);  // answers after 1 s.
  ASSERT_TRUE(WaitFor([&] { return ven_->stats().timeouts >= 2; }));
  EXPECT_EQ(ven_->events().size(), 1u);
  EXPECT_EQ(SetsSeen(), 1u);
  vtn_.SetEvents(Json::array({Event("evt-1", "a", 2000, start)}).dump());
  vtn_.SetMode(VtnMode::kNormal);
  ASSERT_TRUE(WaitForTarget(2000));
}

TEST_F(VenTest, MalformedAndFailingAnswersKeepEvents) {
  const std::int64_t start = NowS();
  vtn_.SetEvents(Json::array({Event("evt-1", "a", 5000, start)}).dump());
  StartVen(Options());
  ASSERT_TRUE(WaitForTarget(5000));
  std::uint64_t malformed = 0;
  for (VtnGarbage g : {VtnGarbage::kNotJson, VtnGarbage::kTruncated, VtnGarbage::kWrongTypes}) {
    vtn_.SetGarbage(g);
    vtn_.SetMode(VtnMode::kMalformed);
    ASSERT_TRUE(WaitFor([&] { return ven_->stats().malformed >= malformed + 2; }));
    malformed = ven_->stats().malformed;
    vtn_.SetMode(VtnMode::kNormal);
  }
  vtn_.SetMode(VtnMode::kServerError);
  ASSERT_TRUE(WaitFor([&] { return ven_->stats().http_errors >= 2; }));
  EXPECT_NE(ven_->stats().last_error.find("500"), std::string::npos);
  EXPECT_EQ(ven_->events().size(), 1u);
  EXPECT_EQ(SetsSeen(), 1u);
  vtn_.SetEvents(Json::array({Event("evt-1", "a", 1000, start)}).dump());
  vtn_.SetMode(VtnMode::kNormal);
  ASSERT_TRUE(WaitForTarget(1000));
}

TEST_F(VenTest, AMalformedKnownEventKeepsItsLastGoodForm) {
  const std::int64_t start = NowS();
  vtn_.SetEvents(
      Json::array({Event("evt-1", "a", 5000, start), Event("evt-2", "b", 700, start)}).dump());
  StartVen(Options());
  ASSERT_TRUE(WaitFor([&] { return LastSet().size() == 2; }));
  Json broken = Event("evt-1", "a", 5000, start);
  broken["intervals"][0]["payloads"][0]["values"] = {"lots"};
  vtn_.SetEvents(Json::array({broken, Event("evt-2", "b", 600, start)}).dump());
  ASSERT_TRUE(WaitFor([&] {
    auto s = LastSet();
    return s.size() == 2 && s[0].target_kw == 600;  // evt-2 first now, evt-1 kept after it.
  }));
  const auto set = LastSet();
  EXPECT_EQ(set[1].id, "evt-1/0");
  EXPECT_DOUBLE_EQ(set[1].target_kw, 5000);
  EXPECT_GE(ven_->stats().bad_events, 1u);
  EXPECT_EQ(ven_->stats().malformed, 0u);
}

TEST_F(VenTest, PostsUsageReportsOfMeasuredPower) {
  vtn_.SetEvents(Json::array({Event("evt-1", "west-tx-wind", 5000, NowS() - 5),
                              Event("future", "granbury-tx", 100, NowS() + 7200)})
                     .dump());
  StartVen(Options(), [](const std::string& site) -> std::optional<double> {
    if (site == "west-tx-wind") return 4321.5;
    return 99.0;
  });
  // The VTN holds a report as soon as it arrives; the VEN counts it only once the answer is back,
  // so wait for both (waiting for the VTN alone raced under load).
  ASSERT_TRUE(WaitFor(
      [&] { return vtn_.reports().size() >= 2 && ven_->stats().reports_posted >= 2; }));
  for (const std::string& body : vtn_.reports()) {
    const Json r = Json::parse(body);
    EXPECT_EQ(r["programID"], "prog-1");
    EXPECT_EQ(r["eventID"], "evt-1");  // only events under way are reported on.
    EXPECT_EQ(r["clientName"], "powerplane-test");
    ASSERT_EQ(r["resources"].size(), 1u);
    const Json& res = r["resources"][0];
    EXPECT_EQ(res["resourceName"], "west-tx-wind");
    EXPECT_TRUE(res["intervalPeriod"]["start"].is_string());
    EXPECT_EQ(res["intervals"][0]["id"], 0);
    EXPECT_EQ(res["intervals"][0]["payloads"][0]["type"], "USAGE");
    EXPECT_DOUBLE_EQ(res["intervals"][0]["payloads"][0]["values"][0].get<double>(), 4321.5);
  }
  EXPECT_GE(ven_->stats().reports_posted, 2u);
  EXPECT_EQ(ven_->stats().reports_failed, 0u);
}

TEST_F(VenTest, WebhookNotificationTriggersAPromptPoll) {
  hook_ = std::make_unique<net::HttpServer>(
      pool_.Executors(), net::tcp::endpoint(net::asio::ip::make_address("127.0.0.1"), 0),
      [this](net::ServerRequest& req, net::Responder& res) {
        return ven_->HandleNotification(req, res);
      });
  hook_->Start();
  const std::int64_t start = NowS();
  vtn_.SetEvents(Json::array({Event("evt-1", "a", 5000, start)}).dump());
  VenOptions o = Options();
  o.poll_interval = 10s;  // only a notification can bring the change in time.
  o.callback_url = "http://127.0.0.1:" + std::to_string(hook_->port()) + "/openadr/notify";
  o.callback_token = "hook-secret";
  StartVen(o);
  ASSERT_TRUE(WaitForTarget(5000));
  ASSERT_TRUE(WaitFor([&] { return ven_->stats().subscribed; }));
  ASSERT_EQ(vtn_.subscriptions().size(), 1u);
  const Json sub = Json::parse(vtn_.subscriptions()[0]);
  EXPECT_EQ(sub["clientName"], "powerplane-test");
  const Json& op = sub["objectOperations"][0];
  EXPECT_EQ(op["objects"], Json::array({"EVENT"}));
  EXPECT_EQ(op["operations"], Json::array({"CREATE", "UPDATE", "DELETE"}));
  EXPECT_EQ(op["callbackUrl"], o.callback_url);
  EXPECT_EQ(op["bearerToken"], "hook-secret");

  const Json changed = Event("evt-1", "a", 2500, start);
  vtn_.SetEvents(Json::array({changed}).dump());
  const auto sent = std::chrono::steady_clock::now();
  EXPECT_EQ(vtn_.Notify("EVENT", "UPDATE", changed.dump()), 1);
  ASSERT_TRUE(WaitForTarget(2500, 2000ms));
  EXPECT_LT(std::chrono::steady_clock::now() - sent, 1s);
  EXPECT_EQ(ven_->stats().notifications, 1u);
}

TEST_F(VenTest, NotificationHandlerRejectsBadCalls) {
  VenOptions o = Options();
  o.poll_interval = 10s;
  o.callback_url = "http://127.0.0.1:1/unused";
  o.callback_token = "hook-secret";
  StartVen(o);
  hook_ = std::make_unique<net::HttpServer>(
      pool_.Executors(), net::tcp::endpoint(net::asio::ip::make_address("127.0.0.1"), 0),
      ven_->NotificationHandler());
  hook_->Start();
  auto call = [&](net::http::verb verb, std::string token, std::string body) {
    net::Request req{verb, "/openadr/notify", 11};
    if (!token.empty()) req.set(net::http::field::authorization, "Bearer " + token);
    req.body() = std::move(body);
    auto res = net::asio::co_spawn(pool_.context(0),
                                   net::Fetch("127.0.0.1", hook_->port(), std::move(req), 2000ms),
                                   net::asio::use_future)
                   .get();
    return res ? res->result_int() : -1;
  };
  const std::string good = R"({"objectType":"EVENT","operation":"CREATE","object":{}})";
  EXPECT_EQ(call(net::http::verb::post, "", good), 401);
  EXPECT_EQ(call(net::http::verb::post, "nope", good), 401);
  EXPECT_EQ(call(net::http::verb::get, "hook-secret", ""), 405);
  EXPECT_EQ(call(net::http::verb::post, "hook-secret", "{not json"), 400);
  EXPECT_EQ(call(net::http::verb::post, "hook-secret", R"({"objectType":"EVENT"})"), 400);
  EXPECT_EQ(call(net::http::verb::post, "hook-secret",
                 R"({"objectType":1,"operation":"CREATE","object":{}})"),
            400);
  EXPECT_EQ(ven_->stats().notifications, 0u);
  EXPECT_EQ(call(net::http::verb::post, "hook-secret", good), 200);
  EXPECT_EQ(ven_->stats().notifications, 1u);
}

TEST_F(VenTest, StopEndsThePollingCoroutinePromptly) {
  VenOptions o = Options();
  o.poll_interval = 10s;
  StartVen(o);
  ASSERT_TRUE(WaitFor([&] { return ven_->stats().polls_ok >= 1; }));
  ASSERT_TRUE(ven_->running());
  const auto stop = std::chrono::steady_clock::now();
  ven_->Stop();
  ASSERT_TRUE(WaitFor([&] { return !ven_->running(); }, 1000ms));
  EXPECT_LT(std::chrono::steady_clock::now() - stop, 500ms);
}

TEST_F(VenTest, StopDuringASlowRequestEndsWithinTheRequestTimeout) {
  vtn_.SetMode(VtnMode::kSlow);
  VenOptions o = Options();
  o.request_timeout = 200ms;
  StartVen(o);
  std::this_thread::sleep_for(50ms);  // the token request is in flight.
  ven_->Stop();
  ASSERT_TRUE(WaitFor([&] { return !ven_->running(); }, 1000ms));
  EXPECT_EQ(SetsSeen(), 0u);
}

}  // namespace
}  // namespace powerplane::openadr
