#include "grid/market_clock.h"

#include <gtest/gtest.h>

namespace powerplane::grid {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

const UtcTime kMarketStart{std::chrono::sys_days{std::chrono::year{2024} / 8 / 19}};
const MarketClock::WallTime kWallStart{std::chrono::sys_days{std::chrono::year{2026} / 1 / 1}};

TEST(MarketClock, SixtyTimesIsAnHourPerMinute) {
  const MarketClock clock(kMarketStart, 60.0, kWallStart);
  EXPECT_EQ(clock.MarketTime(kWallStart), kMarketStart);
  EXPECT_EQ(clock.MarketTime(kWallStart + minutes{1}), kMarketStart + hours{1});
  EXPECT_EQ(clock.MarketTime(kWallStart + minutes{90}), kMarketStart + hours{90});
  EXPECT_EQ(clock.MarketTime(kWallStart + milliseconds{500}), kMarketStart + seconds{30});
  EXPECT_EQ(clock.MarketTime(kWallStart + milliseconds{10}), kMarketStart);  // 0.6 s floors to 0
  EXPECT_EQ(clock.MarketTime(kWallStart - seconds{1}), kMarketStart - minutes{1});
  EXPECT_EQ(clock.WallTimeAt(kMarketStart + hours{2}), kWallStart + minutes{2});
}

TEST(MarketClock, RealTimeAndFrozen) {
  const MarketClock real(kMarketStart, 1.0, kWallStart);
  EXPECT_EQ(real.MarketTime(kWallStart + hours{5} + milliseconds{999}), kMarketStart + hours{5});
  const MarketClock frozen(kMarketStart, 0.0, kWallStart);
  EXPECT_EQ(frozen.MarketTime(kWallStart + hours{5}), kMarketStart);
  EXPECT_EQ(frozen.WallTimeAt(kMarketStart + hours{1}), kWallStart);
}

TEST(MarketClock, FractionalSpeed) {
  const MarketClock clock(kMarketStart, 0.5, kWallStart);
  EXPECT_EQ(clock.MarketTime(kWallStart + seconds{3}), kMarketStart + seconds{1});
  EXPECT_EQ(clock.speed(), 0.5);
  EXPECT_EQ(clock.market_start(), kMarketStart);
  EXPECT_EQ(clock.wall_start(), kWallStart);
}

}  // namespace
}  // namespace powerplane::grid
