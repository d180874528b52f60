#include "grid/price_series.h"

#include <algorithm>
#include <utility>

namespace powerplane::grid {

PriceSeries::PriceSeries(std::vector<PricePoint> points) : points_(std::move(points)) {
  std::stable_sort(points_.begin(), points_.end(),
                   [](const PricePoint& a, const PricePoint& b) { return a.start < b.start; });
  // Keep the last of each run of equal starts.
  std::vector<PricePoint> unique;
  unique.reserve(points_.size());
  for (const PricePoint& p : points_) {
    if (!unique.empty() && unique.back().start == p.start) {
      unique.back() = p;
    } else {
      unique.push_back(p);
    }
  }
  points_ = std::move(unique);
}

PriceSeries PriceSeries::Constant(double usd_per_mwh) {
  return PriceSeries({PricePoint{UtcTime{}, usd_per_mwh}});
}

double PriceSeries::UsdPerMwhAt(UtcTime t) const {
  if (points_.empty()) return 0.0;
  // First point starting after t; the one before it contains t.
  const auto it = std::upper_bound(points_.begin(), points_.end(), t,
                                   [](UtcTime v, const PricePoint& p) { return v < p.start; });
  if (it == points_.begin()) return points_.front().usd_per_mwh;
  return std::prev(it)->usd_per_mwh;
}

double PriceSeries::Mean() const {
  if (points_.empty()) return 0.0;
  double sum = 0.0;
  for (const PricePoint& p : points_) sum += p.usd_per_mwh;
  return sum / static_cast<double>(points_.size());
}

}  // namespace powerplane::grid
