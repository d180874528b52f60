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

// A resync from the store adds what other gateways spent, but a store that has not yet got this
// gateway's last rows does not make it forget them.
TEST(BudgetBookTest, AResyncNeverForgetsWhatWasSettledHere) {
  BudgetBook book(1.0, BudgetPeriod::kDay);
  const std::int64_t t = 1724088600000;
  ASSERT_TRUE(book.TryReserve(0.5, t));
  book.Settle(0.5, 0.5);
  book.Resync(0.3);  // the store is behind: the last 0.2 settled here is not in it yet.
  EXPECT_NEAR(book.settled_usd(), 0.5, 1e-12);
  EXPECT_FALSE(book.TryReserve(0.6, t));  // 0.5 + 0.6 would exceed 1.0.
  book.Resync(0.8);  // other gateways spent too.
  EXPECT_NEAR(book.settled_usd(), 0.8, 1e-12);
  EXPECT_FALSE(book.TryReserve(0.3, t));
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
