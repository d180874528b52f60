#include "grid/time.h"

#include <fmt/format.h>

#include <cstdint>

namespace powerplane::grid {
namespace {

using std::chrono::days;
using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;
using std::chrono::sys_days;

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Reads exactly `n` decimal digits at `pos`; advances `pos`. False if any is not a digit.
bool ReadDigits(std::string_view s, std::size_t& pos, int n, int* out) {
  if (pos + static_cast<std::size_t>(n) > s.size()) return false;
  int v = 0;
  for (int i = 0; i < n; ++i) {
    const char c = s[pos + static_cast<std::size_t>(i)];
    if (!IsDigit(c)) return false;
    v = v * 10 + (c - '0');
  }
  pos += static_cast<std::size_t>(n);
  *out = v;
  return true;
}

// The n-th (1-based) given weekday of a month, or the last one when n == 0.
sys_days NthWeekday(std::chrono::year y, std::chrono::month m, std::chrono::weekday wd,
                    unsigned n) {
  if (n == 0) return sys_days{y / m / wd[std::chrono::last]};
  return sys_days{y / m / wd[n]};
}

std::chrono::year YearOf(UtcTime t) {
  return std::chrono::year_month_day{std::chrono::floor<days>(t)}.year();
}

std::string FormatLocal(LocalTime local) {
  return FormatUtc(UtcTime{local.time_since_epoch()}).substr(0, 19);
}

// Shared local-to-UTC conversion for a zone with a standard and a daylight offset.
template <typename OffsetFn>
std::expected<UtcTime, std::string> LocalToUtc(LocalTime local, seconds standard, seconds daylight,
                                               OffsetFn offset_at, Ambiguity ambiguity,
                                               std::string_view zone) {
  const UtcTime as_daylight{local.time_since_epoch() - daylight};
  const UtcTime as_standard{local.time_since_epoch() - standard};
  const bool daylight_ok = offset_at(as_daylight) == daylight;
  const bool standard_ok = offset_at(as_standard) == standard;
  if (daylight_ok && standard_ok) {
    return ambiguity == Ambiguity::kEarlier ? std::min(as_daylight, as_standard)
                                            : std::max(as_daylight, as_standard);
  }
  if (daylight_ok) return as_daylight;
  if (standard_ok) return as_standard;
  return std::unexpected(fmt::format("{} {} does not exist (skipped when the clocks went forward)",
                                     FormatLocal(local), zone));
}

}  // namespace

bool ParseIsoDate(std::string_view text, std::chrono::year_month_day* out) {
  std::size_t pos = 0;
  int y = 0, m = 0, d = 0;
  if (!ReadDigits(text, pos, 4, &y) || pos >= text.size() || text[pos++] != '-' ||
      !ReadDigits(text, pos, 2, &m) || pos >= text.size() || text[pos++] != '-' ||
      !ReadDigits(text, pos, 2, &d) || pos != text.size()) {
    return false;
  }
  const std::chrono::year_month_day ymd{std::chrono::year{y},
                                        std::chrono::month{static_cast<unsigned>(m)},
                                        std::chrono::day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) return false;
  *out = ymd;
  return true;
}

std::expected<UtcTime, std::string> ParseUtcTimestamp(std::string_view text) {
  if (text.size() < 10) {
    return std::unexpected("'" + std::string(text) +
                           "' is not a timestamp: expected ISO 8601, e.g. 2026-11-28T12:00:00Z");
  }
  std::chrono::year_month_day ymd{};
  if (!ParseIsoDate(text.substr(0, 10), &ymd)) {
    return std::unexpected(std::string("expected a date YYYY-MM-DD"));
  }
  UtcTime t{sys_days{ymd}};
  std::size_t pos = 10;
  if (pos == text.size()) return t;

  const char sep = text[pos++];
  if (sep != 'T' && sep != 't' && sep != ' ') {
    return std::unexpected(std::string("expected 'T' or ' ' between date and time"));
  }
  int hh = 0, mm = 0, ss = 0;
  if (!ReadDigits(text, pos, 2, &hh) || pos >= text.size() || text[pos++] != ':' ||
      !ReadDigits(text, pos, 2, &mm)) {
    return std::unexpected(std::string("expected a time HH:MM[:SS]"));
  }
  if (pos < text.size() && text[pos] == ':') {
    ++pos;
    if (!ReadDigits(text, pos, 2, &ss)) return std::unexpected(std::string("expected seconds SS"));
    if (pos < text.size() && (text[pos] == '.' || text[pos] == ',')) {
      ++pos;
      const std::size_t start = pos;
      while (pos < text.size() && IsDigit(text[pos])) ++pos;
      if (pos == start) return std::unexpected(std::string("expected digits after '.'"));
    }
  }
  if (hh > 23 || mm > 59 || ss > 59) {
    return std::unexpected(std::string("time of day out of range"));
  }
  t += hours{hh} + minutes{mm} + seconds{ss};
  if (pos == text.size()) return t;  // no zone: UTC

  const char zone = text[pos++];
  if (zone == 'Z' || zone == 'z') {
    if (pos != text.size()) return std::unexpected(std::string("unexpected text after 'Z'"));
    return t;
  }
  if (zone != '+' && zone != '-') {
    return std::unexpected(std::string("expected 'Z' or a UTC offset like +02:00"));
  }
  int oh = 0, om = 0;
  if (!ReadDigits(text, pos, 2, &oh)) {
    return std::unexpected(std::string("expected a UTC offset like +02:00"));
  }
  if (pos < text.size()) {
    if (text[pos] == ':') ++pos;
    if (!ReadDigits(text, pos, 2, &om) || pos != text.size()) {
      return std::unexpected(std::string("expected a UTC offset like +02:00"));
    }
  }
  if (oh > 23 || om > 59) return std::unexpected(std::string("UTC offset out of range"));
  const seconds offset = hours{oh} + minutes{om};
  // Local = UTC + offset, so UTC = local - offset.
  return zone == '+' ? t - offset : t + offset;
}

std::string FormatUtc(UtcTime t) {
  const sys_days day = std::chrono::floor<days>(t);
  const std::chrono::year_month_day ymd{day};
  const std::chrono::hh_mm_ss hms{t - day};
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", static_cast<int>(ymd.year()),
                     static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                     hms.hours().count(), hms.minutes().count(), hms.seconds().count());
}

