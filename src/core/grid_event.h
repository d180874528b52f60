#pragma once
// A grid event: for a window of time, a site may draw at most `target_kw` from the grid. It comes
// from an operator (the admin API), a utility's OpenADR 3 VTN, or a market dispatch. Times are
// UTC seconds since the epoch, passed in like every time in core.

#include <cstdint>
#include <string>

namespace powerplane::core {

struct GridEvent {
  std::string id;          // unique per source, e.g. "admin-3" or the VTN's event id.
  std::string site;        // the site it targets.
  double target_kw = 0;    // the most the site may import once the ramp is over.
  std::int64_t start_s = 0;     // UTC seconds since the epoch.
  std::int64_t duration_s = 0;  // 0 = until cancelled.
  std::int64_t ramp_s = 0;      // how long the site has to get under the target.
  std::string source;      // "admin", "openadr", ...

  // Active at `now_s`: started and not ended.
  bool ActiveAt(std::int64_t now_s) const {
    return now_s >= start_s && (duration_s <= 0 || now_s < start_s + duration_s);
  }
  // The target is binding (the ramp is over) at `now_s`.
  bool BindingAt(std::int64_t now_s) const { return ActiveAt(now_s) && now_s >= start_s + ramp_s; }
};

}  // namespace powerplane::core
