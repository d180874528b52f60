#include "grid/price_loaders.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

#include "grid/csv_reader.h"

namespace powerplane::grid {
namespace {

using std::chrono::hours;
using std::chrono::minutes;

// A parsed row before sorting: its interval start, price and line (for duplicate reports).
struct Row {
  UtcTime start;
  double usd_per_mwh = 0.0;
  int line = 0;
};

std::unexpected<LoadError> Fail(std::string_view file, int line, int column, std::string message) {
  return std::unexpected(LoadError{std::string(file), line, column, std::move(message)});
}

// The field as it may appear in a message: at most 40 characters, non-printables as '?'.
std::string Quote(std::string_view field) {
  constexpr std::size_t kMax = 40;
  std::string out = "'";
  for (std::size_t i = 0; i < field.size() && i < kMax; ++i) {
    const unsigned char c = static_cast<unsigned char>(field[i]);
    out.push_back(c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '?');
  }
  if (field.size() > kMax) out += "...";
  out += "'";
  return out;
}

// A finite decimal number spanning the whole field (a leading '+' is allowed).
bool ParseDouble(std::string_view s, double* out) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  double v = 0.0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size() || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

// A small non-negative integer of 1 to 2 digits.
bool ParseSmallInt(std::string_view s, int* out) {
  if (s.empty() || s.size() > 2) return false;
  int v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

bool ParseYear(std::string_view s, int* out) {
  if (s.size() != 4) return false;
  int v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

bool MakeDate(int y, int m, int d, std::chrono::year_month_day* out) {
  const std::chrono::year_month_day ymd{std::chrono::year{y},
                                        std::chrono::month{static_cast<unsigned>(m)},
                                        std::chrono::day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) return false;
  *out = ymd;
  return true;
}

// `YYYY-MM-DD` or `MM/DD/YYYY`.
bool ParseErcotDate(std::string_view s, std::chrono::year_month_day* out) {
  if (ParseIsoDate(s, out)) return true;
  if (s.size() != 10 || s[2] != '/' || s[5] != '/') return false;
  int m = 0, d = 0, y = 0;
  return ParseSmallInt(s.substr(0, 2), &m) && ParseSmallInt(s.substr(3, 2), &d) &&
         ParseYear(s.substr(6), &y) && MakeDate(y, m, d, out);
}

// `dd.mm.yyyy`.
bool ParseGermanDate(std::string_view s, std::chrono::year_month_day* out) {
  if (s.size() != 10 || s[2] != '.' || s[5] != '.') return false;
  int m = 0, d = 0, y = 0;
  return ParseSmallInt(s.substr(0, 2), &d) && ParseSmallInt(s.substr(3, 2), &m) &&
         ParseYear(s.substr(6), &y) && MakeDate(y, m, d, out);
}

// `HH:MM`, 00:00-23:59.
bool ParseClock(std::string_view s, minutes* out) {
  if (s.size() != 5 || s[2] != ':') return false;
  int h = 0, m = 0;
  if (!ParseSmallInt(s.substr(0, 2), &h) || !ParseSmallInt(s.substr(3, 2), &m) || h > 23 ||
      m > 59) {
    return false;
  }
  *out = hours{h} + minutes{m};
  return true;
}

// 1-24, or ERCOT's `HH:00` spelling.
bool ParseHourEnding(std::string_view s, int* out) {
  if (s.size() == 5 && s.substr(2) == ":00") s = s.substr(0, 2);
  int h = 0;
  if (!ParseSmallInt(s, &h) || h < 1 || h > 24) return false;
  *out = h;
  return true;
}

// 1-based index of the header field named `name`, or 0.
int FindColumn(const std::vector<std::string_view>& header, std::string_view name) {
  for (std::size_t i = 0; i < header.size(); ++i) {
    if (header[i] == name) return static_cast<int>(i) + 1;
  }
  return 0;
}

std::string FewColumns(const std::vector<std::string_view>& header, std::size_t first) {
  constexpr std::size_t kShown = 6;
  std::string out;
  std::size_t shown = 0;
  for (std::size_t i = first; i < header.size() && shown < kShown; ++i, ++shown) {
    if (!out.empty()) out += ", ";
    out += Quote(header[i]);
  }
  if (header.size() - first > kShown) {
    out += fmt::format(", ... ({} in all)", header.size() - first);
  }
  return out.empty() ? std::string("none") : out;
}

// Checks that a data row has the header's field count.
std::optional<LoadError> CheckFieldCount(std::string_view file, const CsvReader& reader,
                                         std::size_t expected) {
  const std::size_t found = reader.fields().size();
  if (found == expected) return std::nullopt;
  return LoadError{std::string(file), reader.line_number(),
                   static_cast<int>(std::min(found, expected)) + 1,
                   fmt::format("expected {} fields as in the header, found {}", expected, found)};
}

// Sorts the rows, rejects duplicates and empty input, and builds the series.
std::expected<PriceSeries, LoadError> Finish(std::string_view file, std::vector<Row> rows,
                                             int last_line) {
  if (rows.empty()) return Fail(file, last_line, 0, "no data rows");
  std::stable_sort(rows.begin(), rows.end(),
                   [](const Row& a, const Row& b) { return a.start < b.start; });
  std::vector<PricePoint> points;
  points.reserve(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (i > 0 && rows[i].start == rows[i - 1].start) {
      const Row& a = rows[i - 1];
      const Row& b = rows[i];
      return Fail(file, std::max(a.line, b.line), 0,
                  fmt::format("duplicate interval starting {} (also on line {})",
                              FormatUtc(b.start), std::min(a.line, b.line)));
    }
    points.push_back(PricePoint{rows[i].start, rows[i].usd_per_mwh});
  }
  return PriceSeries(std::move(points));
}

std::expected<std::string, LoadError> ReadFile(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return Fail(path, 0, 0, "cannot open: " + std::generic_category().message(errno));
  }
  std::string text;
  char buffer[1 << 16];
  while (true) {
    const std::size_t n = std::fread(buffer, 1, sizeof(buffer), f);
    text.append(buffer, n);
    if (n < sizeof(buffer)) break;
  }
  const bool failed = std::ferror(f) != 0;
  const int error = errno;
  std::fclose(f);
  if (failed) return Fail(path, 0, 0, "cannot read: " + std::generic_category().message(error));
  return text;
}

}  // namespace

std::string LoadError::ToString() const {
  if (line == 0) return fmt::format("{}: {}", file, message);
  if (column == 0) return fmt::format("{}:{}: {}", file, line, message);
  return fmt::format("{}:{}:{}: {}", file, line, column, message);
}

// ---- ERCOT ----

std::expected<PriceSeries, LoadError> ParseErcotCsv(std::string_view text,
                                                    std::string_view file_name,
                                                    std::string_view column) {
  CsvReader reader(text);
  if (!reader.Next()) return Fail(file_name, 1, 0, "empty file: expected a header line");
  const std::vector<std::string_view> header = reader.fields();
  if (header.size() < 2 || header[0] != "delivery_date" || header[1] != "hour_ending") {
    return Fail(file_name, reader.line_number(),
                header.empty() || header[0] != "delivery_date" ? 1 : 2,
                "expected the header to start with 'delivery_date,hour_ending'");
  }
  const int price_column = column.empty() ? 0 : FindColumn(header, column);
  if (price_column <= 2) {
    return Fail(file_name, reader.line_number(), 0,
                fmt::format("unknown price column {}; available: {}", Quote(column),
                            FewColumns(header, 2)));
  }

  std::vector<Row> rows;
  rows.reserve(text.size() / 64);
  std::chrono::year_month_day previous_date{};
  int previous_hour_ending = 0;
  while (reader.Next()) {
    const int line = reader.line_number();
    if (auto error = CheckFieldCount(file_name, reader, header.size())) {
      return std::unexpected(std::move(*error));
    }
    const std::vector<std::string_view>& f = reader.fields();
    std::chrono::year_month_day date{};
    if (!ParseErcotDate(f[0], &date)) {
      return Fail(file_name, line, 1,
                  fmt::format("invalid delivery_date {} (expected YYYY-MM-DD)", Quote(f[0])));
    }
    int hour_ending = 0;
    if (!ParseHourEnding(f[1], &hour_ending)) {
      return Fail(file_name, line, 2,
                  fmt::format("invalid hour_ending {} (expected 1-24)", Quote(f[1])));
    }
    const bool repeated = date == previous_date && hour_ending == previous_hour_ending;
    previous_date = date;
    previous_hour_ending = hour_ending;

    const std::string_view cell = f[static_cast<std::size_t>(price_column) - 1];
    if (cell.empty()) continue;  // no price published for this hour: skipped, see the header.
    double usd_per_mwh = 0.0;
    if (!ParseDouble(cell, &usd_per_mwh)) {
      return Fail(file_name, line, price_column,
                  fmt::format("invalid number {} in column {}", Quote(cell), column));
    }
    // Hour ending h covers local [h-1, h).
    const LocalTime local_start =
        LocalTime{std::chrono::sys_days{date}.time_since_epoch()} + hours{hour_ending - 1};
    const auto start =
        UsCentralToUtc(local_start, repeated ? Ambiguity::kLater : Ambiguity::kEarlier);
    if (!start) {
      return Fail(file_name, line, 2,
                  fmt::format("hour_ending {}: {}", hour_ending, start.error()));
    }
    rows.push_back(Row{*start, usd_per_mwh, line});
  }
  return Finish(file_name, std::move(rows), reader.line_number());
}

std::expected<PriceSeries, LoadError> LoadErcotCsv(const std::string& path,
                                                   std::string_view column) {
  auto text = ReadFile(path);
  if (!text) return std::unexpected(std::move(text.error()));
  return ParseErcotCsv(*text, path, column);
}

// ---- DE-LU ----

std::expected<PriceSeries, LoadError> ParseDeLuCsv(std::string_view text,
                                                   std::string_view file_name, double usd_per_eur) {
  if (!std::isfinite(usd_per_eur) || usd_per_eur <= 0.0) {
    return Fail(file_name, 0, 0, fmt::format("usd_per_eur must be positive, got {}", usd_per_eur));
  }
  CsvReader reader(text);
  if (!reader.Next()) return Fail(file_name, 1, 0, "empty file: expected a header line");
  const std::vector<std::string_view> header = reader.fields();
  const int date_column = FindColumn(header, "sdate");
  const int start_column = FindColumn(header, "stimestart");
  const int zone_column = FindColumn(header, "zone_start");
  const int price_column = FindColumn(header, "price");
  if (date_column == 0 || start_column == 0 || zone_column == 0 || price_column == 0) {
    return Fail(file_name, reader.line_number(), 0,
                "expected header columns sdate, stimestart, zone_start and price");
  }
  const double usd_per_mwh_per_ct_per_kwh = 10.0 * usd_per_eur;

  std::vector<Row> rows;
  rows.reserve(text.size() / 48);
  while (reader.Next()) {
    const int line = reader.line_number();
    if (auto error = CheckFieldCount(file_name, reader, header.size())) {
      return std::unexpected(std::move(*error));
    }
    const std::vector<std::string_view>& f = reader.fields();
    const auto field = [&f](int column) { return f[static_cast<std::size_t>(column) - 1]; };

    const std::string_view cell = field(price_column);
    if (cell.empty()) continue;  // no price published: skipped.
    std::chrono::year_month_day date{};
    if (!ParseGermanDate(field(date_column), &date)) {
      return Fail(file_name, line, date_column,
                  fmt::format("invalid sdate {} (expected dd.mm.yyyy)", Quote(field(date_column))));
    }
    minutes clock{};
    if (!ParseClock(field(start_column), &clock)) {
      return Fail(
          file_name, line, start_column,
          fmt::format("invalid stimestart {} (expected HH:MM)", Quote(field(start_column))));
    }
    hours utc_offset{};
    if (field(zone_column) == "CET") {
      utc_offset = hours{1};
    } else if (field(zone_column) == "CEST") {
      utc_offset = hours{2};
    } else {
      return Fail(
          file_name, line, zone_column,
          fmt::format("invalid zone_start {} (expected CET or CEST)", Quote(field(zone_column))));
    }
    double ct_per_kwh = 0.0;
    if (!ParseDouble(cell, &ct_per_kwh)) {
      return Fail(file_name, line, price_column, fmt::format("invalid number {}", Quote(cell)));
    }
    const UtcTime start = UtcTime{std::chrono::sys_days{date}} + clock - utc_offset;
    rows.push_back(Row{start, ct_per_kwh * usd_per_mwh_per_ct_per_kwh, line});
  }
  return Finish(file_name, std::move(rows), reader.line_number());
}

std::expected<PriceSeries, LoadError> LoadDeLuCsv(const std::string& path, double usd_per_eur) {
  auto text = ReadFile(path);
  if (!text) return std::unexpected(std::move(text.error()));
  return ParseDeLuCsv(*text, path, usd_per_eur);
}

// ---- generic ----

std::expected<PriceSeries, LoadError> ParseGenericPriceCsv(std::string_view text,
                                                           std::string_view file_name) {
  CsvReader reader(text);
  if (!reader.Next()) return Fail(file_name, 1, 0, "empty file: expected a header line");
  const std::vector<std::string_view> header = reader.fields();
  const int time_column = FindColumn(header, "timestamp");
  const int price_column = FindColumn(header, "usd_per_mwh");
  if (time_column == 0 || price_column == 0) {
    return Fail(file_name, reader.line_number(), 0,
                "expected header columns timestamp and usd_per_mwh");
  }

  std::vector<Row> rows;
  while (reader.Next()) {
    const int line = reader.line_number();
    if (auto error = CheckFieldCount(file_name, reader, header.size())) {
      return std::unexpected(std::move(*error));
    }
    const std::vector<std::string_view>& f = reader.fields();
    const std::string_view stamp = f[static_cast<std::size_t>(time_column) - 1];
    const std::string_view cell = f[static_cast<std::size_t>(price_column) - 1];
    if (cell.empty()) continue;  // no price: skipped.
    const auto start = ParseUtcTimestamp(stamp);
    if (!start) {
      return Fail(file_name, line, time_column,
                  fmt::format("invalid timestamp {}: {}", Quote(stamp), start.error()));
    }
    double usd_per_mwh = 0.0;
    if (!ParseDouble(cell, &usd_per_mwh)) {
      return Fail(file_name, line, price_column, fmt::format("invalid number {}", Quote(cell)));
    }
    rows.push_back(Row{*start, usd_per_mwh, line});
  }
  return Finish(file_name, std::move(rows), reader.line_number());
}

std::expected<PriceSeries, LoadError> LoadGenericPriceCsv(const std::string& path) {
  auto text = ReadFile(path);
  if (!text) return std::unexpected(std::move(text.error()));
  return ParseGenericPriceCsv(*text, path);
}

// ---- dispatch ----

std::expected<PriceSource::Format, std::string> ParsePriceFormat(std::string_view name) {
  if (name == "ercot") return PriceSource::Format::kErcot;
  if (name == "de-lu") return PriceSource::Format::kDeLu;
  if (name == "generic") return PriceSource::Format::kGeneric;
  return std::unexpected(
      fmt::format("unknown price format {} (expected ercot, de-lu or generic)", Quote(name)));
}

std::string_view ToString(PriceSource::Format format) {
  switch (format) {
    case PriceSource::Format::kErcot:
      return "ercot";
    case PriceSource::Format::kDeLu:
      return "de-lu";
    case PriceSource::Format::kGeneric:
      return "generic";
  }
  return "unknown";
}

std::expected<PriceSeries, LoadError> LoadPriceFeed(const PriceSource& source) {
  switch (source.format) {
    case PriceSource::Format::kErcot:
      return LoadErcotCsv(source.path, source.column);
    case PriceSource::Format::kDeLu:
      return LoadDeLuCsv(source.path, source.usd_per_eur);
    case PriceSource::Format::kGeneric:
      return LoadGenericPriceCsv(source.path);
  }
  return Fail(source.path, 0, 0, "unknown price format");
}

}  // namespace powerplane::grid