// ---- US Central ----

UtcTime UsCentralDaylightStart(std::chrono::year y) {
  // 02:00 CST = 08:00 UTC.
  return UtcTime{NthWeekday(y, std::chrono::March, std::chrono::Sunday, 2)} + hours{8};
}

UtcTime UsCentralDaylightEnd(std::chrono::year y) {
  // 02:00 CDT = 07:00 UTC.
  return UtcTime{NthWeekday(y, std::chrono::November, std::chrono::Sunday, 1)} + hours{7};
}

bool IsUsCentralDaylight(UtcTime t) {
  const std::chrono::year y = YearOf(t);
  return t >= UsCentralDaylightStart(y) && t < UsCentralDaylightEnd(y);
}

std::chrono::seconds UsCentralUtcOffset(UtcTime t) {
  return IsUsCentralDaylight(t) ? hours{-5} : hours{-6};
}

LocalTime UtcToUsCentral(UtcTime t) {
  return LocalTime{t.time_since_epoch() + UsCentralUtcOffset(t)};
}

std::expected<UtcTime, std::string> UsCentralToUtc(LocalTime local, Ambiguity ambiguity) {
  return LocalToUtc(local, hours{-6}, hours{-5}, UsCentralUtcOffset, ambiguity, "CPT");
}

// ---- Central Europe ----

UtcTime CentralEuropeSummerStart(std::chrono::year y) {
  return UtcTime{NthWeekday(y, std::chrono::March, std::chrono::Sunday, 0)} + hours{1};
}

UtcTime CentralEuropeSummerEnd(std::chrono::year y) {
  return UtcTime{NthWeekday(y, std::chrono::October, std::chrono::Sunday, 0)} + hours{1};
}

bool IsCentralEuropeSummer(UtcTime t) {
  const std::chrono::year y = YearOf(t);
  return t >= CentralEuropeSummerStart(y) && t < CentralEuropeSummerEnd(y);
}

std::chrono::seconds CentralEuropeUtcOffset(UtcTime t) {
  return IsCentralEuropeSummer(t) ? hours{2} : hours{1};
}

LocalTime UtcToCentralEurope(UtcTime t) {
  return LocalTime{t.time_since_epoch() + CentralEuropeUtcOffset(t)};
}

std::expected<UtcTime, std::string> CentralEuropeToUtc(LocalTime local, Ambiguity ambiguity) {
  return LocalToUtc(local, hours{1}, hours{2}, CentralEuropeUtcOffset, ambiguity, "CET/CEST");
}

}  // namespace powerplane::grid
