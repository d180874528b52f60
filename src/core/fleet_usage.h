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
#include <limits>
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
// `started_ms`: when the member started (its clock; for whoever reads the table); `updated_ms`:
// when the row was written (the store's clock; ignored when publishing).
struct MemberUsage {
  std::string member;
  std::string domain;
  std::string tenant;
  UsageTotals totals;
  std::int64_t started_ms = 0;
  std::int64_t updated_ms = 0;
};

// Two halves with their own state: Took, ToPublish, Published and PublishAllAgain (this member's
// totals; the caller serialises them with the request path), and Absorb (what the others took;
// one caller, the poller, needs no lock against the first half).
class FleetUsage {
 public:
  // A member absent from this many Absorb calls in a row is forgotten (with what it took).
  static constexpr int kForgetAfterLooks = 600;
  // A member back after this many absent calls, or every member after this long (store clock)
  // without a call, starts afresh: what piled up meanwhile is not charged at once.
  static constexpr int kFreshAfterLooks = 60;
  static constexpr std::int64_t kFreshAfterMs = 60'000;
  // A member of this domain counts as live while its heartbeat is at most this much older than
  // the newest row read.
  static constexpr std::int64_t kMateLiveMs = 3000;

  FleetUsage(std::string member, std::string domain, std::int64_t started_ms)
      : member_(std::move(member)), domain_(std::move(domain)), started_ms_(started_ms) {}

  const std::string& member() const { return member_; }
  const std::string& domain() const { return domain_; }
  // The processes sharing this member's buckets (set before any Absorb).
  void set_domain(std::string domain) { domain_ = std::move(domain); }

  // This member took `requests` and `tokens` from `tenant` (negative: gave back).
  void Took(const std::string& tenant, double requests, double tokens);
  // This member's totals that changed since they were last published, and its heartbeat
  // (tenant ""). Published records them once the store has them; PublishAllAgain makes the next
  // ToPublish give every total (after a failed write, so nothing the store missed stays unsaid).
  std::vector<MemberUsage> ToPublish() const;
  void Published(const std::vector<MemberUsage>& rows);
  void PublishAllAgain() { published_.clear(); }

  // The rows read from the store (every member's, this one's included). Returns, per tenant,
  // what the other domains took since the last call, as this member's share (its domain's live
  // members split it). Where a member's totals are first seen they are a starting point, not a
  // charge: at the first call, for a member seen for the first time (a gateway that started
  // since, or is back from a partition: what it took before it was seen, at most its first
  // second for a new one, is not charged), and after a gap (kFreshAfterLooks,
  // kFreshAfterMs). A tenant a known member began to serve since counts from zero.
  std::unordered_map<std::string, UsageTotals> Absorb(std::span<const MemberUsage> rows);
  // The live members of other domains whose use this member counts: those whose heartbeat, as
  // of the last Absorb call, is at most `live_ms` older than the newest row it read (store
  // clock). A member that stopped stays known until it is forgotten (kForgetAfterLooks), but is
  // not live once its heartbeat is that old.
  std::size_t peers(std::int64_t live_ms) const;

 private:
  struct Seen {
    std::unordered_map<std::string, UsageTotals> tenants;
    int looks_absent = 0;
    std::int64_t heartbeat_ms = std::numeric_limits<std::int64_t>::min();  // none read yet.
  };
  std::string member_, domain_;
  std::int64_t started_ms_;
  std::int64_t last_newest_ms_ = 0;  // the newest row of the last call.
  std::unordered_map<std::string, UsageTotals> mine_;
  std::unordered_map<std::string, UsageTotals> published_;
  std::unordered_map<std::string, Seen> others_;  // by member, other domains only.
  bool baseline_taken_ = false;
};

}  // namespace powerplane::core
