#pragma once
// Loaders for real market price files. Each format has a parser over the text (pure; what the fuzz
// target drives) and a loader that reads a file and calls it. Untrusted input: every malformed row
// is answered with a LoadError naming the file, line and column; nothing throws.
//
// Shared CSV rules: comma-separated, no quoting; CRLF or LF line endings, with or without a final
// newline; a UTF-8 byte-order mark is ignored; blank lines are skipped; spaces around a field are
// ignored; every data row has as many fields as the header; a file without data rows is an error;
// two rows for the same UTC interval are an error.

#include <expected>
#include <string>
#include <string_view>

#include "grid/price_series.h"

namespace powerplane::grid {

// USD per EUR used to convert European prices when the caller gives none: roughly the 2024 average
// of the ECB reference rate (1.082).
inline constexpr double kDefaultUsdPerEur = 1.08;

// Why a price file could not be read. `line` and `column` are 1-based; 0 means "not about a
// particular line/column" (e.g. the file cannot be opened). `column` counts CSV fields, not bytes.
struct LoadError {
  std::string file;
  int line = 0;
  int column = 0;
  std::string message;

  // "file:line:column: message"; the position parts that are 0 are left out ("file: message").
  std::string ToString() const;
};

// ERCOT settlement point prices in wide form: header `delivery_date,hour_ending,<SP>_DAM,...`.
// `delivery_date` is `YYYY-MM-DD` (or ERCOT's `MM/DD/YYYY`); `hour_ending` is 1-24 (or `HH:00`) in
// US Central Prevailing Time, hour ending h covering local [h-1, h). `column` names the price
// column, e.g. "HB_NORTH_RTM". A row whose price cell is empty is skipped (the real 2024 file has
// such a placeholder row for the hour skipped at the spring-forward switch; the step function then
// holds the previous price). On the fall-back day a (date, hour_ending) repeated on the next row is
// the second, CST, occurrence. Prices are in USD/MWh already.
std::expected<PriceSeries, LoadError> ParseErcotCsv(std::string_view text,
                                                    std::string_view file_name,
                                                    std::string_view column);
std::expected<PriceSeries, LoadError> LoadErcotCsv(const std::string& path,
                                                   std::string_view column);

// Germany/Luxembourg day-ahead prices: columns `time,sdate,stimestart,zone_start,stimeend,zone_end,
// price` (found by name; `time`, `stimeend` and `zone_end` are not used). `sdate` is `dd.mm.yyyy`,
// `stimestart` `HH:MM` local time, `zone_start` `CET` (UTC+1) or `CEST` (UTC+2), which decides the
// conversion to UTC. `price` is in ct/kWh (x10 = EUR/MWh) and is converted to USD/MWh with
// `usd_per_eur` (must be positive). Rows with an empty price are skipped.
std::expected<PriceSeries, LoadError> ParseDeLuCsv(std::string_view text,
                                                   std::string_view file_name,
                                                   double usd_per_eur = kDefaultUsdPerEur);
std::expected<PriceSeries, LoadError> LoadDeLuCsv(const std::string& path,
                                                  double usd_per_eur = kDefaultUsdPerEur);

// Our own neutral format: header with columns `timestamp` and `usd_per_mwh` (found by name, other
// columns ignored). Timestamps are ISO 8601 (see ParseUtcTimestamp), UTC when they carry no zone.
// Rows with an empty price are skipped.
std::expected<PriceSeries, LoadError> ParseGenericPriceCsv(std::string_view text,
                                                           std::string_view file_name);
std::expected<PriceSeries, LoadError> LoadGenericPriceCsv(const std::string& path);

// Where a price feed comes from (e.g. a site's config).
struct PriceSource {
  enum class Format { kErcot, kDeLu, kGeneric };
  Format format = Format::kGeneric;
  std::string path;
  std::string column;                      // ERCOT only: the price column, e.g. "HB_NORTH_RTM".
  double usd_per_eur = kDefaultUsdPerEur;  // DE-LU only.
};

// "ercot", "de-lu" or "generic".
std::expected<PriceSource::Format, std::string> ParsePriceFormat(std::string_view name);
std::string_view ToString(PriceSource::Format format);

// Loads `source.path` with the loader its format names.
std::expected<PriceSeries, LoadError> LoadPriceFeed(const PriceSource& source);

}  // namespace powerplane::grid
