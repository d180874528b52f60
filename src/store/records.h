#pragma once
// The values the tenancy store holds: tenants, API keys (hashed), ledger rows, usage sums and
// audit entries. Plain values; times are unix milliseconds, UTC.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace powerplane::store {

struct TenantRecord {
  std::string id;
  std::vector<std::string> jurisdictions;   // empty = any. No entry may be empty or hold a ','.
  std::string priority_class = "standard";  // "interactive" | "standard" | "batch".
  std::int64_t latency_target_ms = 0;       // 0 = no target.
  std::int64_t rpm = 0;                     // requests per minute; 0 = unlimited.
  std::int64_t tpm = 0;                     // tokens per minute; 0 = unlimited.
  double budget_usd = 0;                    // 0 = no budget.
  std::string budget_period = "none";       // "day" | "month" | "none".

  bool operator==(const TenantRecord&) const = default;
};

// Why `tenant` cannot be stored (empty id, unknown class or period, negative limits, a bad
// jurisdiction), or nullopt when it can.
std::optional<std::string> TenantError(const TenantRecord& tenant);

// An API key as stored: only the lower-case hex SHA-256 of the whole key text, never the key.
struct KeyRecord {
  std::string id;  // "key_" + 12 hex digits for generated keys.
  std::string tenant;
  std::string key_sha256;
  std::int64_t created_unix_ms = 0;
  bool revoked = false;
  std::int64_t revoked_unix_ms = 0;  // 0 while not revoked.

  bool operator==(const KeyRecord&) const = default;
};

// A key just created: `plaintext` exists only in this value and is never stored.
struct CreatedKey {
  KeyRecord record;
  std::string plaintext;  // "pp-" + 40 base62 characters.
};

// One request, as charged. `request_id` is unique: a second append of the same id is ignored.
struct LedgerRow {
  std::string request_id;
  std::string tenant;
  std::string key_id;
  std::string model;
  std::string site;
  std::string endpoint;
  std::string priority_class;
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  std::int64_t start_unix_ms = 0;
  std::int64_t end_unix_ms = 0;  // ranges and budgets are by end time.
  double ttft_ms = 0;
  double joules = 0;
  double usd_per_mwh = 0;
  double energy_cost_usd = 0;
  double charged_usd = 0;  // what the tenant's budget is charged.
  // "ok", "client_cancelled", "stream_broken", "upstream_status_N" (the engine refused it),
  // "upstream_timeout", "upstream_unavailable" (no endpoint answered).
  std::string outcome;

  bool operator==(const LedgerRow&) const = default;
};

enum class UsageGroup { kSite, kModel, kDay, kTenant };

// "site" | "model" | "day" | "tenant", or nullopt.
std::optional<UsageGroup> ParseUsageGroup(std::string_view name);

// Ledger sums for one group: a site id, a model, a tenant or a UTC day "YYYY-MM-DD".
struct UsageRow {
  std::string group;
  std::int64_t requests = 0;
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
  double joules = 0;
  double energy_cost_usd = 0;
  double charged_usd = 0;
};

// One gateway process's running totals of what it took from a tenant's per-minute limits
// (requests, tokens; net of what it gave back), published so that gateways sharing the store
// hold the tenant to one limit. `member` is the process; `domain` the processes that already
// share their buckets (one rate-limit table on one host), which do not count each other again.
// A row with an empty tenant is the member's heartbeat. `started_unix_ms`: when the member
// started (its own clock); `updated_unix_ms`: when the row was written, by the store's clock
// (set by the store, read back).
struct RateUsageRow {
  std::string member;
  std::string domain;
  std::string tenant;
  double requests = 0;
  double tokens = 0;
  std::int64_t started_unix_ms = 0;
  std::int64_t updated_unix_ms = 0;
};

// A gateway's lease on part of a tenant's budget for one period (core::BudgetLease): what the
// gateways sharing the store are granted of a period never exceeds the budget.
struct BudgetLeaseRow {
  std::string tenant;
  std::int64_t period_start_ms = 0;
  std::string member;       // the gateway process (as in RateUsageRow).
  double granted_usd = 0;   // what it may have settled and reserved in the period, in all.
  // What it has settled in the period whose ledger rows the store holds, as it last said.
  double settled_usd = 0;
  // What it has settled in the period in all (rows in the store or not yet), as it last said.
  double spent_usd = 0;
  // Read back: another member was refused lately while this one held a part beyond its spend;
  // it should give back its spare.
  bool wanted = false;
};

// A lease as the store holds it, with how long ago (by the store's clock) its member was last
// heard from (Store::BudgetLeases).
struct BudgetLeaseState {
  BudgetLeaseRow lease;
  std::int64_t heard_ms_ago = 0;
};

// A gateway asking for more of a tenant's budget in one period (Store::GrowBudgetLease).
struct BudgetLeaseAsk {
  std::string tenant;
  std::int64_t period_start_ms = 0;
  std::string period;  // the budget period the gateway holds the tenant to ("day", "month"...).
  std::string member;
  double holds_usd = 0;    // the grant it holds now: never granted less.
  double need_usd = 0;     // what it must hold to admit the request that asks.
  double want_usd = 0;     // need_usd plus a spare part, so that the next requests need not ask.
  double settled_usd = 0;  // what it has settled in the period whose rows the store holds.
  double spent_usd = 0;    // what it has settled in the period in all.
};

// The store's answer.
struct BudgetGrant {
  double granted_usd = 0;  // what the gateway now holds (never less than it said it holds).
  // What it could hold in all: the budget less the others' grants and the spend none reports.
  double free_usd = 0;
  // What the other gateways hold beyond what they have spent (as they last said): in use for
  // their requests in flight, or spare that they give back within a few seconds of going idle.
  double held_elsewhere_usd = 0;
  // What members not heard from lately hold beyond their spend: theirs until they are heard from
  // again or retired (DELETE /admin/gateways/{member}).
  double held_silent_usd = 0;
  // The tenant's budget period in the store is not the one asked for (the gateway's view of the
  // tenant is older than a change): nothing was granted; reload and ask again.
  bool period_changed = false;
};

struct AuditRow {
  std::int64_t unix_ms = 0;
  std::string actor;
  std::string action;
  std::string detail;

  bool operator==(const AuditRow&) const = default;
};

}  // namespace powerplane::store
