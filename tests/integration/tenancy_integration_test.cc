// Tenancy over real sockets and a real store: two gateways (each with its own emulated engines)
// share one store, SQLite (a file both open) or PostgreSQL (a server the test starts). Keys made
// or revoked at one reach the other within a second; limits, budgets and the ledger agree.

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <sstream>
#include <thread>

#include "gateway/tenancy.h"
#include "runtime/runtime.h"
#include "store/store.h"
#include "test_client.h"
#include "testing/postgres_server.h"

namespace powerplane {
namespace {
using json = nlohmann::json;
using testing::TestClient;
namespace http = net::http;

constexpr const char* kFleet = R"(
[gateway]
admin_key = "admin"
default_output_tokens = 32

[[sites]]
id = "tx"
jurisdiction = "US"
price = 50.0
  [[sites.endpoints]]
  count = 2
  gpu = "h200"
  model = "llama-3.1-8b"
  max_batch = 64
)";

// A fresh directory under the system's temporary folder ("" when it cannot be made).
std::filesystem::path TempDir(const std::string& prefix) {
  std::string templ = (std::filesystem::temp_directory_path() / (prefix + "XXXXXX")).string();
  if (::mkdtemp(templ.data()) == nullptr) return {};
  return templ;
}

// A gateway on an OS-chosen loopback port, one I/O thread, its emulated engines 20x real time;
// its store in `state_dir` (none when empty, unless a store URL is set).
runtime::UpOptions GatewayOptions(const std::filesystem::path& state_dir) {
  runtime::UpOptions o;
  o.listen = "127.0.0.1:0";
  o.data_dir = PP_SOURCE_DIR "/data";
  o.engine_speed = 20.0;
  o.threads = 1;
  o.state_dir = state_dir;
  return o;
}

// SQLite's write lock on `file`, taken from outside the gateway (BEGIN EXCLUSIVE) and held until
// Release() or destruction.
class SqliteWriteLock {
 public:
  explicit SqliteWriteLock(const std::string& file) {
    if (sqlite3_open(file.c_str(), &db_) != SQLITE_OK) return;
    sqlite3_busy_timeout(db_, 5000);
    held_ = sqlite3_exec(db_, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) == SQLITE_OK;
  }
  ~SqliteWriteLock() { Release(); }
  SqliteWriteLock(const SqliteWriteLock&) = delete;
  SqliteWriteLock& operator=(const SqliteWriteLock&) = delete;
  bool held() const { return held_; }
  void Release() {
    if (held_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    held_ = false;
    sqlite3_close(db_);
    db_ = nullptr;
  }

 private:
  sqlite3* db_ = nullptr;
  bool held_ = false;
};

std::string ChatBody(int max_tokens, bool stream) {
  json b = {{"model", "llama-3.1-8b"},
            {"max_tokens", max_tokens},
            {"messages", {{{"role", "user"}, {"content", "How much is a kWh?"}}}}};
  if (stream) b["stream"] = true;
  return b.dump();
}

enum class Backend { kSqlite, kPostgres };

class TenancyIntegrationTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("pp-tenancy-" + std::to_string(::getpid()) + "-" +
            std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    std::filesystem::create_directories(dir_);
    if (GetParam() == Backend::kPostgres) {
      auto pg = testing::PostgresServer::Start();
      ASSERT_TRUE(pg) << pg.error();
      postgres_ = std::move(*pg);
      auto db = postgres_->CreateDatabase("tenancy");
      ASSERT_TRUE(db) << db.error();
      url_ = *db;
    }
    ASSERT_NO_FATAL_FAILURE(StartGateways({}));
  }
  // (Re)starts both gateways on the store; they take requests and tokens per minute from one
  // table in `limits_file` when it is set (as processes sharing a port with --reuse-port do),
  // else each from its own buckets.
  void StartGateways(const std::filesystem::path& limits_file) {
    for (auto& c : clients_) c.reset();
    for (auto& g : gateways_) g.reset();
    auto config = fleet::ParseFleetConfig(kFleet, "test fleet");
    ASSERT_TRUE(config) << config.error();
    for (int i = 0; i < 2; ++i) {
      runtime::UpOptions o = GatewayOptions(dir_);
      o.store_url = url_;
      o.limits_file = limits_file;
      auto rt = runtime::Runtime::Start(*config, o);
      ASSERT_TRUE(rt) << rt.error();
      gateways_[i] = std::move(*rt);
      clients_[i] = std::make_unique<TestClient>("127.0.0.1", gateways_[i]->port());
    }
  }
  void TearDown() override {
    for (auto& c : clients_) c.reset();
    for (auto& g : gateways_) g.reset();
    postgres_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  testing::StreamResult Admin(int gw, http::verb verb, std::string target, std::string body = {}) {
    return clients_[gw]->Call(verb, std::move(target), std::move(body), "admin");
  }
  void PutTenant(const json& tenant) {
    auto r = Admin(0, http::verb::post, "/admin/tenants", tenant.dump());
    ASSERT_EQ(r.status, 200) << r.body;
  }
  std::pair<std::string, std::string> NewKey(const std::string& tenant) {
    auto r = Admin(0, http::verb::post, "/admin/keys", json{{"tenant", tenant}}.dump());
    EXPECT_EQ(r.status, 200) << r.body;
    auto j = json::parse(r.body);
    return {j["id"], j["key"]};
  }
  // Polls `call` until it answers `status`, for at most `limit`; returns the time it took.
  template <typename Call>
  double SecondsUntilStatus(Call call, int status, std::chrono::milliseconds limit) {
    const auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < limit) {
      if (call().status == status) {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }
  // Polls gateway `gw`'s /metrics until it counts `peers` other gateways' use of tenants'
  // limits (it has read their rows at least once), for at most `limit`. False when it never did.
  bool WaitForRateLimitPeers(int gw, int peers, std::chrono::milliseconds limit) {
    const std::string want = "powerplane_rate_limit_peers " + std::to_string(peers);
    const auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < limit) {
      if (clients_[gw]->Call(http::verb::get, "/metrics", {}, "").body.find(want + "\n") !=
          std::string::npos) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  std::vector<json> LedgerRows(int gw, const std::string& tenant) {
    auto r = Admin(gw, http::verb::get, "/admin/ledger?tenant=" + tenant);
    EXPECT_EQ(r.status, 200) << r.body;
    std::vector<json> rows;
    std::size_t start = 0;
    while (start < r.body.size()) {
      const auto nl = r.body.find('\n', start);
      rows.push_back(json::parse(r.body.substr(start, nl - start)));
      if (nl == std::string::npos) break;
      start = nl + 1;
    }
    return rows;
  }

  std::filesystem::path dir_;
  std::string url_;  // the PostgreSQL store's; empty: SQLite in dir_.
  std::unique_ptr<testing::PostgresServer> postgres_;
  std::unique_ptr<runtime::Runtime> gateways_[2];
  std::unique_ptr<TestClient> clients_[2];
};

TEST_P(TenancyIntegrationTest, AKeyMadeAtOneGatewayWorksAtTheOtherAndItsRevocationReachesItFast) {
  PutTenant({{"id", "acme"}, {"class", "interactive"}, {"latency_target_ms", 2000}});
  // At once, before the other gateway's poll (every 250 ms) has seen it: a key it does not know
  // is looked for in the store before it is refused.
  auto [id, key] = NewKey("acme");
  auto models = [&, key = key] { return clients_[1]->Call(http::verb::get, "/v1/models", {}, key); };
  EXPECT_EQ(models().status, 200);
  auto [id2, key2] = NewKey("acme");
  auto ok = clients_[1]->Chat(key2, ChatBody(8, true));
  ASSERT_EQ(ok.status, 200) << ok.body;
  const auto unknown = clients_[1]->Chat("pp-no-such-key", ChatBody(8, true));
  EXPECT_EQ(unknown.status, 401);
  EXPECT_EQ(json::parse(unknown.body)["error"]["code"], "invalid_api_key") << unknown.body;

  auto revoke = Admin(0, http::verb::delete_, "/admin/keys/" + id);
  ASSERT_EQ(revoke.status, 200) << revoke.body;
  // At the gateway that revoked it: at once. At the other: within a second.
  EXPECT_EQ(clients_[0]->Chat(key, ChatBody(8, false)).status, 401);
  const double gone = SecondsUntilStatus(models, 401, std::chrono::seconds(3));
  ASSERT_GE(gone, 0) << "the revocation never reached the second gateway";
  EXPECT_LT(gone, 1.0);
  // The audit log has the admin actions.
  auto audit = Admin(1, http::verb::get, "/admin/audit");
  EXPECT_NE(audit.body.find("key.revoke"), std::string::npos) << audit.body;
}

// An operator sees the gateways of the store by their budget leases (GET /admin/gateways), and
// can retire one that will not run again so that what it held goes back to the others; a
// gateway heard from lately is retired only when forced, and then simply asks again.
TEST_P(TenancyIntegrationTest, TheGatewaysOfTheStoreAreListedAndOneCanBeRetired) {
  PutTenant({{"id", "budgeted"}, {"budget_usd", 1.0}, {"budget_period", "day"}});
  auto [id, key] = NewKey("budgeted");
  for (int gw = 0; gw < 2; ++gw) ASSERT_EQ(clients_[gw]->Chat(key, ChatBody(8, false)).status, 200);
  auto list = Admin(0, http::verb::get, "/admin/gateways");
  ASSERT_EQ(list.status, 200) << list.body;
  const json j = json::parse(list.body);
  ASSERT_EQ(j["data"].size(), 2u) << list.body;
  std::string self = j["self"], other;
  int selves = 0;
  for (const auto& g : j["data"]) {
    if (g["self"].get<bool>()) {
      ++selves;
      EXPECT_EQ(g["member"], self);
    } else {
      other = g["member"];
    }
    EXPECT_LT(g["heard_s_ago"].get<double>(), 5.0) << list.body;
    ASSERT_EQ(g["leases"].size(), 1u) << list.body;
    EXPECT_EQ(g["leases"][0]["tenant"], "budgeted");
    EXPECT_GT(g["leases"][0]["granted_usd"].get<double>(), 0) << list.body;
  }
  EXPECT_EQ(selves, 1);

  auto code = [](const testing::StreamResult& r) { return json::parse(r.body)["error"]["code"]; };
  auto r = Admin(0, http::verb::delete_, "/admin/gateways/" + self);
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(code(r), "gateway_is_self") << r.body;
  r = Admin(0, http::verb::delete_, "/admin/gateways/" + other);
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(code(r), "gateway_alive") << r.body;
  r = Admin(0, http::verb::delete_, "/admin/gateways/jnosuchgateway");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(code(r), "gateway_not_found") << r.body;
  r = Admin(0, http::verb::delete_, "/admin/gateways/" + other + "?force=maybe");
  EXPECT_EQ(r.status, 400) << r.body;
  r = Admin(0, http::verb::delete_, "/admin/gateways/" + other + "?force=true");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body)["retired_leases"], 1);
  list = Admin(0, http::verb::get, "/admin/gateways");
  EXPECT_EQ(json::parse(list.body)["data"].size(), 1u) << list.body;
  // The retired gateway, still running, asks again.
  EXPECT_EQ(clients_[1]->Chat(key, ChatBody(8, false)).status, 200);
  auto audit = Admin(0, http::verb::get, "/admin/audit");
  EXPECT_NE(audit.body.find("gateway.retire"), std::string::npos) << audit.body;
}

// Every admin change is in the audit log, not only the tenancy ones: price overrides, the
// hashprice and grid events too.
TEST_P(TenancyIntegrationTest, GridAndPriceAdminChangesAreAudited) {
  ASSERT_EQ(Admin(0, http::verb::post, "/admin/sites/tx/price", R"({"usd_per_mwh": 42.5})").status,
            200);
  ASSERT_EQ(Admin(0, http::verb::delete_, "/admin/sites/tx/price").status, 200);
  ASSERT_EQ(Admin(0, http::verb::post, "/admin/hashprice", R"({"usd_per_ph_day": 51})").status,
            200);
  auto event = Admin(0, http::verb::post, "/admin/grid-events",
                     R"({"id": "shed-1", "site": "tx", "target_kw": 5, "duration_s": 60})");
  ASSERT_EQ(event.status, 201) << event.body;
  ASSERT_EQ(Admin(0, http::verb::delete_, "/admin/grid-events/shed-1").status, 200);
  const std::vector<std::string> wanted = {"site.price.set", "site.price.clear", "hashprice.set",
                                           "grid_event.add", "grid_event.delete"};
  // The audit rows are written off the request's thread: within a few seconds.
  std::string body;
  for (int i = 0; i < 50; ++i) {
    body = Admin(1, http::verb::get, "/admin/audit").body;
    if (std::all_of(wanted.begin(), wanted.end(),
                    [&](const std::string& w) { return body.find(w) != std::string::npos; })) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  for (const auto& w : wanted) EXPECT_NE(body.find(w), std::string::npos) << w << ": " << body;
  EXPECT_NE(body.find("42.5"), std::string::npos) << body;
  EXPECT_NE(body.find("shed-1"), std::string::npos) << body;
  // Each row names the gateway it was made at (gateway 0 here, read back at gateway 1), and
  // its detail is a JSON object.
  const json first = json::parse(body.substr(0, body.find('\n')));
  EXPECT_TRUE(first["actor"].get<std::string>().starts_with("admin@j")) << first.dump();
  std::istringstream lines(body);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    EXPECT_TRUE(json::parse(json::parse(line)["detail"].get<std::string>(), nullptr, false)
                    .is_object())
        << line;
  }
  // The same as CSV.
  const auto csv = Admin(1, http::verb::get, "/admin/audit?format=csv");
  EXPECT_EQ(csv.Header("content-type"), "text/csv");
  EXPECT_TRUE(csv.body.starts_with("time,actor,action,detail\n")) << csv.body;
  EXPECT_NE(csv.body.find("grid_event.delete"), std::string::npos) << csv.body;
}

TEST_P(TenancyIntegrationTest, RequestsPerMinuteAreLimitedWithRetryAfter) {
  PutTenant({{"id", "small"}, {"rpm", 2}});
  auto [id, key] = NewKey("small");
  EXPECT_EQ(clients_[0]->Chat(key, ChatBody(4, false)).status, 200);
  EXPECT_EQ(clients_[0]->Chat(key, ChatBody(4, false)).status, 200);
  // Another tenant's change reloads the directory; it must not refill this tenant's bucket.
  PutTenant({{"id", "bystander"}});
  NewKey("bystander");
  auto refused = clients_[0]->Chat(key, ChatBody(4, false));
  EXPECT_EQ(refused.status, 429) << refused.body;
  EXPECT_FALSE(refused.Header("retry-after").empty());
  EXPECT_EQ(json::parse(refused.body)["error"]["code"], "requests_per_minute");
}

// Gateways that share a limits file (as --reuse-port processes do) hold a tenant to its limit
// together: what one admitted, the other cannot admit again.
TEST_P(TenancyIntegrationTest, GatewaysSharingALimitsFileHoldATenantToOneLimit) {
  ASSERT_NO_FATAL_FAILURE(StartGateways(dir_ / "rate-limits"));
  PutTenant({{"id", "shared"}, {"rpm", 3}});
  auto [id, key] = NewKey("shared");
  auto models = [&, key = key] { return clients_[1]->Call(http::verb::get, "/v1/models", {}, key); };
  ASSERT_GE(SecondsUntilStatus(models, 200, std::chrono::seconds(3)), 0);
  EXPECT_EQ(clients_[0]->Chat(key, ChatBody(4, false)).status, 200);
  EXPECT_EQ(clients_[1]->Chat(key, ChatBody(4, false)).status, 200);
  EXPECT_EQ(clients_[0]->Chat(key, ChatBody(4, false)).status, 200);
  for (int gw : {1, 0}) {
    auto refused = clients_[gw]->Chat(key, ChatBody(4, false));
    EXPECT_EQ(refused.status, 429) << "gateway " << gw << ": " << refused.body;
  }
}

// Gateways that share a store but no rate-limit table (as on two hosts) still hold a tenant to
// one limit: each publishes what it took and charges its own buckets with what the others took,
// once a second.
TEST_P(TenancyIntegrationTest, GatewaysSharingAStoreHoldATenantToOneLimitWithinSeconds) {
  PutTenant({{"id", "fleetwide"}, {"rpm", 4}});
  auto [id, key] = NewKey("fleetwide");
  auto models = [&, key = key] { return clients_[1]->Call(http::verb::get, "/v1/models", {}, key); };
  ASSERT_GE(SecondsUntilStatus(models, 200, std::chrono::seconds(3)), 0);
  // Gateway 1 must know gateway 0 before gateway 0 serves the tenant: what a gateway had taken
  // before another first saw it is that one's starting point, not a charge (core/fleet_usage.h).
  ASSERT_TRUE(WaitForRateLimitPeers(1, 1, std::chrono::seconds(10)));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(clients_[0]->Chat(key, ChatBody(4, false)).status, 200);
  // Gateway 0 publishes within a second, gateway 1 reads within the next.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  EXPECT_EQ(clients_[1]->Chat(key, ChatBody(4, false)).status, 200);
  auto refused = clients_[1]->Chat(key, ChatBody(4, false));
  EXPECT_EQ(refused.status, 429) << "gateway 1 did not count gateway 0's requests: " << refused.body;
}

TEST_P(TenancyIntegrationTest, TokensPerMinuteCountTheWorstCaseThenSettle) {
  PutTenant({{"id", "tokens"}, {"tpm", 300}});
  auto [id, key] = NewKey("tokens");
  // max_tokens beyond the whole bucket can never fit: no Retry-After, and the header the
  // OpenAI SDKs obey says not to retry.
  auto too_big = clients_[0]->Chat(key, ChatBody(400, false));
  EXPECT_EQ(too_big.status, 429) << too_big.body;
  EXPECT_EQ(json::parse(too_big.body)["error"]["code"], "request_too_large");
  EXPECT_EQ(too_big.Header("retry-after"), "");
  EXPECT_EQ(too_big.Header("x-should-retry"), "false");
  // A request's unused reservation is given back: many small ones fit.
  int ok = 0;
  for (int i = 0; i < 6; ++i) ok += clients_[0]->Chat(key, ChatBody(20, false)).status == 200;
  EXPECT_EQ(ok, 6);
  // One that fits the bucket but not what the six left of it waits, and is told how long.
  auto again = clients_[0]->Chat(key, ChatBody(200, false));
  EXPECT_EQ(again.status, 429) << again.body;
  EXPECT_EQ(json::parse(again.body)["error"]["code"], "tokens_per_minute");
  EXPECT_NE(again.Header("retry-after"), "");
}

TEST_P(TenancyIntegrationTest, ABudgetStopsSpendAndTheLedgerAgreesWithIt) {
  // Worst case of one request (prompt + 32 tokens at this site) is a few 1e-5 USD: the budget
  // allows a handful.
  const double budget = 2e-4;
  PutTenant({{"id", "budgeted"}, {"budget_usd", budget}, {"budget_period", "day"}});
  auto [id, key] = NewKey("budgeted");
  int ok = 0, refused = 0;
  for (int i = 0; i < 60 && refused == 0; ++i) {
    auto r = clients_[0]->Chat(key, ChatBody(32, i % 2 == 0));
    if (r.status == 200) ++ok;
    if (r.status == 429) {
      ++refused;
      EXPECT_EQ(json::parse(r.body)["error"]["type"], "insufficient_quota") << r.body;
      EXPECT_EQ(r.Header("x-should-retry"), "false");  // the SDKs would retry a 429 in vain.
    }
  }
  EXPECT_GT(ok, 1);
  EXPECT_EQ(refused, 1) << "the budget never stopped spending";
  // One request at a time: nothing was in flight beyond its reservation, so spend stays within.
  double ledger_sum = 0;
  auto rows = LedgerRows(0, "budgeted");
  for (const auto& row : rows) ledger_sum += row["charged_usd"].get<double>();
  EXPECT_EQ(static_cast<int>(rows.size()), ok);
  EXPECT_LE(ledger_sum, budget);
  auto usage = Admin(0, http::verb::get, "/admin/usage?tenant=budgeted&group_by=tenant");
  auto u = json::parse(usage.body)["data"];
  ASSERT_EQ(u.size(), 1u) << usage.body;
  EXPECT_NEAR(u[0]["charged_usd"].get<double>(), ledger_sum, 1e-12);
  // The other gateway has not served the tenant: its first request asks the store for a lease on
  // the budget, and the store has none left to give (this gateway's requests are settled in it).
  auto models = [&, key = key] { return clients_[1]->Call(http::verb::get, "/v1/models", {}, key); };
  ASSERT_GE(SecondsUntilStatus(models, 200, std::chrono::seconds(3)), 0);
  auto refused_there = clients_[1]->Chat(key, ChatBody(32, false));
  EXPECT_EQ(refused_there.status, 429) << refused_there.body;
}

// Requests spread over both gateways at once, back to back: each gateway admits only within
// its lease on the budget, and the store never leases more than the budget, so the two together
// spend no more than it.
TEST_P(TenancyIntegrationTest, ABudgetHoldsAcrossGatewaysUnderABurst) {
  const double budget = 3e-4;  // a handful of requests' worst case.
  PutTenant({{"id", "burst"}, {"budget_usd", budget}, {"budget_period", "day"}});
  auto [id, key] = NewKey("burst");
  auto models = [&, key = key] { return clients_[1]->Call(http::verb::get, "/v1/models", {}, key); };
  ASSERT_GE(SecondsUntilStatus(models, 200, std::chrono::seconds(3)), 0);
  std::atomic<int> ok{0}, spent{0}, leased_elsewhere{0}, other{0};
  std::vector<std::thread> loops;
  for (int gw = 0; gw < 2; ++gw) {
    for (int loop = 0; loop < 2; ++loop) {
      loops.emplace_back([&, gw, key = key] {
        TestClient client("127.0.0.1", gateways_[gw]->port());
        // Back to back until the budget is spent; refused for a part another gateway holds,
        // retry shortly (as the SDKs do), until it is given back or spent.
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
        for (int i = 0; std::chrono::steady_clock::now() < deadline; ++i) {
          const auto r = client.Chat(key, ChatBody(32, i % 2 == 0));
          if (r.status == 200) {
            ++ok;
            continue;
          }
          const std::string code = r.status == 429 ? json::parse(r.body)["error"]["code"] : "";
          if (code == "insufficient_quota") {
            ++spent;
            return;
          }
          if (code == "budget_leased_elsewhere") {
            ++leased_elsewhere;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            continue;
          }
          ++other;
          ADD_FAILURE() << r.status << " " << r.body;
          return;
        }
      });
    }
  }
  for (auto& t : loops) t.join();
  EXPECT_GT(ok.load(), 2);
  EXPECT_EQ(spent.load(), 4) << "a client never met the spent budget";
  EXPECT_EQ(other.load(), 0);
  // The rows were journaled before the answers ended; the store has them once written.
  std::vector<json> rows;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  do {
    rows = LedgerRows(0, "burst");
  } while (static_cast<int>(rows.size()) < ok.load() &&
           std::chrono::steady_clock::now() < deadline);
  double ledger_sum = 0;
  for (const auto& row : rows) ledger_sum += row["charged_usd"].get<double>();
  EXPECT_EQ(static_cast<int>(rows.size()), ok.load());
  EXPECT_LE(ledger_sum, budget) << ok.load() << " requests served, " << leased_elsewhere.load()
                                << " refused while other gateways held the rest";
}

// A gateway asks the store for a lease on a budget off its I/O threads: while the store keeps it
// waiting (another session holds the daily totals locked), the gateway's one I/O thread serves
// other tenants, and the budgeted tenant's requests within the lease it holds.
TEST_P(TenancyIntegrationTest, ALeaseRequestWaitingOnTheStoreHoldsUpNoOtherRequest) {
  if (GetParam() != Backend::kPostgres) GTEST_SKIP() << "the lock is PostgreSQL's LOCK TABLE";
  PutTenant({{"id", "prepaid"}, {"budget_usd", 1.0}, {"budget_period", "month"}});
  PutTenant({{"id", "newcomer"}, {"budget_usd", 1.0}, {"budget_period", "month"}});
  PutTenant({{"id", "free"}});
  auto [id1, prepaid] = NewKey("prepaid");
  auto [id2, newcomer] = NewKey("newcomer");
  auto [id3, free] = NewKey("free");
  auto models = [&, key = free] { return clients_[1]->Call(http::verb::get, "/v1/models", {}, key); };
  ASSERT_GE(SecondsUntilStatus(models, 200, std::chrono::seconds(3)), 0);
  ASSERT_EQ(clients_[1]->Chat(prepaid, ChatBody(8, true)).status, 200);  // takes a lease.
  pqxx::connection holder(url_);
  pqxx::work locked(holder);
  locked.exec("LOCK TABLE spend_daily IN ACCESS EXCLUSIVE MODE");
  // Its first request needs a lease, which needs the daily totals: it waits.
  auto waiting = std::async(std::launch::async, [&, key = newcomer] {
    TestClient client("127.0.0.1", gateways_[1]->port());
    return client.Chat(key, ChatBody(8, false));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto others = std::async(std::launch::async, [&, free = free, prepaid = prepaid] {
    return std::pair(clients_[1]->Chat(free, ChatBody(8, true)),
                     clients_[1]->Chat(prepaid, ChatBody(8, false)));
  });
  const bool answered = others.wait_for(std::chrono::seconds(3)) == std::future_status::ready;
  const bool newcomer_waited = waiting.wait_for(std::chrono::milliseconds(0)) != std::future_status::ready;
  locked.abort();  // whatever happened, the waiting requests and the writers go on.
  EXPECT_TRUE(answered) << "a request waited for another tenant's lease";
  EXPECT_TRUE(newcomer_waited) << "the lease was granted without reading the daily totals";
  const auto [r_free, r_prepaid] = others.get();
  EXPECT_EQ(r_free.status, 200) << r_free.error << r_free.body;
  EXPECT_EQ(r_prepaid.status, 200) << r_prepaid.error << r_prepaid.body;
  const auto r_newcomer = waiting.get();
  EXPECT_EQ(r_newcomer.status, 200) << r_newcomer.error << r_newcomer.body;
}

TEST_P(TenancyIntegrationTest, AStreamThatBreaksEndsWithAnErrorAndTheLedgerSaysWhatWasDelivered) {
  PutTenant({{"id", "streamer"}});
  auto [id, key] = NewKey("streamer");
  // Long enough to be cut: 2,000 tokens at 20x take ~0.5 s.
  std::thread cutter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    gateways_[0]->StopEngine(0);
    gateways_[0]->StopEngine(1);
  });
  auto r = clients_[0]->Chat(key, ChatBody(2000, true));
  cutter.join();
  ASSERT_EQ(r.status, 200) << r.body;
  auto events = testing::SseData(r.body);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_NE(events[events.size() - 2].find("upstream_stream_broken"), std::string::npos);
  auto rows = LedgerRows(0, "streamer");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["outcome"], "stream_broken");
  EXPECT_EQ(rows[0]["request_id"], r.Header("x-request-id"));
  const auto delivered = rows[0]["completion_tokens"].get<std::int64_t>();
  EXPECT_GT(delivered, 0);
  EXPECT_LT(delivered, 2000);
}

// Admin calls do their store work off the I/O thread: while one waits for a write lock that
// another process holds, the same gateway (one I/O thread) still serves inference at once.
TEST_P(TenancyIntegrationTest, AnAdminCallWaitingOnTheStoreDoesNotHoldUpInference) {
  if (GetParam() != Backend::kSqlite) GTEST_SKIP() << "the lock is taken with SQLite's own API";
  PutTenant({{"id", "steady"}});
  auto [id, key] = NewKey("steady");
  SqliteWriteLock lock((dir_ / "powerplane.db").string());
  ASSERT_TRUE(lock.held());
  testing::StreamResult admin;
  std::thread admin_call(
      [&] { admin = Admin(0, http::verb::post, "/admin/tenants", json{{"id", "later"}}.dump()); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the admin call is waiting.
  TestClient other("127.0.0.1", gateways_[0]->port());
  const auto start = std::chrono::steady_clock::now();
  const auto served = other.Chat(key, ChatBody(8, true));
  const double took_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(admin.status, 0) << "the admin call should still be waiting for the lock";
  lock.Release();
  admin_call.join();
  EXPECT_EQ(served.status, 200) << served.error << served.body;
  EXPECT_LT(took_s, 2.0);
  EXPECT_EQ(admin.status, 200) << admin.body;
}

INSTANTIATE_TEST_SUITE_P(Backends, TenancyIntegrationTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         [](const auto& param_info) {
                           return param_info.param == Backend::kSqlite ? "Sqlite" : "Postgres";
                         });

}  // namespace
}  // namespace powerplane

namespace powerplane {
namespace {

// With --admin-listen the admin API is served only on its own listener.
TEST(AdminListenerTest, TheAdminApiIsServedOnlyOnItsOwnListener) {
  auto config = fleet::ParseFleetConfig(kFleet, "test fleet");
  ASSERT_TRUE(config) << config.error();
  runtime::UpOptions o = GatewayOptions({});
  o.admin_listen = "127.0.0.1:0";
  auto rt = runtime::Runtime::Start(*config, o);
  ASSERT_TRUE(rt) << rt.error();
  ASSERT_NE((*rt)->admin_port(), 0);
  TestClient api("127.0.0.1", (*rt)->port());
  TestClient admin("127.0.0.1", (*rt)->admin_port());
  EXPECT_EQ(api.Call(http::verb::get, "/admin/fleet", {}, "admin").status, 404);
  EXPECT_EQ(admin.Call(http::verb::get, "/admin/fleet", {}, "admin").status, 200);
  EXPECT_EQ(admin.Call(http::verb::get, "/admin/fleet", {}, "wrong").status, 401);
  EXPECT_EQ(admin.Call(http::verb::get, "/metrics").status, 200);
  EXPECT_EQ(api.Call(http::verb::get, "/metrics").status, 404);  // the fleet's figures: admin only.
  EXPECT_EQ(admin.Call(http::verb::post, "/v1/chat/completions", ChatBody(4, false), "x").status,
            404);
  EXPECT_EQ(api.Call(http::verb::get, "/healthz").status, 200);
}

// One gateway whose SQLite store lives in a fresh directory, and what its tests share: starting
// it with their options, a tenant's key, and the ledger as the database file holds it.
class OneGatewayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto config = fleet::ParseFleetConfig(kFleet, "test fleet");
    ASSERT_TRUE(config) << config.error();
    config_ = std::move(*config);
    dir_ = TempDir("pp-one-");
    ASSERT_FALSE(dir_.empty());
  }
  void TearDown() override {
    client_.reset();
    rt_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string file() const { return (dir_ / "powerplane.db").string(); }
  runtime::UpOptions Options() const { return GatewayOptions(dir_); }
  // Starts the gateway (stopping one already running); call under ASSERT_NO_FATAL_FAILURE.
  void Start(const runtime::UpOptions& o) {
    client_.reset();
    rt_.reset();
    auto rt = runtime::Runtime::Start(config_, o);
    ASSERT_TRUE(rt) << rt.error();
    rt_ = std::move(*rt);
    client_ = std::make_unique<TestClient>("127.0.0.1", rt_->port());
  }
  void Stop() {
    client_.reset();
    rt_.reset();
  }
  testing::StreamResult Admin(http::verb verb, std::string target, std::string body = {}) {
    return client_->Call(verb, std::move(target), std::move(body), "admin");
  }
  // A new tenant `id` and a key for it ("" on failure, which is reported).
  std::string NewTenantKey(const std::string& id) { return NewTenantKeyFor(json{{"id", id}}); }
  // The same for a tenant record with limits ({"id", "rpm", ...}).
  std::string NewTenantKeyFor(const json& tenant_record) {
    auto tenant = Admin(http::verb::post, "/admin/tenants", tenant_record.dump());
    EXPECT_EQ(tenant.status, 200) << tenant.body;
    auto created = Admin(http::verb::post, "/admin/keys",
                         json{{"tenant", tenant_record["id"]}}.dump());
    EXPECT_EQ(created.status, 200) << created.body;
    auto j = json::parse(created.body, nullptr, false);
    return j.is_object() && j.contains("key") ? j["key"].get<std::string>() : std::string();
  }
  // The outcomes of the ledger rows for `request_id` in the database file, read directly (no
  // flush): at most one, the request id being the key.
  std::vector<std::string> LedgerOutcomes(const std::string& request_id) const {
    std::vector<std::string> outcomes;
    sqlite3* db = nullptr;
    if (sqlite3_open(file().c_str(), &db) == SQLITE_OK) {
      sqlite3_busy_timeout(db, 5000);
      sqlite3_stmt* stmt = nullptr;
      if (sqlite3_prepare_v2(db, "SELECT outcome FROM ledger WHERE request_id = ?", -1, &stmt,
                             nullptr) == SQLITE_OK) {
        sqlite3_bind_text(stmt, 1, request_id.c_str(), -1, SQLITE_TRANSIENT);
        while (sqlite3_step(stmt) == SQLITE_ROW) {
          outcomes.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)));
        }
      }
      sqlite3_finalize(stmt);
    }
    sqlite3_close(db);
    return outcomes;
  }

  fleet::FleetConfig config_;
  std::filesystem::path dir_;
  std::unique_ptr<runtime::Runtime> rt_;
  std::unique_ptr<TestClient> client_;
};

