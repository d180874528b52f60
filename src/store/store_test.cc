// The Store cases (tenants, keys, the ledger and its sums, the audit log, shared rate usage, and
// each backend's own), run against SQLite (store_test) or, built with PP_STORE_TEST_POSTGRES,
// against a throwaway PostgreSQL server (store_postgres_test). The journal and LedgerWriter
// cases are in ledger_test.cc.

#include "store/store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "store/keys.h"
#include "store/ledger_writer.h"
#include "store/postgres_options.h"
#include "store/sql_connection.h"
#include "store/store_test_fixture.h"

namespace powerplane::store {
namespace {
using namespace store_testing;

TEST_F(StoreTest, TenantsRoundTripAndUpsert) {
  ASSERT_TRUE(store_->PutTenant(Tenant("b")));
  TenantRecord any = Tenant("a");
  any.jurisdictions.clear();
  any.budget_period = "none";
  any.budget_usd = 0;
  ASSERT_TRUE(store_->PutTenant(any));
  auto tenants = store_->Tenants();
  ASSERT_TRUE(tenants) << tenants.error();
  ASSERT_EQ(tenants->size(), 2u);
  EXPECT_EQ((*tenants)[0], any);
  EXPECT_EQ((*tenants)[1], Tenant("b"));

  TenantRecord changed = Tenant("b");
  changed.priority_class = "batch";
  changed.rpm = 0;
  ASSERT_TRUE(store_->PutTenant(changed));
  auto got = store_->GetTenant("b");
  ASSERT_TRUE(got && *got);
  EXPECT_EQ(**got, changed);
  auto missing = store_->GetTenant("nobody");
  ASSERT_TRUE(missing);
  EXPECT_FALSE(*missing);

  TenantRecord bad = Tenant("c");
  bad.priority_class = "urgent";
  EXPECT_FALSE(store_->PutTenant(bad));
  bad = Tenant("c");
  bad.jurisdictions = {"US,DE"};
  EXPECT_FALSE(store_->PutTenant(bad));
  bad = Tenant("c");
  bad.jurisdictions = {"US\n"};
  EXPECT_FALSE(store_->PutTenant(bad));
  bad = Tenant("c");
  bad.budget_usd = -0.0;
  EXPECT_FALSE(store_->PutTenant(bad));
  // Ids that would break a log line, a CSV cell or a URL are refused; ordinary ones are not.
  for (const char* id : {"a\nb", "=cmd|' /C calc'!A0", "+1", "-x", "@x", "a b", "a/b", "a,b"}) {
    EXPECT_FALSE(store_->PutTenant(Tenant(id))) << id;
  }
  for (const char* id : {"acme", "acme-prod_2", "team.ml:eu", "ops@acme", "9lives"}) {
    EXPECT_TRUE(store_->PutTenant(Tenant(id))) << id;
  }
}

TEST_F(StoreTest, CreatedKeyIsShownOnceAndStoredAsItsHash) {
  ASSERT_TRUE(store_->PutTenant(Tenant("acme")));
  auto created = store_->CreateKey("acme");
  ASSERT_TRUE(created) << created.error();
  const std::string& key = created->plaintext;
  ASSERT_EQ(key.size(), 43u);
  EXPECT_TRUE(key.starts_with("pp-"));
  EXPECT_EQ(
      key.find_first_not_of("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", 3),
      std::string::npos);
  EXPECT_TRUE(created->record.id.starts_with("key_"));
  EXPECT_EQ(created->record.id.size(), 16u);
  EXPECT_EQ(created->record.key_sha256, Sha256Hex(key));
  EXPECT_FALSE(created->record.revoked);

  auto keys = store_->Keys("acme");
  ASSERT_TRUE(keys) << keys.error();
  ASSERT_EQ(keys->size(), 1u);
  EXPECT_EQ((*keys)[0], created->record);
  auto other = store_->CreateKey("acme");
  ASSERT_TRUE(other);
  EXPECT_NE(other->plaintext, key);
  EXPECT_EQ(store_->Keys()->size(), 2u);
  EXPECT_FALSE(store_->CreateKey("nobody"));
}

TEST_F(StoreTest, RevocationBumpsVersionSeenByOtherConnections) {
  auto watcher = store_->Reopen();
  ASSERT_TRUE(watcher) << watcher.error();
  const std::int64_t v0 = Version();
  ASSERT_TRUE(store_->PutTenant(Tenant("acme")));
  const std::int64_t v1 = Version();
  EXPECT_NE(v1, v0);
  auto created = store_->CreateKey("acme");
  ASSERT_TRUE(created);
  const std::int64_t v2 = Version();
  EXPECT_NE(v2, v1);
  EXPECT_EQ((*watcher)->Version().value_or(-1), v2);

  auto revoked = store_->RevokeKey(created->record.id);
  ASSERT_TRUE(revoked && *revoked);
  const std::int64_t v3 = Version();
  EXPECT_NE(v3, v2);
  EXPECT_EQ((*watcher)->Version().value_or(-1), v3);
  auto keys = (*watcher)->Keys();
  ASSERT_TRUE(keys && keys->size() == 1);
  EXPECT_TRUE((*keys)[0].revoked);
  EXPECT_GT((*keys)[0].revoked_unix_ms, 0);

  auto again = store_->RevokeKey(created->record.id);
  ASSERT_TRUE(again);
  EXPECT_FALSE(*again);
  EXPECT_FALSE(*store_->RevokeKey("key_unknown"));
  EXPECT_EQ(Version(), v3);
}

TEST_F(StoreTest, AddKeyHashIsIdempotentAndRefusesClashes) {
  ASSERT_TRUE(store_->PutTenant(Tenant("demo")));
  ASSERT_TRUE(store_->PutTenant(Tenant("other")));
  const std::string hash = Sha256Hex("pp-demo-key");
  auto first = store_->AddKeyHash("demo", hash, "key_demo");
  ASSERT_TRUE(first) << first.error();
  const std::int64_t v = Version();
  auto second = store_->AddKeyHash("demo", hash, "key_demo");
  ASSERT_TRUE(second) << second.error();
  EXPECT_EQ(*second, *first);
  EXPECT_EQ(Version(), v);
  EXPECT_FALSE(store_->AddKeyHash("other", hash, "key_demo"));          // same id, other tenant.
  EXPECT_FALSE(store_->AddKeyHash("demo", hash, "key_demo2"));          // same hash, other id.
  EXPECT_FALSE(store_->AddKeyHash("demo", "ABC", "key_x"));             // not a hash.
  EXPECT_FALSE(store_->AddKeyHash("nobody", Sha256Hex("x"), "key_x"));  // unknown tenant.
}

TEST_F(StoreTest, SurvivesCloseAndReopen) {
  ASSERT_TRUE(store_->PutTenant(Tenant("acme")));
  auto created = store_->CreateKey("acme");
  ASSERT_TRUE(created);
  const std::vector<LedgerRow> rows = {Row("r1", "acme", "tx", "llama", kT0, 0.5)};
  ASSERT_TRUE(store_->AppendLedger(rows));
  ASSERT_TRUE(store_->AppendAudit(
      {.unix_ms = kT0, .actor = "admin", .action = "create_key", .detail = created->record.id}));
  const std::int64_t v = Version();
  store_.reset();

  store_ = Open();
  ASSERT_NE(store_, nullptr);
  EXPECT_EQ(Version(), v);
  EXPECT_EQ(store_->GetTenant("acme").value().value(), Tenant("acme"));
  EXPECT_EQ(store_->Keys().value(), std::vector<KeyRecord>{created->record});
  EXPECT_EQ(store_->Ledger(0, kT0 + 1).value(), rows);
  EXPECT_EQ(store_->Audit(0, kT0 + 1).value().size(), 1u);
}

TEST_F(StoreTest, LedgerIgnoresRepeatedRequestIds) {
  std::vector<LedgerRow> rows = {Row("r1", "acme", "tx", "llama", kT0, 0.5),
                                 Row("r2", "acme", "tx", "llama", kT0 + 1, 0.25),
                                 Row("r1", "acme", "de", "qwen", kT0 + 2, 9)};  // repeat in batch.
  auto inserted = store_->AppendLedger(rows);
  ASSERT_TRUE(inserted) << inserted.error();
  EXPECT_EQ(*inserted, 2u);
  inserted = store_->AppendLedger(std::span(rows).first(2));
  ASSERT_TRUE(inserted);
  EXPECT_EQ(*inserted, 0u);
  auto stored = store_->Ledger(kT0, kT0 + 10);
  ASSERT_TRUE(stored) << stored.error();
  ASSERT_EQ(stored->size(), 2u);
  EXPECT_EQ((*stored)[0], rows[0]);  // every field, doubles exact.
  EXPECT_EQ((*stored)[1], rows[1]);
  EXPECT_TRUE(*store_->HasLedgerRow("r2"));
  EXPECT_FALSE(*store_->HasLedgerRow("r3"));
  EXPECT_EQ(store_->Ledger(kT0 + 1, kT0 + 2).value().size(), 1u);  // [from, to).
  EXPECT_TRUE(store_->Ledger(0, kT0 + 10, "nobody").value().empty());
  EXPECT_FALSE(store_->AppendLedger(std::vector<LedgerRow>{Row("", "a", "s", "m", kT0, 0)}));
}

TEST_F(StoreTest, UsageGroupsAndSums) {
  const std::int64_t day0 = kT0 - kT0 % kDay;  // 2025-06-15T00:00Z.
  const std::vector<LedgerRow> rows = {
      Row("a1", "acme", "tx", "llama", day0 + 1000, 0.5),
      Row("a2", "acme", "tx", "qwen", day0 + 2000, 0.25),
      Row("a3", "acme", "de", "llama", day0 + kDay + 5, 1.0),
      Row("b1", "beta", "de", "llama", day0 + 3000, 2.0),
  };
  ASSERT_TRUE(store_->AppendLedger(rows));

  auto by_site = store_->Usage("acme", 0, day0 + 2 * kDay, UsageGroup::kSite);
  ASSERT_TRUE(by_site) << by_site.error();
  ASSERT_EQ(by_site->size(), 2u);
  EXPECT_EQ((*by_site)[0].group, "de");
  EXPECT_EQ((*by_site)[0].requests, 1);
  EXPECT_EQ((*by_site)[1].group, "tx");
  EXPECT_EQ((*by_site)[1].requests, 2);
  EXPECT_EQ((*by_site)[1].prompt_tokens, 200);
  EXPECT_EQ((*by_site)[1].completion_tokens, 40);
  EXPECT_DOUBLE_EQ((*by_site)[1].charged_usd, 0.75);
  EXPECT_DOUBLE_EQ((*by_site)[1].joules, 2 * (0.1 + 0.2));

  auto by_day = store_->Usage("", 0, day0 + 2 * kDay, UsageGroup::kDay);
  ASSERT_TRUE(by_day) << by_day.error();
  ASSERT_EQ(by_day->size(), 2u);
  EXPECT_EQ((*by_day)[0].group, "2025-06-15");
  EXPECT_EQ((*by_day)[0].requests, 3);
  EXPECT_EQ((*by_day)[1].group, "2025-06-16");
  EXPECT_DOUBLE_EQ((*by_day)[1].charged_usd, 1.0);

  auto by_tenant = store_->Usage("", 0, day0 + kDay, UsageGroup::kTenant);
  ASSERT_TRUE(by_tenant);
  ASSERT_EQ(by_tenant->size(), 2u);
  EXPECT_EQ((*by_tenant)[0].group, "acme");
  EXPECT_DOUBLE_EQ((*by_tenant)[1].charged_usd, 2.0);
  auto by_model = store_->Usage("acme", 0, day0 + 2 * kDay, UsageGroup::kModel);
  ASSERT_TRUE(by_model);
  ASSERT_EQ(by_model->size(), 2u);
  EXPECT_EQ((*by_model)[0].group, "llama");
  EXPECT_EQ((*by_model)[0].requests, 2);

  EXPECT_DOUBLE_EQ(store_->ChargedUsd("acme", 0).value(), 1.75);
  EXPECT_DOUBLE_EQ(store_->ChargedUsd("acme", day0 + kDay).value(), 1.0);
  EXPECT_DOUBLE_EQ(store_->ChargedUsd("nobody", 0).value(), 0.0);
  EXPECT_EQ(ParseUsageGroup("day"), UsageGroup::kDay);
  EXPECT_FALSE(ParseUsageGroup("hour"));
}

// The first occurrence of each request id wins, as in the ledger.
double ChargedSince(const std::vector<LedgerRow>& rows, std::string_view tenant,
                    std::int64_t since_ms) {
  std::set<std::string> seen;
  double sum = 0;
  for (const auto& r : rows) {
    if (!seen.insert(r.request_id).second) continue;
    if (r.tenant == tenant && r.end_unix_ms >= since_ms) sum += r.charged_usd;
  }
  return sum;
}

// A tenant's spend since a time comes from the daily totals kept in the ledger's transaction
// (whole UTC days) and the ledger rows (the part of a day before them). Both ledger insert
// paths keep the totals, and a repeated request id adds nothing.
TEST_F(StoreTest, ChargedUsdAgreesWithTheLedgerAcrossDaysAndRepeats) {
  const std::int64_t day0 = kT0 - kT0 % kDay;
  std::vector<LedgerRow> rows;
  for (int i = 0; i < 90; ++i) {  // three days, a row every 48 minutes.
    rows.push_back(Row(Id("c", i), i % 3 ? "acme" : "beta", "tx", "llama",
                       day0 + i * (kDay / 30) + 7, 0.01 * (i + 1)));
  }
  std::vector<LedgerRow> second(rows.begin() + 45, rows.end());
  for (int i = 0; i < 10; ++i) {
    LedgerRow again = rows[static_cast<std::size_t>(i)];
    again.charged_usd = 100;  // a repeat: ignored, whatever it says.
    second.push_back(again);
  }
  ASSERT_EQ(store_->AppendLedger(std::span(rows).first(45)).value_or(0), 45u);
  SetPostgresLedgerInsert(PostgresLedgerInsert::kMultiRowInsert);
  auto inserted = store_->AppendLedger(second);
  SetPostgresLedgerInsert(PostgresLedgerInsert::kCopy);
  ASSERT_TRUE(inserted) << inserted.error();
  EXPECT_EQ(*inserted, 45u);
  rows.insert(rows.end(), second.begin() + 45, second.end());
  for (const std::int64_t since : {std::int64_t{0}, day0, day0 + kDay / 2, day0 + kDay,
                                   day0 + 2 * kDay + 1, day0 + 3 * kDay}) {
    for (const char* tenant : {"acme", "beta", "nobody"}) {
      auto charged = store_->ChargedUsd(tenant, since);
      ASSERT_TRUE(charged) << charged.error();
      EXPECT_NEAR(*charged, ChargedSince(rows, tenant, since), 1e-9)
          << tenant << " since " << since;
    }
  }
  EXPECT_GT(ChargedSince(rows, "acme", day0 + kDay / 2), 0.0);
}

// A resync reads many tenants' spend at once (in queries of 500), each in the order asked.
TEST_F(StoreTest, ChargedUsdReadsManyTenantsAtOnce) {
  std::vector<LedgerRow> rows;
  std::vector<std::string> tenants = {"unknown"};
  for (int i = 0; i < 1200; ++i) {
    tenants.push_back(Id("t", 1199 - i));
    rows.push_back(Row(Id("r", i), Id("t", i), "tx", "llama", kT0 + i, 0.001 * (i + 1)));
    rows.push_back(Row(Id("s", i), Id("t", i), "tx", "llama", kT0 - kDay, 1.0));  // before.
  }
  ASSERT_TRUE(store_->AppendLedger(rows));
  auto sums = store_->ChargedUsd(tenants, kT0 - kT0 % kDay);
  ASSERT_TRUE(sums) << sums.error();
  ASSERT_EQ(sums->size(), tenants.size());
  EXPECT_EQ((*sums)[0], 0.0);
  for (std::size_t k = 1; k < tenants.size(); ++k) {
    EXPECT_NEAR((*sums)[k], 0.001 * static_cast<double>(1200 - k + 1), 1e-12) << tenants[k];
  }
}

// A store written before the daily totals existed (schema 1) gets them, and their trigger, from
// its ledger when a gateway of this version opens it; later rows add to them, and on PostgreSQL
// whoever writes them: a row inserted with plain SQL, as an older gateway would, counts too.
TEST_F(StoreTest, AStoreFromBeforeDailyTotalsGetsThemFromItsLedger) {
  const std::int64_t day0 = kT0 - kT0 % kDay;
  std::vector<LedgerRow> rows;
  for (int i = 0; i < 12; ++i) {
    rows.push_back(Row(Id("o", i), "acme", "tx", "llama", day0 + i * (kDay / 4), 0.5 + i));
  }
  ASSERT_TRUE(store_->AppendLedger(rows));
  store_.reset();
#ifdef PP_STORE_TEST_POSTGRES
  RawSql("DROP TRIGGER ledger_spend_daily ON ledger");
#endif
  RawSql("DROP TABLE spend_daily");
  RawSql("UPDATE pp_meta SET value = 1 WHERE name = 'schema'");
  store_ = Open();
  ASSERT_NE(store_, nullptr);
  EXPECT_NEAR(store_->ChargedUsd("acme", day0 + kDay).value_or(-1),
              ChargedSince(rows, "acme", day0 + kDay), 1e-9);
  rows.push_back(Row("late", "acme", "tx", "llama", day0 + 2 * kDay + 5, 7.0));
  ASSERT_TRUE(store_->AppendLedger(std::span(rows).last(1)));
  EXPECT_NEAR(store_->ChargedUsd("acme", day0 + 2 * kDay).value_or(-1),
              ChargedSince(rows, "acme", day0 + 2 * kDay), 1e-9);
#ifdef PP_STORE_TEST_POSTGRES
  // An older gateway's insert, which knows nothing of the totals (PostgreSQL's trigger).
  RawSql("INSERT INTO ledger (" + std::string(internal::kLedgerColumns) +
         ") VALUES ('older', 'acme', 'k', 'm', 's', 'e', 'standard', 1, 1, " +
         std::to_string(day0 + 2 * kDay + 9) + ", " + std::to_string(day0 + 2 * kDay + 10) +
         ", 0, 0, 0, 0, 2.5, 'ok')");
  rows.push_back(Row("older", "acme", "tx", "llama", day0 + 2 * kDay + 10, 2.5));
  EXPECT_NEAR(store_->ChargedUsd("acme", day0 + 2 * kDay).value_or(-1),
              ChargedSince(rows, "acme", day0 + 2 * kDay), 1e-9);
#endif
  // A second opening keeps the totals as they are (a marker the ledger does not hold stays).
  store_.reset();
  RawSql("INSERT INTO spend_daily (tenant, day, charged_usd) VALUES ('marker', 3, 5.0)");
  store_ = Open();
  ASSERT_NE(store_, nullptr);
  EXPECT_NEAR(store_->ChargedUsd("acme", 0).value_or(-1), ChargedSince(rows, "acme", 0), 1e-9);
  EXPECT_EQ(store_->ChargedUsd("marker", 0).value_or(-1), 5.0);
}

TEST_F(StoreTest, AuditKeepsOrder) {
  ASSERT_TRUE(store_->AppendAudit(
      {.unix_ms = kT0, .actor = "ops", .action = "put_tenant", .detail = "acme"}));
  ASSERT_TRUE(store_->AppendAudit({.unix_ms = kT0,
                                   .actor = "ops",
                                   .action = "revoke_key",
                                   .detail = "key_1 'quoted', \"text\""}));
  ASSERT_TRUE(
      store_->AppendAudit({.unix_ms = kT0 + 5, .actor = "ops", .action = "x", .detail = ""}));
  auto rows = store_->Audit(kT0, kT0 + 5);
  ASSERT_TRUE(rows) << rows.error();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].action, "put_tenant");
  EXPECT_EQ((*rows)[1].detail, "key_1 'quoted', \"text\"");
}

