#include "core/fleet_usage.h"

#include <unordered_set>

namespace powerplane::core {

void FleetUsage::Took(const std::string& tenant, double requests, double tokens) {
  UsageTotals& t = mine_[tenant];
  t.requests += requests;
  t.tokens += tokens;
}

std::vector<MemberUsage> FleetUsage::ToPublish() {
  std::vector<MemberUsage> out;
  out.push_back({member_, domain_, "", {}});  // the heartbeat: this member is alive.
  for (const auto& [tenant, totals] : mine_) {
    auto [it, fresh] = published_.try_emplace(tenant, totals);
    if (!fresh) {
      if (it->second.requests == totals.requests && it->second.tokens == totals.tokens) continue;
      it->second = totals;
    }
    out.push_back({member_, domain_, tenant, totals});
  }
  return out;
}

std::unordered_map<std::string, UsageTotals> FleetUsage::Absorb(
    std::span<const MemberUsage> rows) {
  // The members of this domain that are alive share what the others took.
  std::unordered_set<std::string> mates{member_}, present;
  for (const auto& r : rows) {
    if (r.member == member_) continue;
    if (r.domain == domain_) {
      if (r.tenant.empty()) mates.insert(r.member);
    } else {
      present.insert(r.member);
    }
  }
  const double share = 1.0 / static_cast<double>(mates.size());
  std::unordered_map<std::string, UsageTotals> charge;
  for (const auto& r : rows) {
    if (r.member == member_ || r.domain == domain_ || r.tenant.empty()) continue;
    Seen& seen = others_[r.member];
    auto it = seen.tenants.try_emplace(r.tenant).first;  // new: from zero.
    if (baseline_taken_) {
      UsageTotals& c = charge[r.tenant];
      c.requests += (r.totals.requests - it->second.requests) * share;
      c.tokens += (r.totals.tokens - it->second.tokens) * share;
    }
    it->second = r.totals;
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