using SyncLedgerTest = OneGatewayTest;
using AdminStoreBusyTest = OneGatewayTest;
using AdminQueryTest = OneGatewayTest;
using ReusePortTest = OneGatewayTest;

// With --reuse-port and no --limits-file, the per-minute buckets live in <data-dir>/rate-limits,
// where another process on the port (here, the test opening the file itself) takes from the
// same bucket the gateway took from.
TEST_F(ReusePortTest, ByDefaultTheRateLimitsAreInTheDataDirectory) {
  auto o = Options();
  o.reuse_port = true;
  ASSERT_NO_FATAL_FAILURE(Start(o));
  const std::string key = NewTenantKeyFor(json{{"id", "pooled"}, {"rpm", 3}});
  ASSERT_FALSE(key.empty());
  EXPECT_EQ(client_->Chat(key, ChatBody(4, false)).status, 200);
  EXPECT_EQ(client_->Chat(key, ChatBody(4, false)).status, 200);
  auto table = gateway::SharedBuckets::Open(dir_ / "rate-limits");
  ASSERT_TRUE(table) << table.error();
  const auto now_s = std::chrono::duration<double>(
                         std::chrono::steady_clock::now().time_since_epoch()).count();
  int taken = 0;
  for (int i = 0; i < 2; ++i) {
    (*table)->With({"pooled", 3, 0, 0}, [&](core::MinuteBucket& rpm, core::MinuteBucket&) {
      taken += rpm.TryTake(1, now_s) == 0;
    });
  }
  EXPECT_EQ(taken, 1);  // 3 a minute, 2 of them taken by the gateway.
  auto refused = client_->Chat(key, ChatBody(4, false));
  ASSERT_EQ(refused.status, 429) << refused.body;
  EXPECT_EQ(json::parse(refused.body)["error"]["code"], "requests_per_minute");
}