TEST_F(StoreTest, RateUsageIsReplacedPerMemberAndTenantAndForgottenWithItsMember) {
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const std::vector<RateUsageRow> m1{{"m1", "d1", "", 0, 0, kT0}, {"m1", "d1", "acme", 3, 120, kT0}};
  const std::vector<RateUsageRow> m2{{"m2", "d2", "", 0, 0, kT0 + 1},
                                     {"m2", "d2", "acme", 1, 10, kT0 + 1}};
  ASSERT_TRUE(store_->PutRateUsage(m1));
  ASSERT_TRUE(store_->PutRateUsage(m2));
  // m1's newer totals replace the old; m3 has a row and no heartbeat.
  ASSERT_TRUE(store_->PutRateUsage(std::vector<RateUsageRow>{{"m1", "d1", "acme", 5, 200, kT0}}));
  ASSERT_TRUE(store_->PutRateUsage(std::vector<RateUsageRow>{{"m3", "d3", "acme", 9, 0, kT0}}));
  auto all = store_->RateUsage(-1);
  ASSERT_TRUE(all) << all.error();
  ASSERT_EQ(all->size(), 5u);
  int m1_acme = 0;
  for (const auto& r : *all) {
    // Stamped by the store's clock (here the same machine's).
    EXPECT_NEAR(static_cast<double>(r.updated_unix_ms), static_cast<double>(now_ms), 60'000.0);
    if (r.member == "m1" && r.tenant == "acme") {
      ++m1_acme;
      EXPECT_EQ(r.requests, 5);
      EXPECT_EQ(r.tokens, 200);
      EXPECT_EQ(r.domain, "d1");
      EXPECT_EQ(r.started_unix_ms, kT0);
    }
  }
  EXPECT_EQ(m1_acme, 1);
  auto recent = store_->RateUsage(60'000);
  ASSERT_TRUE(recent) << recent.error();
  EXPECT_EQ(recent->size(), 5u);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto none = store_->RateUsage(10);  // nothing written in the last 10 ms.
  ASSERT_TRUE(none) << none.error();
  EXPECT_TRUE(none->empty());
  // Nobody has been silent for a minute; with a heartbeat "older than a minute from now", every
  // member that has one goes with all its rows.
  ASSERT_TRUE(store_->ForgetSilentMembers(60'000));
  EXPECT_EQ(store_->RateUsage(-1)->size(), 5u);
  ASSERT_TRUE(store_->ForgetSilentMembers(-60'000));
  auto left = store_->RateUsage(-1);
  ASSERT_TRUE(left) << left.error();
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ(left->front().member, "m3");
}

// An ask for `want` in all (needing all of it), holding `holds`.
BudgetLeaseAsk Ask(std::string tenant, std::int64_t period_start, std::string member, double want,
                   double settled = 0, double holds = 0) {
  return {.tenant = std::move(tenant),
          .period_start_ms = period_start,
          .period = "day",
          .member = std::move(member),
          .holds_usd = holds,
          .need_usd = want,
          .want_usd = want,
          .settled_usd = settled,
          .spent_usd = settled};
}

// Budget leases: what members are granted of a period never exceeds the budget, less what the
// ledger holds that no member reports; a member's grant never shrinks when it asks for more.
TEST_F(StoreTest, BudgetLeasesNeverGrantMoreThanTheBudget) {
  ASSERT_TRUE(store_->PutTenant(Tenant("acme")));  // 12.5 USD a day.
  const std::int64_t day = kT0 / kDay * kDay;
  const auto ask = [&](const std::string& member, double want, double settled = 0,
                       double holds = 0) {
    auto g = store_->GrowBudgetLease(Ask("acme", day, member, want, settled, holds), 60'000);
    EXPECT_TRUE(g) << g.error();
    return g.value_or(BudgetGrant{.granted_usd = -1});
  };
  EXPECT_DOUBLE_EQ(ask("m1", 5).granted_usd, 5);
  auto g2 = ask("m2", 10);
  EXPECT_DOUBLE_EQ(g2.granted_usd, 0);  // less than it needs is no use to it: nothing.
  EXPECT_DOUBLE_EQ(g2.free_usd, 7.5);
  EXPECT_DOUBLE_EQ(g2.held_elsewhere_usd, 5);  // m1 holds 5 and has spent nothing.
  auto m1 = store_->RefreshBudgetLeases("m1", {});
  ASSERT_TRUE(m1);
  ASSERT_EQ(m1->size(), 1u);
  EXPECT_TRUE(m1->front().wanted);  // m2 was refused while m1 held a part: m1 is told.
  EXPECT_DOUBLE_EQ(ask("m2", 7.5).granted_usd, 7.5);
  EXPECT_DOUBLE_EQ(ask("m1", 3, 0, 5).granted_usd, 5);  // never less than it holds.
  // 2 USD in the ledger that no member says it settled (a gateway that never leased).
  ASSERT_TRUE(store_->AppendLedger(std::vector{Row("r1", "acme", "tx", "m", day + 10, 2.0)}));
  EXPECT_DOUBLE_EQ(ask("m3", 1).free_usd, -2);
  // m1 says it settled them: nothing is counted twice, and nothing is free either.
  EXPECT_DOUBLE_EQ(ask("m1", 5, 2.0, 5).granted_usd, 5);
  EXPECT_DOUBLE_EQ(ask("m3", 1).free_usd, 0);
  // m2 gives back all but 3.5; m3 gets what it frees, and no more.
  auto left = store_->RefreshBudgetLeases("m2", std::vector<BudgetLeaseRow>{{"acme", day, "m2", 3.5, 0, 0}});
  ASSERT_TRUE(left) << left.error();
  ASSERT_EQ(left->size(), 1u);
  EXPECT_DOUBLE_EQ(left->front().granted_usd, 3.5);
  EXPECT_DOUBLE_EQ(ask("m3", 10).granted_usd, 0);
  EXPECT_DOUBLE_EQ(ask("m3", 4).granted_usd, 4);
  // A refresh never grows a grant.
  left = store_->RefreshBudgetLeases("m2", std::vector<BudgetLeaseRow>{{"acme", day, "m2", 9, 1, 1}});
  ASSERT_TRUE(left);
  EXPECT_DOUBLE_EQ(left->front().granted_usd, 3.5);
  EXPECT_DOUBLE_EQ(left->front().settled_usd, 1);
  // The next day starts afresh, and the first lease of it removes the day before's.
  const std::int64_t tomorrow = day + kDay;
  BudgetLeaseAsk fresh = Ask("acme", tomorrow, "m1", 20);
  fresh.need_usd = 1;
  auto next = store_->GrowBudgetLease(fresh, 60'000);
  ASSERT_TRUE(next);
  EXPECT_DOUBLE_EQ(next->free_usd, 12.5);
  EXPECT_DOUBLE_EQ(next->granted_usd, 1 + 11.5 / 2);
  left = store_->RefreshBudgetLeases("m2", {});
  ASSERT_TRUE(left);
  EXPECT_TRUE(left->empty());
}

// A spare part is granted in full only while there is room for it: short of that, the asker
// gets what it needs and half of what is free beyond; a stale period gets nothing.
TEST_F(StoreTest, ABudgetLeaseTakesHalfOfWhatIsFreeBeyondItsNeed) {
  ASSERT_TRUE(store_->PutTenant(Tenant("acme")));  // 12.5 USD a day.
  const std::int64_t day = kT0 / kDay * kDay;
  BudgetLeaseAsk a = Ask("acme", day, "m1", 20);
  a.need_usd = 2.5;
  auto g = store_->GrowBudgetLease(a, 60'000);
  ASSERT_TRUE(g);
  EXPECT_DOUBLE_EQ(g->granted_usd, 2.5 + 10.0 / 2);
  BudgetLeaseAsk stale = Ask("acme", day, "m2", 1);
  stale.period = "month";
  g = store_->GrowBudgetLease(stale, 60'000);
  ASSERT_TRUE(g);
  EXPECT_TRUE(g->period_changed);
  EXPECT_EQ(g->granted_usd, 0);
  BudgetLeaseAsk b = Ask("acme", day, "m2", 20);
  b.need_usd = 5;  // exactly what is left.
  EXPECT_DOUBLE_EQ(store_->GrowBudgetLease(b, 60'000)->granted_usd, 5);
}

// A member not heard from for the silence allowed keeps its grant (it may have served within
// it rows the store does not hold yet) but holds nothing that it would give back; once retired
// (a gateway replayed its journal), its spend counts from the ledger alone.
TEST_F(StoreTest, ASilentMemberKeepsItsGrantUntilRetired) {
  ASSERT_TRUE(store_->PutTenant(Tenant("acme")));  // 12.5 USD a day.
  const std::int64_t day = kT0 / kDay * kDay;
  ASSERT_TRUE(store_->GrowBudgetLease(Ask("acme", day, "gone", 10, 3), 60'000));
  // Its rows: the 3 it said, and 1 its journal replayed after it died.
  ASSERT_TRUE(store_->AppendLedger(std::vector{Row("g1", "acme", "tx", "m", day + 10, 3.0),
                                               Row("g2", "acme", "tx", "m", day + 20, 1.0)}));
  auto recent = store_->GrowBudgetLease(Ask("acme", day, "new", 10), 60'000);
  ASSERT_TRUE(recent);
  EXPECT_DOUBLE_EQ(recent->free_usd, 12.5 - 10 - 1);
  EXPECT_DOUBLE_EQ(recent->held_elsewhere_usd, 7);
  std::this_thread::sleep_for(milliseconds(50));
  auto silent = store_->GrowBudgetLease(Ask("acme", day, "new", 10), 20);
  ASSERT_TRUE(silent);
  EXPECT_DOUBLE_EQ(silent->free_usd, 1.5);         // its grant still counts...
  EXPECT_DOUBLE_EQ(silent->held_elsewhere_usd, 0);  // ...but nothing will come back from it.
  EXPECT_DOUBLE_EQ(silent->held_silent_usd, 7);     // (what it holds beyond its spend)
  EXPECT_DOUBLE_EQ(recent->held_silent_usd, 0);
  // The leases as an operator lists them (GET /admin/gateways): by member, each with when its
  // member was last heard from.
  auto leases = store_->BudgetLeases();
  ASSERT_TRUE(leases);
  ASSERT_EQ(leases->size(), 2u);
  EXPECT_EQ((*leases)[0].lease.member, "gone");
  EXPECT_DOUBLE_EQ((*leases)[0].lease.granted_usd, 10);
  EXPECT_DOUBLE_EQ((*leases)[0].lease.settled_usd, 3);
  EXPECT_GE((*leases)[0].heard_ms_ago, 40);  // slept 50 ms since (the store clock rounds).
  EXPECT_EQ((*leases)[1].lease.member, "new");
  EXPECT_LT((*leases)[1].heard_ms_ago, (*leases)[0].heard_ms_ago);
  auto retired = store_->RetireBudgetMember("gone");
  ASSERT_TRUE(retired);
  EXPECT_EQ(*retired, 1u);
  EXPECT_EQ(store_->RetireBudgetMember("gone").value_or(99), 0u);
  ASSERT_EQ(store_->BudgetLeases()->size(), 1u);
  auto after = store_->GrowBudgetLease(Ask("acme", day, "new", 8.5), 20);
  ASSERT_TRUE(after);
  EXPECT_DOUBLE_EQ(after->granted_usd, 8.5);  // 12.5 less the 4 in the ledger.
  auto gone = store_->RefreshBudgetLeases("gone", {});
  ASSERT_TRUE(gone);
  EXPECT_TRUE(gone->empty());
}

// A store whose budget_leases table is from before claims (session 14's) gets their columns when
// opened, and its leases stay.
TEST_F(StoreTest, AStoreFromBeforeClaimsGetsTheirColumns) {
  ASSERT_TRUE(store_->PutTenant(Tenant("acme")));
  const std::int64_t day = kT0 / kDay * kDay;
  ASSERT_TRUE(store_->GrowBudgetLease(Ask("acme", day, "a", 10), 60'000));
  store_.reset();
  RawSql("DROP TABLE budget_leases");
  RawSql("CREATE TABLE budget_leases (tenant TEXT NOT NULL, period_start_ms BIGINT NOT NULL, "
         "member TEXT NOT NULL, granted_usd DOUBLE PRECISION NOT NULL, settled_usd DOUBLE "
         "PRECISION NOT NULL, spent_usd DOUBLE PRECISION NOT NULL, wanted_unix_ms BIGINT NOT NULL "
         "DEFAULT 0, updated_unix_ms BIGINT NOT NULL, PRIMARY KEY (tenant, period_start_ms, "
         "member))");
  RawSql("INSERT INTO budget_leases (tenant, period_start_ms, member, granted_usd, settled_usd, "
         "spent_usd, updated_unix_ms) VALUES ('acme', " + std::to_string(day) +
         ", 'a', 10, 0, 0, 0)");
  store_ = Open();
  ASSERT_NE(store_, nullptr);
  auto b = store_->GrowBudgetLease(Ask("acme", day, "b", 5), 60'000);
  ASSERT_TRUE(b) << b.error();
  EXPECT_EQ(b->granted_usd, 0);  // a's 10 of 12.5 are still held.
  store_.reset();
  store_ = Open();  // and opened again, nothing to add.
  ASSERT_NE(store_, nullptr);
  EXPECT_EQ(store_->BudgetLeases()->size(), 2u);
}

// What another member gives back goes to the members refused before, in the order they asked,
// not to whoever asks next: a refused member claims what it lacks, and a later asker gets only
// what is free beyond the claims made before its own.
TEST_F(StoreTest, WhatComesFreeGoesToTheMembersRefusedFirst) {
  ASSERT_TRUE(store_->PutTenant(Tenant("acme")));  // 12.5 USD a day.
  const std::int64_t day = kT0 / kDay * kDay;
  EXPECT_DOUBLE_EQ(store_->GrowBudgetLease(Ask("acme", day, "a", 10), 60'000)->granted_usd, 10);
  auto b = store_->GrowBudgetLease(Ask("acme", day, "b", 5), 60'000);  // 2.5 free: refused.
  ASSERT_TRUE(b);
  EXPECT_EQ(b->granted_usd, 0);
  EXPECT_DOUBLE_EQ(b->held_elsewhere_usd, 10);
  // b's refresh asks ahead (it needs nothing more now): its claim stays.
  ASSERT_TRUE(store_->GrowBudgetLease(Ask("acme", day, "b", 0), 60'000));
  // "a" goes idle and gives back all but 2: 10.5 is free.
  ASSERT_TRUE(store_->RefreshBudgetLeases("a", std::vector{BudgetLeaseRow{
                                                   "acme", day, "a", 2, 0, 0, false}}));
  // "c" asks for 8 before "b" asks again: 5 of the 10.5 are b's claim, so c is refused.
  auto c = store_->GrowBudgetLease(Ask("acme", day, "c", 8), 60'000);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->granted_usd, 0);
  EXPECT_DOUBLE_EQ(c->free_usd, 10.5);
  b = store_->GrowBudgetLease(Ask("acme", day, "b", 5), 60'000);
  ASSERT_TRUE(b);
  EXPECT_DOUBLE_EQ(b->granted_usd, 5);
  // c claimed in its turn: a newcomer's half-dollar waits behind it.
  auto d = store_->GrowBudgetLease(Ask("acme", day, "d", 0.5), 60'000);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->granted_usd, 0);
  // b is done and gives its part back: c, first in line, gets what it needs.
  ASSERT_TRUE(store_->RefreshBudgetLeases("b", std::vector{BudgetLeaseRow{
                                                   "acme", day, "b", 0, 0, 0, false}}));
  c = store_->GrowBudgetLease(Ask("acme", day, "c", 8), 60'000);
  ASSERT_TRUE(c);
  EXPECT_DOUBLE_EQ(c->granted_usd, 8);
  EXPECT_DOUBLE_EQ(store_->GrowBudgetLease(Ask("acme", day, "d", 0.5), 60'000)->granted_usd, 0.5);
  // A member asking for more than could ever come free claims nothing: it holds up no one.
  EXPECT_EQ(store_->GrowBudgetLease(Ask("acme", day, "e", 50), 60'000)->granted_usd, 0);
  EXPECT_DOUBLE_EQ(store_->GrowBudgetLease(Ask("acme", day, "f", 1), 60'000)->granted_usd, 1);
}

// Members asking at once through their own connections are never granted more than the budget.
TEST_F(StoreTest, ConcurrentLeasesStayWithinTheBudget) {
  TenantRecord t = Tenant("acme");
  t.budget_usd = 1.0;
  ASSERT_TRUE(store_->PutTenant(t));
  const std::int64_t day = kT0 / kDay * kDay;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  std::vector<double> granted(4, 0);
  for (int m = 0; m < 4; ++m) {
    threads.emplace_back([&, m] {
      auto own = store_->Reopen();
      if (!own) {
        ++failures;
        return;
      }
      for (int i = 1; i <= 40; ++i) {
        auto g = (*own)->GrowBudgetLease(Ask("acme", day, Id("m", m), 0.01 * i, 0, granted[m]),
                                         60'000);
        if (!g) {
          if (!IsBusy(g.error())) ++failures;
          continue;
        }
        granted[m] = g->granted_usd;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  double sum = 0;
  for (double g : granted) sum += g;
  EXPECT_LE(sum, 1.0 + 1e-9);
  EXPECT_GE(sum, 0.9);  // 4 x 0.40 was asked, in steps of 0.01: nearly all of it went.
}

TEST_F(StoreTest, ConcurrentOpenersShareOneSchema) {
  std::vector<std::thread> threads;
  std::atomic<int> opened{0};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      auto store = Store::Open(url_, dir_);
      if (store && (*store)->Version()) ++opened;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(opened.load(), 4);
}

#ifdef PP_STORE_TEST_POSTGRES

// The default path is COPY into a temporary table; the multi-row INSERT must agree.
TEST_F(StoreTest, MultiRowInsertAlsoIgnoresRepeats) {
  SetPostgresLedgerInsert(PostgresLedgerInsert::kMultiRowInsert);
  std::vector<LedgerRow> rows;
  for (int i = 0; i < 2500; ++i)
    rows.push_back(Row(Id("m", i % 2200), "acme", "tx", "llama", kT0 + i, 0.5));
  auto inserted = store_->AppendLedger(rows);
  auto again = store_->AppendLedger(std::span(rows).first(10));
  SetPostgresLedgerInsert(PostgresLedgerInsert::kCopy);
  ASSERT_TRUE(inserted) << inserted.error();
  EXPECT_EQ(*inserted, 2200u);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, 0u);
  EXPECT_EQ(store_->Ledger(0, kT0 + 3000).value().front(), rows.front());
}

// PostgreSQL: a write that waits past lock_timeout for a lock another session holds fails as
// busy (55P03); once the lock is gone the same store writes again.
TEST_F(StoreTest, APostgresLockTimeoutIsReportedAsBusy) {
  ASSERT_TRUE(store_->PutTenant(Tenant("early")));
  auto quick = Store::Open(url_ + "?options=-c%20lock_timeout%3D100", dir_);
  ASSERT_TRUE(quick) << quick.error();
  {
    pqxx::connection holder(url_);
    pqxx::work tx(holder);
    tx.exec("LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE");
    auto refused = (*quick)->PutTenant(Tenant("late"));
    ASSERT_FALSE(refused);
    EXPECT_TRUE(IsBusy(refused.error())) << refused.error();
  }  // the holder's transaction aborts here, releasing the lock.
  EXPECT_TRUE((*quick)->PutTenant(Tenant("late")));
  auto missing = Store::Open(url_ + "x", dir_);  // no such database: not busy, not opened.
  EXPECT_FALSE(missing);
}


// PostgreSQL: a store whose connection the server dropped says so (libpq's own words, e.g.
// "Could not obtain client encoding", name no cause), and counts as busy (a retry may reach it).
TEST_F(StoreTest, ALostPostgresConnectionIsSaidToBeLost) {
  ASSERT_TRUE(store_->PutTenant(Tenant("early")));
  RawSql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
         "WHERE pid <> pg_backend_pid() AND datname = current_database()");
  auto refused = store_->PutTenant(Tenant("late"));
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().find("the connection to PostgreSQL is lost"), std::string::npos)
      << refused.error();
  EXPECT_TRUE(IsBusy(refused.error())) << refused.error();
}
#else

TEST_F(StoreTest, SqliteFileHoldsNoKeyPlaintext) {
  ASSERT_TRUE(store_->PutTenant(Tenant("acme")));
  auto created = store_->CreateKey("acme");
  ASSERT_TRUE(created);
  std::string bytes;
  for (const char* file : {"powerplane.db", "powerplane.db-wal"}) {
    std::ifstream in(dir_ / file, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    bytes += s.str();
  }
  ASSERT_NE(bytes.find(created->record.key_sha256), std::string::npos);  // the scan sees rows.
  EXPECT_EQ(bytes.find(created->plaintext), std::string::npos);
  EXPECT_EQ(bytes.find(created->plaintext.substr(3)), std::string::npos);
}

TEST_F(StoreTest, RejectsUnknownUrl) {
  auto store = Store::Open("mysql://x", dir_);
  EXPECT_FALSE(store);
  for (const char* query : {"?busy=5", "?busy_timeout_ms=", "?busy_timeout_ms=-5",
                            "?busy_timeout_ms=9999999", "?busy_timeout_ms=5&x=1"}) {
    auto bad = Store::Open("sqlite:" + (dir_ / "q.db").string() + query, dir_);
    ASSERT_FALSE(bad) << query;
    EXPECT_NE(bad.error().find("busy_timeout_ms"), std::string::npos) << bad.error();
  }
  EXPECT_FALSE(fs::exists(dir_ / "q.db"));
}

// Another connection holding SQLite's write lock past the busy timeout makes a write fail as busy
// (a retry may cure it); once the lock is released, the same store writes again.
TEST_F(StoreTest, AWriteLockHeldPastTheBusyTimeoutIsReportedAsBusy) {
  const fs::path file = dir_ / "powerplane.db";
  auto quick = Store::Open("sqlite:" + file.string() + "?busy_timeout_ms=50", dir_);
  ASSERT_TRUE(quick) << quick.error();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(file.c_str(), &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  ASSERT_EQ(sqlite3_exec(db, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr), SQLITE_OK);
  const auto start = std::chrono::steady_clock::now();
  auto refused = (*quick)->PutTenant(Tenant("late"));
  const auto waited = std::chrono::steady_clock::now() - start;
  sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  ASSERT_FALSE(refused);
  EXPECT_TRUE(IsBusy(refused.error())) << refused.error();
  EXPECT_GE(waited, milliseconds(50));  // it waited out the timeout first.
  EXPECT_TRUE((*quick)->PutTenant(Tenant("late")));
  auto got = store_->GetTenant("late");
  ASSERT_TRUE(got) << got.error();
  EXPECT_TRUE(got->has_value());
}

// StoreOptions::sync_commits: synchronous=FULL (2) on the connection and on its reconnections
// (the ledger writer's); NORMAL (1) otherwise.
TEST_F(StoreTest, SyncCommitsFlushEveryCommitOnEveryConnection) {
  const std::string file = (dir_ / "sync.db").string();
  auto synchronous = [](internal::Connection& c) {
    return c.Query("PRAGMA synchronous").at(0).Int(0);
  };
  auto synced = internal::OpenSqlite(file, 1000, true);
  EXPECT_EQ(synchronous(*synced), 2);
  EXPECT_EQ(synchronous(*synced->Reconnect()), 2);
  auto normal = internal::OpenSqlite(file, 1000, false);
  EXPECT_EQ(synchronous(*normal), 1);
  EXPECT_EQ(synchronous(*normal->Reconnect()), 1);
}

// A child commits rows through the LedgerWriter and reports each durable id on a pipe; it is
// killed mid-stream. Every id reported durable must be in the reopened store, exactly once.
TEST_F(StoreTest, KilledWriterLosesNoDurableRow) {
  store_.reset();
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(fds[0]);
    auto store = Store::Open("", dir_);
    if (!store) _exit(2);
    auto writer = LedgerWriter::Start(**store, 256, milliseconds(1));
    if (!writer) _exit(3);
    for (int i = 0;; ++i) {
      while (!(*writer)->TryReserve()) std::this_thread::sleep_for(std::chrono::microseconds(50));
      const std::string id = Id("k", i);
      (*writer)->Commit(Row(id, "acme", "tx", "llama", kT0, 0.01), [fd = fds[1], id](bool ok) {
        if (!ok) return;
        const std::string line = id + "\n";
        if (write(fd, line.data(), line.size()) < 0) _exit(4);
      });
    }
  }
  close(fds[1]);
  std::string reported;
  char buf[4096];
  std::size_t lines = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (lines < 2000 && std::chrono::steady_clock::now() < deadline) {
    const ssize_t n = read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    reported.append(buf, n);
    lines = std::count(reported.begin(), reported.end(), '\n');
  }
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) reported.append(buf, n);
  close(fds[0]);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with " << WEXITSTATUS(status);

  std::set<std::string> durable;
  std::istringstream in(reported);
  for (std::string id; std::getline(in, id);) durable.insert(id);
  ASSERT_GE(durable.size(), 2000u);
  store_ = Open();
  ASSERT_NE(store_, nullptr);
  auto rows = store_->Ledger(0, kT0 + 1);
  ASSERT_TRUE(rows) << rows.error();
  std::multiset<std::string> stored;
  for (const auto& r : *rows) stored.insert(r.request_id);
  for (const auto& id : durable) EXPECT_EQ(stored.count(id), 1u) << id;
  EXPECT_GE(stored.size(), durable.size());
}

#endif

}  // namespace
}  // namespace powerplane::store
