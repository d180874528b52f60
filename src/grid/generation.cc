#include "grid/generation.h"

#include <charconv>
#include <chrono>
#include <fstream>
#include <numeric>
#include <sstream>

namespace powerplane::grid {
namespace {

std::vector<std::string_view> SplitFields(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (;;) {
    auto comma = line.find(',', start);
    out.push_back(line.substr(start, comma == std::string_view::npos ? line.npos : comma - start));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

bool ParseNumber(std::string_view s, double* out) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r')) s.remove_suffix(1);
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}

}  // namespace

double CapacityFactorProfile::At(UtcTime t) const {
  if (hourly_.empty()) return 0;
  using namespace std::chrono;
  const auto day = floor<days>(t);
  const year_month_day ymd{day};
  const auto year_start = sys_days{ymd.year() / January / 1};
  const auto hour = duration_cast<std::chrono::hours>(t - year_start).count();
  return hourly_[static_cast<std::size_t>(hour) % hourly_.size()];
}

double CapacityFactorProfile::Mean() const {
  if (hourly_.empty()) return 0;
  return std::accumulate(hourly_.begin(), hourly_.end(), 0.0) / hourly_.size();
}

std::expected<CapacityFactorProfile, LoadError> ParseCapacityFactorCsv(std::string_view text,
                                                                      std::string_view file_name) {
  std::vector<double> hourly;
  const bool merra = text.find("BEGIN_DATA") != std::string_view::npos;
  bool in_data = !merra;
  bool header_skipped = false;
  int line_no = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto nl = text.find('\n', pos);
    std::string_view line = text.substr(pos, nl == std::string_view::npos ? text.npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    if (!in_data) {
      if (line.substr(0, line.find(',')) == "BEGIN_DATA") in_data = true;
      continue;
    }
    auto fields = SplitFields(line);
    double cf = 0;
    if (!ParseNumber(fields.back(), &cf)) {
      if (!header_skipped) {  // the column header.
        header_skipped = true;
        continue;
      }
      return std::unexpected(LoadError{std::string(file_name), line_no,
                                       static_cast<int>(fields.size()),
                                       "capacity factor is not a number"});
    }
    if (cf < 0 || cf > 1.0001) {
      return std::unexpected(LoadError{std::string(file_name), line_no,
                                       static_cast<int>(fields.size()),
                                       "capacity factor outside 0-1"});
    }
    hourly.push_back(cf);
  }
  if (hourly.empty()) {
    return std::unexpected(LoadError{std::string(file_name), 0, 0, "no data rows"});
  }
  return CapacityFactorProfile(std::move(hourly));
}

std::expected<CapacityFactorProfile, LoadError> LoadCapacityFactorCsv(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::unexpected(LoadError{path, 0, 0, "cannot open"});
  std::ostringstream text;
  text << in.rdbuf();
  return ParseCapacityFactorCsv(text.str(), path);
}

}  // namespace powerplane::grid
