#pragma once
// OpenADR 3 event documents -> core::GridEvents. Pure functions over untrusted bytes (a VTN's
// `GET /events` answer): they never throw and never crash, and every error names what was wrong.
// Thread-safe.

#include <cstddef>
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>
#include <vector>

#include "core/grid_event.h"

namespace powerplane::openadr {

// The payload type whose values[0] is the most a site may import (kW unless the event's
// payloadDescriptors give other units).
inline constexpr std::string_view kImportCapacityLimit = "IMPORT_CAPACITY_LIMIT";
// The GridEvent.source of every event parsed here.
inline constexpr std::string_view kSourceOpenAdr = "openadr";
// Durations at or above this are the spec's "infinity" (`P9999Y`): the GridEvent gets
// duration_s = 0, "until cancelled".
inline constexpr std::int64_t kInfiniteDurationS = 9999LL * 365 * 86400;
// The largest duration accepted at all (10,000 nominal years).
inline constexpr std::int64_t kMaxDurationS = 10000LL * 365 * 86400;

// Parses an ISO 8601 duration as OpenADR 3 writes them (`PT1H`, `PT30M`, `P1D`, `P1DT2H30M`,
// `PT0.5S`, `-PT5M`, `P2W`) into seconds. Years and months have no fixed length, so they count as
// 365 and 30 days (nominal). Fractional seconds are truncated; only the seconds field may have a
// fraction. The error says what is wrong (empty, no `P`, a designator out of order, a number
// without a designator, `T` with nothing after it, too large...).
std::expected<std::int64_t, std::string> ParseIsoDuration(std::string_view text);

// Formats whole seconds as an ISO 8601 duration: 0 -> `PT0S`, 5400 -> `PT1H30M`,
// 90000 -> `P1DT1H`; negative values get a leading `-`.
std::string FormatIsoDuration(std::int64_t seconds);

struct ParseOptions {
  // What the spec's start "0001-01-01" ("now") means: UTC seconds since the epoch.
  std::int64_t now_s = 0;
  // Ramp given to every GridEvent: OpenADR 3 events carry no ramp, so this is the site's own.
  // It is cut to the interval's duration when that is shorter (so the target binds at all).
  std::int64_t default_ramp_s = 60;
};

// One VTN event that produced grid events.
struct EventSummary {
  std::string id;                  // the VTN's event id.
  std::string program_id;          // its programID (reports name both).
  std::vector<std::string> sites;  // the sites it targets, in document order, no duplicates.
  // Its grid events: grid_events[first_grid_event, first_grid_event + grid_event_count).
  std::size_t first_grid_event = 0;
  std::size_t grid_event_count = 0;
};

struct ParsedEvents {
  // One per (capacity-limited interval, targeted site). id = "<eventID>/<interval id>", or
  // "<eventID>/<interval id>@<site>" when the event targets more than one site. source "openadr".
  std::vector<core::GridEvent> grid_events;
  std::vector<EventSummary> events;  // the events behind grid_events, in document order.
  int bad_events = 0;                // malformed events (skipped whole).
  int ignored_events = 0;  // well-formed but not ours: no site target or no capacity limit.
  // Ids of the malformed events that had a readable id (a VEN may keep their last good form).
  std::vector<std::string> bad_event_ids;
  // Why events were bad: the first few messages, each naming the event and the field.
  std::vector<std::string> errors;
};

// Parses a `GET /events` body: a JSON array of event objects. Fails only when the document as a
// whole is unusable (not JSON, not an array); malformed events inside it are counted and skipped.
//
// Timing (the spec: the event's intervalPeriod "sets default start time and duration of
// intervals"; an interval's own intervalPeriod "may set temporal aspects of interval or override
// event.intervalPeriod"): intervals are consecutive in array order. Interval i starts where
// interval i-1 ended (the first at the event's start), unless its own intervalPeriod gives a start;
// it lasts its own duration, else the event's. With no overrides, interval i covers
// [start + i x duration, start + (i+1) x duration). A start of `0001-01-01` means `now_s`; a
// missing duration (the spec's default PT0S) and `P9999Y` mean "until cancelled" (duration_s 0).
// randomizeStart and the event-level `duration` (interval looping) are ignored.
std::expected<ParsedEvents, std::string> ParseEvents(std::string_view json,
                                                     const ParseOptions& options);

}  // namespace powerplane::openadr
