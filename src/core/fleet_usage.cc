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
  std::unordered_set<std::string> fresh;  // members not known before this call.
  for (const auto& m : present) {
    if (!others_.contains(m)) fresh.insert(m);
  }
  std::unordered_map<std::string, UsageTotals> charge;
  for (const auto& r : rows) {
    if (r.member == member_ || r.domain == domain_ || r.tenant.empty()) continue;
    // Where a total is first seen, it is a starting point: at the first look, and for a member
    // first seen now that started before this one. Otherwise it counts from zero (a tenant the
    // member began to serve since, or a member that started since).
    const bool starting_point =
        !baseline_taken_ || (fresh.contains(r.member) && r.started_ms < started_ms_);
    UsageTotals& last = others_[r.member].tenants[r.tenant];
    if (!starting_point) {
      UsageTotals& c = charge[r.tenant];
      c.requests += (r.totals.requests - last.requests) * share;
      c.tokens += (r.totals.tokens - last.tokens) * share;
    }
    last = r.totals;
  }
  for (const auto& m : present) others_[m].looks_absent = 0;
  for (auto it = others_.begin(); it != others_.end();) {
    if (!present.contains(it->first) && ++it->second.looks_absent > kForgetAfterLooks) {
      it = others_.erase(it);
    } else {
      ++it;
    }
  }
  baseline_taken_ = true;
  std::erase_if(charge, [](const auto& kv) {
    return kv.second.requests == 0 && kv.second.tokens == 0;
  });
  return charge;
}

}  // namespace powerplane::core
