#include "core/limits.h"

#include <gtest/gtest.h>

#include <cmath>

namespace powerplane::core {
namespace {

TEST(MinuteBucketTest, TakesUntilEmptyThenSaysHowLongToWait) {
  MinuteBucket rpm(60);  // one per second.
  for (int i = 0; i < 60; ++i) EXPECT_EQ(rpm.TryTake(1, 0.0), 0) << i;
  EXPECT_NEAR(rpm.TryTake(1, 0.0), 1.0, 1e-9);
  EXPECT_NEAR(rpm.TryTake(1, 0.5), 0.5, 1e-9);
  EXPECT_EQ(rpm.TryTake(1, 1.0), 0);
  EXPECT_TRUE(std::isinf(rpm.TryTake(61, 100.0)));  // more than the bucket holds.
}

TEST(MinuteBucketTest, RefundsAndChargesAfterTheFact) {
  MinuteBucket tpm(1000);
  EXPECT_EQ(tpm.TryTake(800, 0), 0);  // a reservation.
  tpm.Refund(500, 0);                 // used 300 of it.
  EXPECT_NEAR(tpm.level(0), 700, 1e-9);
  tpm.Charge(900, 0);  // used beyond: goes negative, later requests wait.
  EXPECT_GT(tpm.TryTake(1, 0), 0);
  EXPECT_NEAR(tpm.level(60), 800, 1e-9);    // a minute refills 1000 from -200.
  EXPECT_NEAR(tpm.level(120), 1000, 1e-9);  // and never beyond the bucket.
}

TEST(MinuteBucketTest, ZeroIsUnlimited) {
  MinuteBucket b(0);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(b.TryTake(1e6, 0), 0);
}

// A changed limit keeps what the last minute used: lowering it does not refill the bucket,
// raising it adds only the difference; from or to unlimited it starts full.
TEST(MinuteBucketTest, AResizedBucketKeepsWhatWasUsed) {
  MinuteBucket b(10);
  for (int i = 0; i < 8; ++i) ASSERT_EQ(b.TryTake(1, 0), 0);
  b.Resize(5, 0);  // 8 used of a new 5: nothing left until the minute's use drains.
  EXPECT_GT(b.TryTake(1, 0), 0);
  EXPECT_DOUBLE_EQ(b.level(0), -3);
  b.Resize(20, 0);  // 8 used of 20: 12 left, not 20.
  EXPECT_DOUBLE_EQ(b.level(0), 12);
  b.Resize(0, 0);
  EXPECT_TRUE(b.unlimited());
  b.Resize(4, 0);
  EXPECT_DOUBLE_EQ(b.level(0), 4);
}

TEST(BudgetPeriodTest, DayAndMonthStartInUtc) {
  // 2024-08-19T17:30:00Z = 1724088600000 ms.
  EXPECT_EQ(PeriodStartMs(BudgetPeriod::kDay, 1724088600000), 1724025600000);    // 08-19 00:00Z
  EXPECT_EQ(PeriodStartMs(BudgetPeriod::kMonth, 1724088600000), 1722470400000);  // 08-01 00:00Z
  EXPECT_EQ(PeriodStartMs(BudgetPeriod::kNone, 1724088600000), 0);
  BudgetPeriod p;
  EXPECT_TRUE(ParseBudgetPeriod("month", &p));
  EXPECT_EQ(p, BudgetPeriod::kMonth);
  EXPECT_FALSE(ParseBudgetPeriod("week", &p));
}

TEST(BudgetBookTest, ReservationsAndSettlementStayUnderTheBudget) {
  BudgetBook book(1.0, BudgetPeriod::kDay);
  const std::int64_t t = 1724088600000;
  EXPECT_TRUE(book.TryReserve(0.4, t));
  EXPECT_TRUE(book.TryReserve(0.4, t));
  EXPECT_FALSE(book.TryReserve(0.4, t));  // 1.2 would exceed 1.0.
  book.Settle(0.4, 0.1);                  // the first used a quarter of its worst case.
  EXPECT_TRUE(book.TryReserve(0.4, t));   // 0.1 + 0.4 + 0.4 = 0.9.
  EXPECT_NEAR(book.settled_usd(), 0.1, 1e-12);
  EXPECT_NEAR(book.reserved_usd(), 0.8, 1e-12);
  // The next day starts with nothing settled; reservations in flight carry over.
  EXPECT_TRUE(book.TryReserve(0.1, t + 24 * 3600 * 1000LL));
  EXPECT_NEAR(book.settled_usd(), 0, 1e-12);
  EXPECT_NEAR(book.reserved_usd(), 0.9, 1e-12);
}

// A lease admits only within what the store granted; a grant grows only when the store says so,
// and only for the period it was asked for.
TEST(BudgetLeaseTest, AdmitsOnlyWithinTheGrant) {
  BudgetLease lease(BudgetPeriod::kDay);
  const std::int64_t t = 1724088600000;
  EXPECT_FALSE(lease.TryReserve(0.1, t));  // nothing granted yet.
  EXPECT_NEAR(lease.Want(0.1, 0.05), 0.15, 1e-12);
  lease.Grow(0.15, PeriodStartMs(BudgetPeriod::kDay, t));
  EXPECT_TRUE(lease.TryReserve(0.1, t));
  EXPECT_FALSE(lease.TryReserve(0.1, t));  // 0.2 would exceed the 0.15 granted.
  lease.Settle(0.1, 0.02);
  EXPECT_TRUE(lease.TryReserve(0.1, t));   // 0.02 settled + 0.1 reserved.
  lease.Grow(0.1, PeriodStartMs(BudgetPeriod::kDay, t));  // a grant never shrinks by Grow.
  EXPECT_NEAR(lease.granted_usd(), 0.15, 1e-12);
  lease.Grow(5.0, PeriodStartMs(BudgetPeriod::kDay, t) - 24 * 3600 * 1000LL);  // last period's.
  EXPECT_NEAR(lease.granted_usd(), 0.15, 1e-12);
  // The next day starts with nothing settled or granted; reservations carry over.
  const std::int64_t tomorrow = t + 24 * 3600 * 1000LL;
  EXPECT_FALSE(lease.TryReserve(0.01, tomorrow));
  EXPECT_NEAR(lease.settled_usd(), 0, 1e-12);
  EXPECT_NEAR(lease.reserved_usd(), 0.1, 1e-12);
}

// A changed period keeps the reservations of requests in flight; what was settled and granted
// only where the new period starts when the old one did.
TEST(BudgetLeaseTest, AChangedPeriodKeepsWhatIsInFlight) {
  const std::int64_t t = 1724088600000;  // 2024-08-19: not the first of the month.
  BudgetLease lease(BudgetPeriod::kDay);
  lease.Roll(t);
  lease.Grow(1.0, PeriodStartMs(BudgetPeriod::kDay, t));
  ASSERT_TRUE(lease.TryReserve(0.3, t));
  lease.Settle(0, 0.2);
  lease.SetPeriod(BudgetPeriod::kMonth, t);
  EXPECT_EQ(lease.period_start_ms(), PeriodStartMs(BudgetPeriod::kMonth, t));
  EXPECT_NEAR(lease.reserved_usd(), 0.3, 1e-12);
  EXPECT_EQ(lease.settled_usd(), 0);
  EXPECT_EQ(lease.granted_usd(), 0);
  EXPECT_FALSE(lease.TryReserve(std::nan(""), t));  // a NaN never fits.
  const std::int64_t first = PeriodStartMs(BudgetPeriod::kMonth, t);  // the 1st, 00:00 UTC.
  BudgetLease same(BudgetPeriod::kDay);
  same.Roll(first);
  same.Grow(1.0, first);
  same.Settle(0, 0.2);
  same.SetPeriod(BudgetPeriod::kMonth, first);  // both periods start now: nothing is lost.
  EXPECT_NEAR(same.settled_usd(), 0.2, 1e-12);
  EXPECT_NEAR(same.granted_usd(), 1.0, 1e-12);
}

// A busy lease keeps a spare part at a refresh, one idle for kBusyTrims refreshes gives back all
// it does not use; the store's smaller figure caps it.
TEST(BudgetLeaseTest, TrimKeepsSpareOnlyWhileBusy) {
  BudgetLease lease(BudgetPeriod::kMonth);
  const std::int64_t t = 1724088600000;
  const std::int64_t start = PeriodStartMs(BudgetPeriod::kMonth, t);
  lease.Roll(t);
  EXPECT_EQ(lease.period_start_ms(), start);
  lease.Grow(1.0, start);
  EXPECT_FALSE(lease.busy());
  ASSERT_TRUE(lease.TryReserve(0.2, t));
  EXPECT_TRUE(lease.busy());
  EXPECT_NEAR(lease.largest_busy_usd(), 0.2, 1e-12);
  EXPECT_NEAR(lease.Trim(0.1), 0.3, 1e-12);  // in use 0.2, plus 0.1 spare.
  EXPECT_NEAR(lease.granted_usd(), 0.3, 1e-12);
  lease.Settle(0.2, 0.05);
  for (int i = 1; i < BudgetLease::kBusyTrims; ++i) {
    EXPECT_NEAR(lease.Trim(0.1), 0.15, 1e-12) << i;  // still busy lately: keeps its spare.
    EXPECT_NEAR(lease.largest_busy_usd(), 0.2, 1e-12);
  }
  EXPECT_NEAR(lease.Trim(0.1), 0.05, 1e-12);  // idle: only what is settled.
  EXPECT_FALSE(lease.busy());
  EXPECT_EQ(lease.largest_busy_usd(), 0);
  EXPECT_FALSE(lease.TryReserve(0.01, t));
  lease.Grow(0.5, start);
  lease.Cap(0.2, start);
  EXPECT_NEAR(lease.granted_usd(), 0.2, 1e-12);
  EXPECT_NEAR(lease.Trim(1.0), 0.05, 1e-12);  // a Trim never grows it.
}

// What the store is told was settled counts only rows in the ledger, of this period.
TEST(BudgetLeaseTest, CommittedCountsTheLedgersRowsOfThePeriod) {
  BudgetLease lease(BudgetPeriod::kDay);
  const std::int64_t t = 1724088600000;
  lease.Committed(0.5, t);  // before any period: nothing to count it in.
  lease.Roll(t);
  lease.Committed(0.25, t);
  lease.Committed(0.5, PeriodStartMs(BudgetPeriod::kDay, t) - 1);  // yesterday's row.
  EXPECT_NEAR(lease.committed_usd(), 0.25, 1e-12);
  lease.Roll(t + 24 * 3600 * 1000LL);
  EXPECT_EQ(lease.committed_usd(), 0);
}

}  // namespace
}  // namespace powerplane::core

#include "core/output_length.h"

namespace powerplane::core {
namespace {

TEST(OutputLengthEstimateTest, StartsFromThePriorAndLearnsTheTenantsLengths) {
  OutputLengthEstimate e(256);
  EXPECT_EQ(e.Expected(), 256);
  for (int i = 0; i < 500; ++i) e.Observe(i % 2 == 0 ? 20 : 36);  // a code tenant: mean 28.
  EXPECT_NEAR(e.Expected(), 28, 1);
  for (int i = 0; i < 500; ++i) e.Observe(400);  // its habits change: it follows.
  EXPECT_NEAR(e.Expected(), 400, 2);
  e.Observe(0);  // nothing generated: no information.
  EXPECT_EQ(e.samples(), 1000);
}

}  // namespace
}  // namespace powerplane::core
