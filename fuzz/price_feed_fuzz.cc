// Fuzz target for the price file parsers (untrusted bytes). Input layout: the first byte is a
// control byte, the rest is the file text, given to all three parsers (ERCOT, DE-LU, generic) and,
// its first line, to ParseUtcTimestamp. Control byte: bit 0 picks the ERCOT column ("HB_NORTH_RTM"
// when 0, "P" when 1; the seeds start with the printable '0' or '1'); bits 1-7 set usd_per_eur.
// Errors are fine; a crash, a sanitizer report or a broken invariant (trap) is a bug.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "grid/price_loaders.h"
#include "grid/time.h"

namespace {

using powerplane::grid::LoadError;
using powerplane::grid::PriceSeries;
using powerplane::grid::UtcTime;

void Require(bool ok) {
  if (!ok) __builtin_trap();
}

void Check(const std::expected<PriceSeries, LoadError>& result) {
  if (!result.has_value()) {
    const LoadError& e = result.error();
    Require(e.file == "fuzz" && e.line >= 0 && e.column >= 0 && !e.message.empty());
    Require(!e.ToString().empty());
    return;
  }
  const PriceSeries& s = *result;
  Require(!s.empty());
  const auto points = s.points();
  for (std::size_t i = 0; i < points.size(); ++i) {
    Require(std::isfinite(points[i].usd_per_mwh));
    if (i > 0) Require(points[i - 1].start < points[i].start);
  }
  Require(s.UsdPerMwhAt(s.front()) == points.front().usd_per_mwh);
  Require(s.UsdPerMwhAt(s.back()) == points.back().usd_per_mwh);
  Require(s.UsdPerMwhAt(s.front() - std::chrono::hours{1}) == points.front().usd_per_mwh);
  Require(s.UsdPerMwhAt(s.back() + std::chrono::hours{1}) == points.back().usd_per_mwh);
  (void)s.Mean();  // may overflow to infinity for huge prices; must not crash.
}

void CheckTimestamp(std::string_view line) {
  const auto t = powerplane::grid::ParseUtcTimestamp(line);
  if (!t.has_value()) {
    Require(!t.error().empty());
    return;
  }
  // Round trip within the years FormatUtc writes as four digits.
  const auto year = std::chrono::year_month_day{std::chrono::floor<std::chrono::days>(*t)}.year();
  if (year < std::chrono::year{0} || year > std::chrono::year{9999}) return;
  const std::string formatted = powerplane::grid::FormatUtc(*t);
  const auto again = powerplane::grid::ParseUtcTimestamp(formatted);
  Require(again.has_value() && *again == *t);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t control = data[0];
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::string_view column = (control & 1) != 0 ? "P" : "HB_NORTH_RTM";
  const double usd_per_eur = 0.5 + static_cast<double>(control >> 1) / 64.0;

  Check(powerplane::grid::ParseErcotCsv(text, "fuzz", column));
  Check(powerplane::grid::ParseDeLuCsv(text, "fuzz", usd_per_eur));
  Check(powerplane::grid::ParseGenericPriceCsv(text, "fuzz"));
  CheckTimestamp(text.substr(0, text.find('\n')));
  return 0;
}