// With --sync-ledger a request's row is committed to the store (SQLite synchronous=FULL) before
// its last bytes, not only journaled: the database holds it when the client has the whole
// stream, with no flush, and the journal stays empty.
TEST_F(SyncLedgerTest, ARowIsInTheStoreWhenTheClientHasTheStream) {
  auto o = Options();
  o.sync_ledger = true;
  ASSERT_NO_FATAL_FAILURE(Start(o));
  const std::string key = NewTenantKey("synced");
  ASSERT_FALSE(key.empty());
  for (int i = 0; i < 3; ++i) {
    auto r = client_->Chat(key, ChatBody(8, true));
    ASSERT_EQ(r.status, 200) << r.body;
    const std::string id = r.Header("x-request-id");
    EXPECT_EQ(LedgerOutcomes(id), std::vector<std::string>{"ok"}) << "the row for " << id;
  }
  // Time bounds may come percent-escaped, in either case ("%3a" is ":", "%2B" is "+").
  auto listed = Admin(http::verb::get, "/admin/ledger?from=2020-01-01T00%3a00%3a00%2B00%3A00");
  EXPECT_EQ(listed.status, 200) << listed.body;
  EXPECT_EQ(std::count(listed.body.begin(), listed.body.end(), '\n'), 3) << listed.body;
  EXPECT_EQ(Admin(http::verb::get, "/admin/ledger?from=2020-01-01T00%3x").status, 400);
  std::uintmax_t journaled = 0;
  for (const auto& f : std::filesystem::recursive_directory_iterator(dir_ / "ledger-journal")) {
    if (f.is_regular_file() && f.path().extension() == ".tsv") journaled += f.file_size();
  }
  EXPECT_EQ(journaled, 0u);
}

