#pragma once
// The fleet's grid side, shared by the admin API, the OpenADR VEN and the flex loop: grid events,
// the hashprice, and the FlexController's latest plans and actions per site. Thread-safe.

#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/flex.h"
#include "core/grid_event.h"

namespace powerplane::fleet {

// What the flex loop measured and decided for a site, for /admin/fleet and /metrics.
struct SiteGridStatus {
  core::SitePlan plan;
  double miners_kw = 0;         // the miners' draw now (0 when stopped).
  double generation_kw = 0;     // on-site generation now.
  double export_kw = 0;         // generation beyond the site's own draw, when it can export.
  double gas_kw = 0;            // on-site gas dispatched now.
  std::string marginal_source;  // where the next MWh comes from: "wind", "gas" or "grid".
  double grid_usd_per_mwh = 0;  // the node's price (the site's price is the marginal one).
  double mining_usd_per_mwh = 0;
  double usd_per_mwh = 0;
  std::deque<std::string> recent_actions;  // newest last, bounded.
  double seconds_above_target = 0;
  std::uint64_t actions_taken = 0;
};

class GridState {
 public:
  explicit GridState(double hashprice_usd_per_ph_day) : hashprice_(hashprice_usd_per_ph_day) {}

  // Adds an event (an id is assigned when empty); returns its id.
  std::string AddEvent(core::GridEvent event);
  bool DeleteEvent(const std::string& id);
  // Replaces every event from `source` (e.g. "openadr") with `events`.
  void ReplaceEvents(const std::string& source, std::vector<core::GridEvent> events);
  std::vector<core::GridEvent> Events() const;
  std::uint64_t events_received() const;

  void SetHashprice(double usd_per_ph_day);
  double hashprice() const;

  // Records the flex loop's result for a site; `actions` are appended with a time stamp.
  void Record(const std::string& site, SiteGridStatus status, const std::string& time_label,
              double dt_s);
  std::optional<SiteGridStatus> Status(const std::string& site) const;
  std::vector<core::SitePlan> Plans() const;

 private:
  mutable std::mutex mu_;
  std::vector<core::GridEvent> events_;
  std::uint64_t next_id_ = 1;
  std::uint64_t events_received_ = 0;
  double hashprice_;
  std::map<std::string, SiteGridStatus> sites_;
};

}  // namespace powerplane::fleet
