#pragma once
// Time conventions of the grid module: every instant is UTC (`UtcTime`); local market time exists
// only at the edges (file formats) and is converted by the hand-written zone rules below, because
// g++ 12 has no usable tzdb. Pure functions; thread-safe.

#include <chrono>
#include <expected>
#include <string>
#include <string_view>

namespace powerplane::grid {

// An instant, UTC, whole seconds.
using UtcTime = std::chrono::sys_seconds;
// A wall-clock reading in some named zone (no offset attached).
using LocalTime = std::chrono::local_seconds;

// Parses an ISO 8601 timestamp: `2024-08-19T00:00:00Z`, `2024-08-19T00:00:00+02:00` (also `+0200`,
// `+02`), `2024-08-19 00:00:00` (no zone means UTC), `2024-08-19T00:00` and `2024-08-19` (midnight
// UTC). Fractional seconds are accepted and dropped (truncated). Leading/trailing spaces are not
// accepted. The error says what is wrong, without the input.
std::expected<UtcTime, std::string> ParseUtcTimestamp(std::string_view text);

// Formats as `2024-08-19T00:00:00Z`.
std::string FormatUtc(UtcTime t);

// Parses a calendar date `YYYY-MM-DD`; false when malformed or not a real date.
bool ParseIsoDate(std::string_view text, std::chrono::year_month_day* out);

// Which occurrence of a local time to pick when the clock goes back and the hour repeats.
enum class Ambiguity {
  kEarlier,  // the first occurrence (still daylight time)
  kLater,    // the second occurrence (already standard time)
};

// US Central Prevailing Time (ERCOT's clock): CST = UTC-6, CDT = UTC-5. US rules since 2007,
// applied to every year: daylight time from the second Sunday of March 02:00 local standard time
// (08:00 UTC) to the first Sunday of November 02:00 local daylight time (07:00 UTC).
UtcTime UsCentralDaylightStart(std::chrono::year y);  // second Sunday of March, 08:00 UTC
UtcTime UsCentralDaylightEnd(std::chrono::year y);    // first Sunday of November, 07:00 UTC
bool IsUsCentralDaylight(UtcTime t);
std::chrono::seconds UsCentralUtcOffset(UtcTime t);  // -6 h or -5 h
LocalTime UtcToUsCentral(UtcTime t);
// Converts a Central Prevailing wall time to UTC. Fails for a wall time in the spring-forward gap
// (02:00-03:00 on the second Sunday of March does not exist); for the repeated hour in November
// (01:00-02:00) `ambiguity` picks the CDT or the CST occurrence.
std::expected<UtcTime, std::string> UsCentralToUtc(LocalTime local,
                                                   Ambiguity ambiguity = Ambiguity::kEarlier);

// Central European Time: CET = UTC+1, CEST = UTC+2. EU rules (since 1996), applied to every year:
// summer time from the last Sunday of March 01:00 UTC to the last Sunday of October 01:00 UTC.
UtcTime CentralEuropeSummerStart(std::chrono::year y);
UtcTime CentralEuropeSummerEnd(std::chrono::year y);
bool IsCentralEuropeSummer(UtcTime t);
std::chrono::seconds CentralEuropeUtcOffset(UtcTime t);  // +1 h or +2 h
LocalTime UtcToCentralEurope(UtcTime t);
// Converts a CET/CEST wall time to UTC; same gap and ambiguity rules as UsCentralToUtc (the gap is
// 02:00-03:00 on the last Sunday of March, the repeat 02:00-03:00 on the last Sunday of October).
std::expected<UtcTime, std::string> CentralEuropeToUtc(LocalTime local,
                                                       Ambiguity ambiguity = Ambiguity::kEarlier);

}  // namespace powerplane::grid
