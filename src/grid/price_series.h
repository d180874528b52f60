#pragma once
// An hourly (or any-interval) electricity price curve, as a step function of UTC time.

#include <cstddef>
#include <span>
#include <vector>

#include "grid/time.h"

namespace powerplane::grid {

// One interval of a price curve: the price holds from `start` until the next point's start.
struct PricePoint {
  UtcTime start;
  double usd_per_mwh = 0.0;
};

// An immutable price curve sorted by start time. Cheap to query (binary search); safe to share
// between threads once built.
class PriceSeries {
 public:
  // An empty series; prices everything at 0 USD/MWh.
  PriceSeries() = default;
  // Takes the points in any order and sorts them by start (stable). Of several points with the same
  // start, the last one given wins. The loaders reject such duplicates before getting here.
  explicit PriceSeries(std::vector<PricePoint> points);

  // A series that prices every instant at `usd_per_mwh` (one point at the Unix epoch).
  static PriceSeries Constant(double usd_per_mwh);

  // The price of the interval containing `t`: point i holds from its start until point i+1's start.
  // Before the first point the first price holds; after the last point the last price holds.
  double UsdPerMwhAt(UtcTime t) const;

  std::size_t size() const { return points_.size(); }
  bool empty() const { return points_.empty(); }
  // Start of the first and of the last interval; the epoch for an empty series.
  UtcTime front() const { return points_.empty() ? UtcTime{} : points_.front().start; }
  UtcTime back() const { return points_.empty() ? UtcTime{} : points_.back().start; }
  std::span<const PricePoint> points() const { return points_; }

  // Arithmetic mean of the points' prices (each point counts once, whatever its length; for an
  // hourly series without gaps this is the time-weighted mean). 0 for an empty series.
  double Mean() const;

 private:
  std::vector<PricePoint> points_;
};

}  // namespace powerplane::grid