// With --sync-ledger, a row whose commit fails (the store locked past the busy timeout through
// every retry) is journaled instead of lost: the client still gets its stream, and the row is
// in the store once the lock is gone, written by this gateway or replayed by the next start.
TEST_F(SyncLedgerTest, ARowWhoseCommitFailsIsJournaledNotLost) {
  auto o = Options();
  o.store_url = "sqlite:" + file() + "?busy_timeout_ms=50";
  o.sync_ledger = true;
  ASSERT_NO_FATAL_FAILURE(Start(o));
  const std::string key = NewTenantKey("t");
  ASSERT_FALSE(key.empty());
  SqliteWriteLock lock(file());
  ASSERT_TRUE(lock.held());
  auto r = client_->Chat(key, ChatBody(8, true));
  lock.Release();
  ASSERT_EQ(r.status, 200) << r.body;
  const auto events = testing::SseData(r.body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");
  const std::string id = r.Header("x-request-id");
  Stop();
  // The next start replays whatever the journal still holds; a row already written is not
  // written twice.
  o.store_url.clear();
  ASSERT_NO_FATAL_FAILURE(Start(o));
  EXPECT_EQ(LedgerOutcomes(id).size(), 1u) << id;
}

// An admin write that waits out the store's busy timeout is answered 503 with Retry-After and an
// OpenAI-shaped error, not 500; once the lock is gone the same call succeeds.
TEST_F(AdminStoreBusyTest, AWriteThatWaitsOutTheBusyTimeoutIsAnswered503) {
  auto o = Options();
  o.store_url = "sqlite:" + file() + "?busy_timeout_ms=100";
  ASSERT_NO_FATAL_FAILURE(Start(o));
  const std::string tenant = json{{"id", "late"}}.dump();
  SqliteWriteLock lock(file());
  ASSERT_TRUE(lock.held());
  auto busy = Admin(http::verb::post, "/admin/tenants", tenant);
  lock.Release();
  EXPECT_EQ(busy.status, 503) << busy.body;
  EXPECT_EQ(busy.Header("retry-after"), "1");
  auto error = json::parse(busy.body, nullptr, false);
  ASSERT_TRUE(error.is_object()) << busy.body;
  EXPECT_EQ(error["error"]["code"], "store_busy");
  EXPECT_EQ(error["error"]["type"], "server_error");
  auto done = Admin(http::verb::post, "/admin/tenants", tenant);
  EXPECT_EQ(done.status, 200) << done.body;
}

// The usage and ledger exports decode every query parameter as a form encodes it ("%XX", '+'
// a space); a malformed escape, or a format they do not have, is refused with 400, not answered
// as if it were absent.
TEST_F(AdminQueryTest, ParametersAreDecodedAndWhatCannotBeReadIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Start(Options()));
  const std::string key = NewTenantKey("b1");
  ASSERT_FALSE(key.empty());
  ASSERT_EQ(client_->Chat(key, ChatBody(4, false)).status, 200);
  auto usage = Admin(http::verb::get, "/admin/usage?tenant=b%31&group_by=%74enant");
  ASSERT_EQ(usage.status, 200) << usage.body;
  auto u = json::parse(usage.body);
  EXPECT_EQ(u["group_by"], "tenant");
  ASSERT_EQ(u["data"].size(), 1u) << usage.body;
  EXPECT_EQ(u["data"][0]["group"], "b1");
  auto csv = Admin(http::verb::get, "/admin/ledger?tenant=b%31&format=c%73v");
  ASSERT_EQ(csv.status, 200) << csv.body;
  EXPECT_EQ(csv.Header("content-type"), "text/csv");
  EXPECT_EQ(std::count(csv.body.begin(), csv.body.end(), '\n'), 2) << csv.body;
  EXPECT_NE(Admin(http::verb::get, "/admin/keys?tenant=b%31").body.find("b1"), std::string::npos);
  EXPECT_EQ(Admin(http::verb::get, "/admin/usage?format=json").status, 200);
  EXPECT_EQ(Admin(http::verb::get, "/admin/ledger?format=ndjson").status, 200);
  const std::pair<std::string, std::string> refused[] = {
      {"/admin/usage?tenant=b%zz", "tenant"},
      {"/admin/ledger?tenant=b%3", "tenant"},
      {"/admin/keys?tenant=%g1", "tenant"},
      {"/admin/usage?group_by=site%", "group_by"},
      {"/admin/usage?format=xml", "json or csv"},
      {"/admin/ledger?format=xml", "json, jsonl, ndjson or csv"},
      {"/admin/audit?format=xml", "json, jsonl, ndjson or csv"},
      {"/admin/usage?tennant=b1", "'tennant'"},
      {"/admin/ledger?tenant=b1&group_by=site", "'group_by'"},
      {"/admin/audit?tenant=b1", "'tenant'"},
      {"/admin/keys?tenant=b1&x=1", "'x'"},
      {"/admin/ledger?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z", "from is after to"}};
  for (const auto& [target, named] : refused) {
    auto r = Admin(http::verb::get, target);
    EXPECT_EQ(r.status, 400) << target << ": " << r.body;
    auto error = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(error.is_object()) << r.body;
    EXPECT_EQ(error["error"]["type"], "invalid_request_error") << r.body;
    EXPECT_EQ(error["error"]["code"], "invalid_query") << r.body;
    EXPECT_NE(error["error"]["message"].get<std::string>().find(named), std::string::npos)
        << r.body;
  }
}

