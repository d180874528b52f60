#include "core/fleet_usage.h"

#include <algorithm>
#include <unordered_set>

namespace powerplane::core {

void FleetUsage::Took(const std::string& tenant, double requests, double tokens) {
  UsageTotals& t = mine_[tenant];
  t.requests += requests;
  t.tokens += tokens;
}

std::vector<MemberUsage> FleetUsage::ToPublish() const {
  std::vector<MemberUsage> out;
  out.push_back({member_, domain_, "", {}, started_ms_});  // the heartbeat: this member is alive.
  for (const auto& [tenant, totals] : mine_) {
    auto it = published_.find(tenant);
    if (it != published_.end() && it->second.requests == totals.requests &&
        it->second.tokens == totals.tokens) {
      continue;
    }
    out.push_back({member_, domain_, tenant, totals, started_ms_});
  }
  return out;
}

void FleetUsage::Published(const std::vector<MemberUsage>& rows) {
  for (const auto& r : rows) {
    if (!r.tenant.empty()) published_[r.tenant] = r.totals;
  }
}

std::unordered_map<std::string, UsageTotals> FleetUsage::Absorb(
    std::span<const MemberUsage> rows) {
  // The members of this domain that are alive share what the others took.
  std::int64_t newest_ms = 0;
  for (const auto& r : rows) newest_ms = std::max(newest_ms, r.updated_ms);
  std::unordered_set<std::string> mates{member_}, present;
  for (const auto& r : rows) {
    if (r.member == member_) continue;
    if (r.domain == domain_) {
      if (r.tenant.empty() && r.updated_ms >= newest_ms - kMateLiveMs) mates.insert(r.member);
    } else {
      present.insert(r.member);
    }
  }
  const double share = 1.0 / static_cast<double>(mates.size());
  // After a long gap (this member's reads failed), everyone starts afresh.
  const bool after_gap = baseline_taken_ && newest_ms - last_newest_ms_ > kFreshAfterMs;
  std::unordered_set<std::string> fresh;  // members first seen now, or back after a while.
  for (const auto& m : present) {
    auto it = others_.find(m);
    if (it == others_.end() || it->second.looks_absent > kFreshAfterLooks) fresh.insert(m);
  }
  std::unordered_map<std::string, UsageTotals> charge;
  for (const auto& r : rows) {
    if (r.member == member_ || r.domain == domain_ || r.tenant.empty()) continue;
    const bool starting_point = !baseline_taken_ || after_gap || fresh.contains(r.member);
    UsageTotals& last = others_[r.member].tenants[r.tenant];
    if (!starting_point) {
      UsageTotals& c = charge[r.tenant];
      c.requests += (r.totals.requests - last.requests) * share;
      c.tokens += (r.totals.tokens - last.tokens) * share;
    }
    last = r.totals;
  }
  for (const auto& m : present) others_[m].looks_absent = 0;
  for (const auto& r : rows) {
    if (r.tenant.empty() && r.member != member_ && r.domain != domain_) {
      auto& heartbeat_ms = others_[r.member].heartbeat_ms;
      heartbeat_ms = std::max(heartbeat_ms, r.updated_ms);
    }
  }
  for (auto it = others_.begin(); it != others_.end();) {
    if (!present.contains(it->first) && ++it->second.looks_absent > kForgetAfterLooks) {
      it = others_.erase(it);
    } else {
      ++it;
    }
  }
  baseline_taken_ = true;
  if (newest_ms > 0) last_newest_ms_ = newest_ms;
  std::erase_if(charge, [](const auto& kv) {
    return kv.second.requests == 0 && kv.second.tokens == 0;
  });
  return charge;
}

std::size_t FleetUsage::peers(std::int64_t live_ms) const {
  return static_cast<std::size_t>(std::ranges::count_if(others_, [&](const auto& kv) {
    return kv.second.heartbeat_ms >= last_newest_ms_ - live_ms;
  }));
}

}  // namespace powerplane::core
