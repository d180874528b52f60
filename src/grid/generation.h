#pragma once
// Hourly capacity-factor profiles of on-site generation (wind, solar): a year of hours, looked up
// by the hour of the year of a market time, so a 2018 reanalysis profile can drive 2024 prices.

#include <expected>
#include <string>
#include <string_view>
#include <vector>

#include "grid/price_loaders.h"
#include "grid/time.h"

namespace powerplane::grid {

class CapacityFactorProfile {
 public:
  explicit CapacityFactorProfile(std::vector<double> hourly) : hourly_(std::move(hourly)) {}
  // The capacity factor (0-1) in the hour of the year that contains `t` (UTC); the year wraps.
  double At(UtcTime t) const;
  std::size_t hours() const { return hourly_.size(); }
  double Mean() const;

 private:
  std::vector<double> hourly_;
};

// Reads the MERRA-2 CSV of data/generation/ (comment lines, a BEGIN_DATA line, then
// `year,month,day,hour,<capacity>` with hour 1-24) or a plain `<index>,<cf>` CSV (Kelmarsh).
std::expected<CapacityFactorProfile, LoadError> ParseCapacityFactorCsv(std::string_view text,
                                                                      std::string_view file_name);
std::expected<CapacityFactorProfile, LoadError> LoadCapacityFactorCsv(const std::string& path);

}  // namespace powerplane::grid