// A tenant body with a field the API does not know (a misspelt limit) is refused by name, not
// stored without it.
TEST_F(AdminQueryTest, ATenantWithAnUnknownFieldIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Start(Options()));
  auto r = Admin(http::verb::post, "/admin/tenants", R"({"id":"zz","rpmm":5})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("rpmm"), std::string::npos) << r.body;
  // A key body likewise takes its one field and nothing else.
  ASSERT_EQ(Admin(http::verb::post, "/admin/tenants", R"({"id":"k1"})").status, 200);
  EXPECT_EQ(Admin(http::verb::post, "/admin/keys", R"({"tenant":"k1","expires":1})").status, 400);
  EXPECT_EQ(Admin(http::verb::post, "/admin/keys", R"({"tenant":"k1"})").status, 200);
  auto listed = Admin(http::verb::get, "/admin/tenants");
  ASSERT_EQ(listed.status, 200) << listed.body;
  EXPECT_EQ(listed.body.find("zz"), std::string::npos) << listed.body;
}

// A tenant body for a stored tenant changes only the fields it names (a body that named only
// the rpm used to drop the budget and jurisdictions), and the answer is the whole tenant.
TEST_F(AdminQueryTest, ATenantBodyChangesOnlyWhatItNames) {
  ASSERT_NO_FATAL_FAILURE(Start(Options()));
  ASSERT_EQ(Admin(http::verb::post, "/admin/tenants",
                  R"({"id":"p1","jurisdictions":["US"],"rpm":5,"budget_usd":3,"budget_period":"day"})")
                .status,
            200);
  auto changed = Admin(http::verb::post, "/admin/tenants", R"({"id":"p1","rpm":9})");
  ASSERT_EQ(changed.status, 200) << changed.body;
  const json t = json::parse(changed.body);
  EXPECT_EQ(t["rpm"], 9);
  EXPECT_EQ(t["jurisdictions"], json::array({"US"}));
  EXPECT_EQ(t["budget_usd"], 3.0);
  EXPECT_EQ(t["budget_period"], "day");
  const json listed = json::parse(Admin(http::verb::get, "/admin/tenants").body);
  bool found = false;
  for (const auto& one : listed["data"]) found = found || one == t;
  EXPECT_TRUE(found) << listed.dump();
}

