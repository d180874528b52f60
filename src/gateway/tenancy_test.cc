// Tenancy's budget leases with a real (SQLite) store that two Tenancy objects share, as two
// gateways on one store do: what one holds the other cannot have, an idle one gives back what it
// does not use, and a stopped one gives back everything unused.

#include "gateway/tenancy.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <string>
#include <vector>

namespace powerplane::gateway {
namespace {

using Verdict = Admission::Verdict;

class TenancyLeaseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (std::filesystem::temp_directory_path() / "pp-lease-XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    auto store = Open();
    store::TenantRecord acme;
    acme.id = "acme";
    acme.budget_usd = 1.0;
    acme.budget_period = "day";
    ASSERT_TRUE(store->PutTenant(acme));
    tenant_ = std::make_shared<Tenant>(TenantFromRecord(*store->GetTenant("acme").value()));
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::unique_ptr<store::Store> Open() {
    auto store = store::Store::Open("", dir_);
    EXPECT_TRUE(store) << store.error();
    return std::move(store.value());
  }
  std::unique_ptr<Tenancy> Gateway(std::filesystem::path journal = {}) {
    TenancyOptions options;
    options.journal_dir = std::move(journal);
    auto t = Tenancy::WithStore(Open(), options);
    EXPECT_TRUE(t) << t.error();
    return std::move(t.value());
  }
  // AdmitSpend, and GrowLease where the lease is short (as the proxy does).
  Admission Admit(Tenancy& gateway, double usd) {
    const Admission first = gateway.AdmitSpend(*tenant_, usd);
    if (first.verdict != Verdict::kNeedsLease) return first;
    std::promise<Admission> answer;
    gateway.GrowLease(tenant_, usd, [&](Admission a) { answer.set_value(a); });
    return answer.get_future().get();
  }

  // A request admitted for `worst` ends charged `charged`, and its row reaches the ledger (as
  // the proxy settles and records it).
  void End(Tenancy& gateway, double worst, double charged) {
    gateway.Settle(*tenant_, 0, 0, worst, charged);
    store::LedgerRow row;
    row.request_id = "r" + std::to_string(++rows_);
    row.tenant = tenant_->id;
    row.end_unix_ms = UnixMsNow();
    row.charged_usd = charged;
    row.outcome = "ok";
    std::promise<bool> durable;
    gateway.Record(std::move(row), [&](bool d) { durable.set_value(d); });
    ASSERT_TRUE(durable.get_future().get());
    ASSERT_TRUE(gateway.FlushLedger());
  }
  // Refreshes until the lease has been idle long enough to give back its spare part.
  static void PollUntilIdle(Tenancy& gateway) {
    for (int i = 0; i <= core::BudgetLease::kBusyTrims; ++i) {
      gateway.Poll(std::chrono::milliseconds(0));
    }
  }

  std::filesystem::path dir_;
  std::shared_ptr<const Tenant> tenant_;
  int rows_ = 0;
};

TEST_F(TenancyLeaseTest, WhatOneGatewayHoldsTheOtherWaitsForUntilItIsGivenBack) {
  auto a = Gateway();
  auto b = Gateway();
  // The first request asks the store: 0.1 plus a spare part of 4 x 0.1.
  EXPECT_EQ(a->AdmitSpend(*tenant_, 0.1).verdict, Verdict::kNeedsLease);
  ASSERT_EQ(Admit(*a, 0.1).verdict, Verdict::kOk);
  EXPECT_EQ(a->AdmitSpend(*tenant_, 0.1).verdict, Verdict::kOk);  // within the lease: no ask.
  // b wants 0.6: only 0.5 is free, and a holds the rest for requests in flight.
  EXPECT_EQ(Admit(*b, 0.6).verdict, Verdict::kBudgetLeasedElsewhere);
  End(*a, 0.1, 0.05);
  End(*a, 0.1, 0.05);
  a->Poll(std::chrono::milliseconds(0));  // busy lately: keeps its spare.
  EXPECT_EQ(Admit(*b, 0.6).verdict, Verdict::kBudgetLeasedElsewhere);
  PollUntilIdle(*a);  // idle: gives back all but the 0.1 it settled.
  EXPECT_EQ(Admit(*b, 0.6).verdict, Verdict::kOk);
  // b's request is in flight, and may cost less than its worst case: a's wait is for b.
  EXPECT_EQ(Admit(*a, 0.5).verdict, Verdict::kBudgetLeasedElsewhere);
  End(*b, 0.6, 0.6);
  PollUntilIdle(*b);
  // What is left (0.3) does not cover 0.5, and nobody holds it: the budget is spent.
  EXPECT_EQ(Admit(*a, 0.5).verdict, Verdict::kOverBudget);
  EXPECT_EQ(Admit(*a, 0.3).verdict, Verdict::kOk);
}

TEST_F(TenancyLeaseTest, AStoppedGatewayGivesBackWhatItDidNotUse) {
  {
    auto a = Gateway();
    ASSERT_EQ(Admit(*a, 0.1).verdict, Verdict::kOk);  // holds 0.5.
    End(*a, 0.1, 0.1);
  }
  auto b = Gateway();
  EXPECT_EQ(Admit(*b, 0.9).verdict, Verdict::kOk);  // all but the 0.1 a spent.
  EXPECT_EQ(Admit(*b, 0.01).verdict, Verdict::kOverBudget);
}

// A gateway refused while a busy one holds a spare part gets it once the busy one has heard
// (at its next refresh), not only once the busy one goes idle.
TEST_F(TenancyLeaseTest, ARefusedGatewayGetsTheSpareABusyOneHolds) {
  auto a = Gateway();
  auto b = Gateway();
  ASSERT_EQ(Admit(*a, 0.1).verdict, Verdict::kOk);  // holds 0.5.
  for (int i = 0; i < 3; ++i) ASSERT_EQ(a->AdmitSpend(*tenant_, 0.1).verdict, Verdict::kOk);
  EXPECT_EQ(Admit(*b, 0.7).verdict, Verdict::kBudgetLeasedElsewhere);  // 0.5 free, 0.5 at a.
  for (int i = 0; i < 4; ++i) End(*a, 0.1, 0.05);
  a->Poll(std::chrono::milliseconds(0));  // hears that b wants it: keeps only what it spent.
  a->Poll(std::chrono::milliseconds(0));  // tells the store.
  EXPECT_EQ(Admit(*b, 0.7).verdict, Verdict::kOk);  // 1 - 0.2 spent at a.
  // a's busy lease had asked for no spare meanwhile: what is left is all b's and a's to ask for.
  EXPECT_EQ(Admit(*a, 0.2).verdict, Verdict::kBudgetLeasedElsewhere);
}

// Once the store says a busy gateway's lease is wanted (another was refused), what the busy
// gateway's requests free goes back to the store, not to its next request: that one asks the
// store too, and waits behind the refused gateway's claim.
TEST_F(TenancyLeaseTest, WhatAWantedLeaseFreesGoesToTheGatewayRefusedFirst) {
  auto a = Gateway();
  auto b = Gateway();
  ASSERT_EQ(Admit(*a, 0.1).verdict, Verdict::kOk);  // holds 0.5.
  for (int i = 0; i < 3; ++i) ASSERT_EQ(a->AdmitSpend(*tenant_, 0.1).verdict, Verdict::kOk);
  EXPECT_EQ(Admit(*b, 0.7).verdict, Verdict::kBudgetLeasedElsewhere);  // claims 0.7.
  a->Poll(std::chrono::milliseconds(0));  // hears that its lease is wanted: keeps its 0.4 in use.
  End(*a, 0.1, 0.05);                     // frees 0.05 here...
  EXPECT_EQ(a->AdmitSpend(*tenant_, 0.05).verdict, Verdict::kNeedsLease);  // ...not for a's next,
  // which asks the store, where b's claim comes first: 1 - 0.7 claimed < a's 0.35 + 0.05.
  EXPECT_EQ(Admit(*a, 0.05).verdict, Verdict::kBudgetLeasedElsewhere);
  EXPECT_EQ(Admit(*b, 0.6).verdict, Verdict::kOk);  // 1 - a's 0.35.
}

// A gateway that died (kill -9) left rows in the ledger it never said it settled (its journal
// replayed them). A live gateway's settled spend whose rows are not in the ledger yet must not
// cancel them out: it says only what the ledger holds.
TEST_F(TenancyLeaseTest, SpendNotYetInTheLedgerHidesNoOtherGatewaysRows) {
  auto store = Open();
  const std::int64_t day = core::PeriodStartMs(core::BudgetPeriod::kDay, UnixMsNow());
  ASSERT_TRUE(store->GrowBudgetLease({.tenant = "acme", .period_start_ms = day, .period = "day",
                                      .member = "dead", .holds_usd = 0, .need_usd = 0.1,
                                      .want_usd = 0.1, .settled_usd = 0.1, .spent_usd = 0.1},
                                     60'000));
  std::vector<store::LedgerRow> rows(3);
  for (int i = 0; i < 3; ++i) {
    rows[i].request_id = "dead" + std::to_string(i);
    rows[i].tenant = "acme";
    rows[i].end_unix_ms = UnixMsNow();
    rows[i].charged_usd = 0.1;  // 0.3 in all: 0.2 of it never said.
  }
  ASSERT_TRUE(store->AppendLedger(rows));
  auto a = Gateway();
  auto b = Gateway();
  ASSERT_EQ(Admit(*a, 0.1).verdict, Verdict::kOk);  // holds 0.5 of the 0.7 left.
  a->Settle(*tenant_, 0, 0, 0.1, 0.1);               // settled; its row not written yet.
  a->Poll(std::chrono::milliseconds(0));
  // Left for b: 1 - 0.1 (dead's grant) - 0.5 (a's) - 0.2 (dead's rows it never said) = 0.2.
  EXPECT_NE(Admit(*b, 0.3).verdict, Verdict::kOk);
  EXPECT_EQ(Admit(*b, 0.19).verdict, Verdict::kOk);
}

// The next gateway on a journal retires the leases of the one before it (once its rows are in
// the ledger): what it held is free again at once, not only once the store has waited it out.
TEST_F(TenancyLeaseTest, TheNextGatewayOnAJournalRetiresTheLeasesOfTheOneBefore) {
  const auto journal = dir_ / "journal";
  // A gateway that takes a lease, spends 0.1 of it, and dies without giving the rest back.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto a = Gateway(journal);
    const bool ok = Admit(*a, 0.1).verdict == Verdict::kOk;  // holds 0.5.
    End(*a, 0.1, 0.1);
    a->Poll(std::chrono::milliseconds(0));
    ::_exit(ok && !::testing::Test::HasFailure() ? 0 : 1);  // no destructor: nothing released.
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  auto b = Gateway();
  EXPECT_EQ(Admit(*b, 0.8).verdict, Verdict::kBudgetLeasedElsewhere);  // the dead one holds 0.5.
  auto again = Gateway(journal);  // replays the dead one's journal, and retires its leases.
  EXPECT_EQ(Admit(*b, 0.8).verdict, Verdict::kOk);  // all but the 0.1 it spent.
  EXPECT_EQ(Admit(*b, 0.11).verdict, Verdict::kOverBudget);
}

// A budget lowered below what a gateway's lease holds applies to its next request at once, not
// once the lease's spare part is spent.
TEST_F(TenancyLeaseTest, ALoweredBudgetAppliesToTheNextRequest) {
  auto a = Gateway();
  ASSERT_EQ(Admit(*a, 0.1).verdict, Verdict::kOk);  // holds 0.5.
  EXPECT_EQ(a->AdmitSpend(*tenant_, 0.1).verdict, Verdict::kOk);  // 0.2 of it in use.
  auto store = Open();
  store::TenantRecord lowered = *store->GetTenant("acme").value();
  lowered.budget_usd = 0.25;
  ASSERT_TRUE(store->PutTenant(lowered));
  ASSERT_TRUE(a->Reload());
  tenant_ = std::make_shared<Tenant>(TenantFromRecord(lowered));
  EXPECT_EQ(Admit(*a, 0.1).verdict, Verdict::kOverBudget);  // 0.3 would exceed 0.25.
  EXPECT_EQ(Admit(*a, 0.05).verdict, Verdict::kOk);
}

}  // namespace
}  // namespace powerplane::gateway
