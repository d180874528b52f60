// Tenancy's budget leases with a real (SQLite) store that two Tenancy objects share, as two
// gateways on one store do: what one holds the other cannot have, an idle one gives back what it
// does not use, and a stopped one gives back everything unused.

#include "gateway/tenancy.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <future>

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
  std::unique_ptr<Tenancy> Gateway() {
    auto t = Tenancy::WithStore(Open());
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

  std::filesystem::path dir_;
  std::shared_ptr<const Tenant> tenant_;
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
  a->Settle(*tenant_, 0, 0, 0.1, 0.05);
  a->Settle(*tenant_, 0, 0, 0.1, 0.05);
  a->Poll(std::chrono::milliseconds(0));  // busy since the last refresh: keeps its spare.
  EXPECT_EQ(Admit(*b, 0.6).verdict, Verdict::kBudgetLeasedElsewhere);
  a->Poll(std::chrono::milliseconds(0));  // idle: gives back all but the 0.1 it settled.
  EXPECT_EQ(Admit(*b, 0.6).verdict, Verdict::kOk);
  // b's request is in flight, and may cost less than its worst case: a's wait is for b.
  EXPECT_EQ(Admit(*a, 0.5).verdict, Verdict::kBudgetLeasedElsewhere);
  b->Settle(*tenant_, 0, 0, 0.6, 0.6);
  b->Poll(std::chrono::milliseconds(0));
  b->Poll(std::chrono::milliseconds(0));
  // What is left (0.3) does not cover 0.5, and nobody holds it: the budget is spent.
  EXPECT_EQ(Admit(*a, 0.5).verdict, Verdict::kOverBudget);
  EXPECT_EQ(Admit(*a, 0.3).verdict, Verdict::kOk);
}

TEST_F(TenancyLeaseTest, AStoppedGatewayGivesBackWhatItDidNotUse) {
  {
    auto a = Gateway();
    ASSERT_EQ(Admit(*a, 0.1).verdict, Verdict::kOk);  // holds 0.5.
    a->Settle(*tenant_, 0, 0, 0.1, 0.1);
  }
  auto b = Gateway();
  EXPECT_EQ(Admit(*b, 0.9).verdict, Verdict::kOk);  // all but the 0.1 a spent.
  EXPECT_EQ(Admit(*b, 0.01).verdict, Verdict::kOverBudget);
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
