// Fuzz target for the OpenADR 3 events parser (a VTN's GET /events body: untrusted bytes). The
// whole input is the body; its first line is also given to ParseIsoDuration. Errors are fine; a
// crash, a sanitizer report or a broken invariant (trap) is a bug.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "openadr/events.h"

namespace {

using powerplane::openadr::ParsedEvents;

void Require(bool ok) {
  if (!ok) __builtin_trap();
}

void Check(const ParsedEvents& p, std::int64_t ramp_s) {
  Require(p.bad_events >= 0 && p.ignored_events >= 0);
  Require(p.bad_event_ids.size() <= static_cast<std::size_t>(p.bad_events));
  Require(p.errors.size() <= static_cast<std::size_t>(p.bad_events));
  Require(p.bad_events == 0 || !p.errors.empty());
  std::size_t covered = 0;
  for (const auto& e : p.events) {
    Require(!e.id.empty() && !e.program_id.empty() && !e.sites.empty());
    Require(e.first_grid_event == covered && e.grid_event_count > 0);
    covered += e.grid_event_count;
    Require(covered <= p.grid_events.size());
  }
  Require(covered == p.grid_events.size());
  for (const auto& g : p.grid_events) {
    Require(!g.id.empty() && !g.site.empty() && g.source == "openadr");
    Require(std::isfinite(g.target_kw) && g.target_kw >= 0);
    Require(g.duration_s >= 0 && g.ramp_s >= 0 && g.ramp_s <= ramp_s);
    Require(g.duration_s == 0 || g.ramp_s <= g.duration_s);
  }
}

void CheckDuration(std::string_view text) {
  const auto d = powerplane::openadr::ParseIsoDuration(text);
  if (!d) {
    Require(!d.error().empty());
    return;
  }
  Require(*d >= -powerplane::openadr::kMaxDurationS && *d <= powerplane::openadr::kMaxDurationS);
  const auto again =
      powerplane::openadr::ParseIsoDuration(powerplane::openadr::FormatIsoDuration(*d));
  Require(again.has_value() && *again == *d);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  powerplane::openadr::ParseOptions options;
  options.now_s = 1'724'025'600;  // 2024-08-19T00:00:00Z
  options.default_ramp_s = 60;
  const auto parsed = powerplane::openadr::ParseEvents(text, options);
  if (parsed) {
    Check(*parsed, options.default_ramp_s);
  } else {
    Require(!parsed.error().empty());
  }
  CheckDuration(text.substr(0, text.find('\n')));
  return 0;
}
