#include "grid/price_series.h"

#include <gtest/gtest.h>

namespace powerplane::grid {
namespace {

using std::chrono::hours;
using std::chrono::minutes;

const UtcTime kT0{std::chrono::sys_days{std::chrono::year{2024} / 8 / 19}};

TEST(PriceSeries, StepFunctionLookup) {
  // Given out of order on purpose.
  const PriceSeries s({{kT0 + hours{1}, 20.0}, {kT0, 10.0}, {kT0 + hours{2}, -5.0}});
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s.front(), kT0);
  EXPECT_EQ(s.back(), kT0 + hours{2});
  EXPECT_DOUBLE_EQ(s.UsdPerMwhAt(kT0 - hours{100}), 10.0);  // before the first: first price
  EXPECT_DOUBLE_EQ(s.UsdPerMwhAt(kT0), 10.0);
  EXPECT_DOUBLE_EQ(s.UsdPerMwhAt(kT0 + minutes{59}), 10.0);
  EXPECT_DOUBLE_EQ(s.UsdPerMwhAt(kT0 + hours{1}), 20.0);
  EXPECT_DOUBLE_EQ(s.UsdPerMwhAt(kT0 + hours{2} - std::chrono::seconds{1}), 20.0);
  EXPECT_DOUBLE_EQ(s.UsdPerMwhAt(kT0 + hours{2}), -5.0);
  EXPECT_DOUBLE_EQ(s.UsdPerMwhAt(kT0 + hours{1000}), -5.0);  // after the last: last price
  EXPECT_DOUBLE_EQ(s.Mean(), 25.0 / 3.0);
  EXPECT_EQ(s.points()[1].start, kT0 + hours{1});
}

TEST(PriceSeries, DuplicateStartLastWins) {
  const PriceSeries s({{kT0, 1.0}, {kT0, 2.0}});
  ASSERT_EQ(s.size(), 1u);
  EXPECT_DOUBLE_EQ(s.UsdPerMwhAt(kT0), 2.0);
}

TEST(PriceSeries, ConstantAndEmpty) {
  const PriceSeries c = PriceSeries::Constant(42.5);
  EXPECT_DOUBLE_EQ(c.UsdPerMwhAt(kT0), 42.5);
  EXPECT_DOUBLE_EQ(c.UsdPerMwhAt(UtcTime{} - hours{1}), 42.5);
  EXPECT_DOUBLE_EQ(c.Mean(), 42.5);
  const PriceSeries empty;
  EXPECT_TRUE(empty.empty());
  EXPECT_DOUBLE_EQ(empty.UsdPerMwhAt(kT0), 0.0);
  EXPECT_DOUBLE_EQ(empty.Mean(), 0.0);
}

}  // namespace
}  // namespace powerplane::grid