// Jurisdictions are matched exactly: a tenant limited to one that no site of the fleet is in
// could never be served, so the admin API refuses it and names the fleet's.
TEST_F(AdminQueryTest, ATenantLimitedToAJurisdictionTheFleetLacksIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Start(Options()));
  auto r = Admin(http::verb::post, "/admin/tenants", R"({"id":"far","jurisdictions":["US","us"]})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("'us'"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("the fleet's: US"), std::string::npos) << r.body;
  EXPECT_EQ(Admin(http::verb::post, "/admin/tenants", R"({"id":"near","jurisdictions":["US"]})")
                .status,
            200);
}

// A 405 names the methods the path takes, in its Allow header (RFC 9110).
TEST_F(AdminQueryTest, AMethodATenancyPathDoesNotTakeIs405WithAllow) {
  ASSERT_NO_FATAL_FAILURE(Start(Options()));
  const std::pair<std::string, std::string> cases[] = {
      {"/admin/tenants", "GET, POST"}, {"/admin/keys", "GET, POST"}, {"/admin/keys/k1", "DELETE"},
      {"/admin/usage", "GET"},         {"/admin/ledger", "GET"},     {"/admin/audit", "GET"}};
  for (const auto& [target, allow] : cases) {
    auto r = Admin(http::verb::put, target, "{}");
    EXPECT_EQ(r.status, 405) << target << ": " << r.body;
    EXPECT_EQ(r.Header("allow"), allow) << target;
  }
}

}  // namespace
}  // namespace powerplane
