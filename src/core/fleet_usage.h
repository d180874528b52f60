#pragma once
// Tenants' per-minute limits held across gateways that share one store, pure. Each gateway
// process (a member) keeps running totals of what it took from each tenant's buckets (requests
// and tokens, net of what it gave back) and publishes them; each charges its own buckets with
// what the other members took since it last looked. A tenant is then held to about one limit
// across the fleet, late by the time between looks. Reading and writing the store, and the
// clock, stay with the caller (gateway/tenancy.cc).
//
// Members that already share their buckets (several processes on one host with one rate-limit
// table) form a domain: they do not charge each other, and what another domain took is charged
// a share by each of them (1/K with K of them live), so the shared table is charged once.

#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace powerplane::core {

struct UsageTotals {
  double requests = 0;
  double tokens = 0;
};

// One member's published totals for one tenant; an empty tenant is the member's heartbeat.
struct MemberUsage {
  std::string member;
  std::string domain;
  std::string tenant;
  UsageTotals totals;
};

class FleetUsage {
 public:
  // A member absent from this many Absorb calls in a row is forgotten (with what it took).
  static constexpr int kForgetAfterLooks = 600;

  FleetUsage(std::string member, std::string domain)
      : member_(std::move(member)), domain_(std::move(domain)) {}

  const std::string& member() const { return member_; }
  const std::string& domain() const { return domain_; }

  // This member took `requests` and `tokens` from `tenant` (negative: gave back).
  void Took(const std::string& tenant, double requests, double tokens);
  // This member's totals changed since the last call, to publish, and its heartbeat (tenant "").
  std::vector<MemberUsage> ToPublish();

  // The rows read from the store (every member's, this one's included). Returns, per tenant,
  // what the other domains took since the last call, as this member's share. The first call
  // only records where everyone stands: what was taken before this member started is not its
  // to charge.
  std::unordered_map<std::string, UsageTotals> Absorb(std::span<const MemberUsage> rows);

 private:
  struct Seen {
    std::unordered_map<std::string, UsageTotals> tenants;
    int looks_absent = 0;
  };
  std::string member_, domain_;
  std::unordered_map<std::string, UsageTotals> mine_;
  std::unordered_map<std::string, UsageTotals> published_;
  std::unordered_map<std::string, Seen> others_;  // by member, other domains only.
  bool baseline_taken_ = false;
};

}  // namespace powerplane::core
