#include "fleet/grid_state.h"

#include <algorithm>

namespace powerplane::fleet {

std::string GridState::AddEvent(core::GridEvent event) {
  std::lock_guard lock(mu_);
  if (event.id.empty()) event.id = "admin-" + std::to_string(next_id_++);
  events_.erase(std::remove_if(events_.begin(), events_.end(),
                               [&](const core::GridEvent& e) { return e.id == event.id; }),
                events_.end());
  events_.push_back(event);
  ++events_received_;
  return event.id;
}

bool GridState::DeleteEvent(const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = std::remove_if(events_.begin(), events_.end(),
                           [&](const core::GridEvent& e) { return e.id == id; });
  const bool found = it != events_.end();
  events_.erase(it, events_.end());
  return found;
}

void GridState::ReplaceEvents(const std::string& source, std::vector<core::GridEvent> events) {
  std::lock_guard lock(mu_);
  std::vector<std::string> known;
  for (const auto& e : events_) {
    if (e.source == source) known.push_back(e.id);
  }
  events_.erase(std::remove_if(events_.begin(), events_.end(),
                               [&](const core::GridEvent& e) { return e.source == source; }),
                events_.end());
  for (auto& e : events) {
    e.source = source;
    if (std::find(known.begin(), known.end(), e.id) == known.end()) ++events_received_;
    events_.push_back(std::move(e));
  }
}

std::vector<core::GridEvent> GridState::Events() const {
  std::lock_guard lock(mu_);
  return events_;
}

std::uint64_t GridState::events_received() const {
  std::lock_guard lock(mu_);
  return events_received_;
}

void GridState::SetHashprice(double usd_per_ph_day) {
  std::lock_guard lock(mu_);
  hashprice_ = usd_per_ph_day;
}

double GridState::hashprice() const {
  std::lock_guard lock(mu_);
  return hashprice_;
}

void GridState::Record(const std::string& site, SiteGridStatus status,
                       const std::string& time_label, double dt_s) {
  constexpr std::size_t kRecentActions = 20;
  std::lock_guard lock(mu_);
  SiteGridStatus& s = sites_[site];
  auto recent = std::move(s.recent_actions);
  const double above = s.seconds_above_target;
  const std::uint64_t taken = s.actions_taken;
  for (const auto& a : status.plan.actions) {
    recent.push_back(time_label + " " + a);
    if (recent.size() > kRecentActions) recent.pop_front();
  }
  const bool above_now = status.plan.event && status.plan.event->ramp_s >= 0 &&
                         status.plan.import_kw > status.plan.budget_kw + 1e-9;
  const std::uint64_t new_actions = status.plan.actions.size();
  s = std::move(status);
  s.recent_actions = std::move(recent);
  s.seconds_above_target = above + (above_now ? dt_s : 0);
  s.actions_taken = taken + new_actions;
}

std::optional<SiteGridStatus> GridState::Status(const std::string& site) const {
  std::lock_guard lock(mu_);
  auto it = sites_.find(site);
  if (it == sites_.end()) return std::nullopt;
  return it->second;
}

std::vector<core::SitePlan> GridState::Plans() const {
  std::lock_guard lock(mu_);
  std::vector<core::SitePlan> out;
  for (const auto& [id, s] : sites_) out.push_back(s.plan);
  return out;
}

}  // namespace powerplane::fleet
