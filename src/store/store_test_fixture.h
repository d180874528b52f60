#pragma once
// The fixture and helpers the store's test files share (store_test.cc, ledger_test.cc). Each is
// built twice: against SQLite (store_test) and, with PP_STORE_TEST_POSTGRES, against one
// throwaway PostgreSQL server that the whole binary shares (store_postgres_test).

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "store/store.h"
#ifdef PP_STORE_TEST_POSTGRES
#include <pqxx/pqxx>

#include "testing/postgres_server.h"
#endif

namespace powerplane::store::store_testing {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

constexpr std::int64_t kDay = 24 * 3600 * 1000;
constexpr std::int64_t kT0 = 1'750'000'000'000;  // 2025-06-15T15:06:40Z.

inline fs::path NewTempDir() {
  std::string templ = (fs::temp_directory_path() / "pp-store-test-XXXXXX").string();
  if (mkdtemp(templ.data()) == nullptr) return {};
  return templ;
}

// A fresh temporary directory, removed with everything in it when the test ends.
class TempDir {
 public:
  TempDir() : path_(NewTempDir()) {}
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

#ifdef PP_STORE_TEST_POSTGRES
// One server for the whole binary (an inline function: one instance across its files).
inline testing::PostgresServer& SharedServer() {
  static auto server = [] {
    auto started = testing::PostgresServer::Start();
    if (!started) {
      ADD_FAILURE() << started.error();
      std::abort();
    }
    return std::move(*started);
  }();
  return *server;
}
#endif

// prefix + i, appended (g++ 12 warns falsely, -Wrestrict, on "literal" + std::to_string(i)).
inline std::string Id(std::string_view prefix, int i) {
  std::string id(prefix);
  id += std::to_string(i);
  return id;
}

inline TenantRecord Tenant(std::string id) {
  return TenantRecord{.id = std::move(id),
                      .jurisdictions = {"US-TX", "DE"},
                      .priority_class = "interactive",
                      .latency_target_ms = 800,
                      .rpm = 600,
                      .tpm = 100000,
                      .budget_usd = 12.5,
                      .budget_period = "day"};
}

inline LedgerRow Row(std::string id, std::string tenant, std::string site, std::string model,
                     std::int64_t end_ms, double charged) {
  return LedgerRow{.request_id = std::move(id),
                   .tenant = std::move(tenant),
                   .key_id = "key_000000000001",
                   .model = std::move(model),
                   .site = std::move(site),
                   .endpoint = "ep-1",
                   .priority_class = "standard",
                   .prompt_tokens = 100,
                   .completion_tokens = 20,
                   .start_unix_ms = end_ms - 1500,
                   .end_unix_ms = end_ms,
                   .ttft_ms = 123.25,
                   .joules = 0.1 + 0.2,  // not exactly representable: must round-trip anyway.
                   .usd_per_mwh = 41.7,
                   .energy_cost_usd = 3.4e-6,
                   .charged_usd = charged,
                   .outcome = "ok"};
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = NewTempDir();
    ASSERT_FALSE(dir_.empty());
#ifdef PP_STORE_TEST_POSTGRES
    static int databases = 0;
    auto url = SharedServer().CreateDatabase("t" + std::to_string(++databases));
    ASSERT_TRUE(url) << url.error();
    url_ = *url;
#endif
    store_ = Open();
    ASSERT_NE(store_, nullptr);
  }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::unique_ptr<Store> Open() {
    auto store = Store::Open(url_, dir_);
    EXPECT_TRUE(store) << store.error();
    return store ? std::move(*store) : nullptr;
  }
  // Runs `sql` on the store's database outside the Store (as an older version would have).
  void RawSql(const std::string& sql) {
#ifdef PP_STORE_TEST_POSTGRES
    pqxx::connection c(url_);
    pqxx::nontransaction tx(c);
    tx.exec(sql);
#else
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open((dir_ / "powerplane.db").c_str(), &db), SQLITE_OK);
    char* error = nullptr;
    EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error), SQLITE_OK)
        << (error ? error : "");
    sqlite3_free(error);
    sqlite3_close(db);
#endif
  }
  std::int64_t Version() {
    auto v = store_->Version();
    EXPECT_TRUE(v) << v.error();
    return v.value_or(-1);
  }

  fs::path dir_;
  std::string url_;  // "" = SQLite in dir_.
  std::unique_ptr<Store> store_;
};

}  // namespace powerplane::store::store_testing
