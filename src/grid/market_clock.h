#pragma once
// Maps wall-clock time to market time for replaying historical prices faster than real time.
// Never reads a clock itself: callers pass the wall times (so tests and the simulator can use a
// fake clock). Immutable; thread-safe.

#include <cassert>
#include <chrono>
#include <cmath>
#include <cstdint>

#include "grid/time.h"

namespace powerplane::grid {

class MarketClock {
 public:
  using WallTime = std::chrono::system_clock::time_point;

  // At wall time `wall_start` the market is at `market_start`, and it advances `speed` market
  // seconds per wall second (60: one market hour per real minute; 1: real time; 0: frozen).
  // `speed` must be finite and non-negative; anything else is a bug (asserts in debug builds, is
  // treated as 0 otherwise).
  MarketClock(UtcTime market_start, double speed, WallTime wall_start)
      : market_start_(market_start),
        speed_(std::isfinite(speed) && speed >= 0.0 ? speed : 0.0),
        wall_start_(wall_start) {
    assert(std::isfinite(speed) && speed >= 0.0);
  }

  // The market time at `wall`, rounded down to whole seconds. Before `wall_start` the market time
  // lies before `market_start` (the mapping is linear both ways).
  UtcTime MarketTime(WallTime wall) const {
    const double wall_s = std::chrono::duration<double>(wall - wall_start_).count();
    // A nanosecond of slack so that exact products (60 x 60 s) are not floored to 3599 s.
    double market_s = std::floor(wall_s * speed_ + 1e-9);
    // Keep the conversion to integer seconds defined for absurd inputs (about +-292 billion years).
    constexpr double kLimit = 9.0e18;
    market_s = std::fmax(-kLimit, std::fmin(kLimit, market_s));
    return market_start_ + std::chrono::seconds{static_cast<std::int64_t>(market_s)};
  }

  // The wall time at which the market reaches `market`; `wall_start` when the clock is frozen.
  WallTime WallTimeAt(UtcTime market) const {
    if (speed_ == 0.0) return wall_start_;
    const double market_s = std::chrono::duration<double>(market - market_start_).count();
    return wall_start_ + std::chrono::duration_cast<WallTime::duration>(
                             std::chrono::duration<double>(market_s / speed_));
  }

  UtcTime market_start() const { return market_start_; }
  double speed() const { return speed_; }
  WallTime wall_start() const { return wall_start_; }

 private:
  UtcTime market_start_;
  double speed_;
  WallTime wall_start_;
};

}  // namespace powerplane::grid
