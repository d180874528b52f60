#pragma once
// The durable tenancy store: tenants, API keys (hashed), the request ledger and the audit log.
// SQLite (WAL) in a data directory by default; PostgreSQL when several gateways share one store.
// Every method is thread-safe (one connection per Store, behind a mutex) and returns its failure
// as a message; nothing throws. Times are unix milliseconds, UTC.

#include <cstdint>
#include <expected>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "store/records.h"

namespace powerplane::store {

template <typename T>
using Result = std::expected<T, std::string>;

// A failure that a retry later may cure starts with this: SQLite's write lock was held by another
// connection past the busy timeout, or PostgreSQL dropped the connection, rolled back a
// transaction for a conflict, or timed out a lock.
inline constexpr std::string_view kBusyPrefix = "store busy: ";
inline bool IsBusy(std::string_view error) { return error.starts_with(kBusyPrefix); }

struct StoreOptions {
  // Every commit is flushed to disk before it returns (SQLite: synchronous=FULL), so a committed
  // row survives a power loss or a kernel crash. By default a commit survives the process being
  // killed, and SQLite flushes its WAL at checkpoints. PostgreSQL: the server's
  // synchronous_commit decides either way (on by default: flushed).
  bool sync_commits = false;
};

// The SQLite file a store URL names, as Store::Open reads it ("" or "sqlite:": data_dir's
// powerplane.db; "sqlite:PATH[?...]": PATH); none for any other URL.
std::optional<std::filesystem::path> SqliteFile(std::string_view url,
                                               const std::filesystem::path& data_dir);

class Store {
 public:
  virtual ~Store() = default;

  // Opens (and creates the schema of, if missing) the store named by `url`:
  //  - "" or "sqlite:": the SQLite file `data_dir/powerplane.db` (the directory is created);
  //  - "sqlite:PATH": the SQLite file PATH;
  //  - either SQLite form may end "?busy_timeout_ms=N": how long a write waits for another
  //    connection's lock before it fails as busy (default 10000);
  //  - "postgresql://..." or "postgres://...": a PostgreSQL database (libpq URL).
  // Schema creation is idempotent and safe against concurrent openers.
  static Result<std::unique_ptr<Store>> Open(std::string_view url,
                                             const std::filesystem::path& data_dir,
                                             StoreOptions options = {});

  // A second, independent connection to the same store (the ledger writer's own).
  virtual Result<std::unique_ptr<Store>> Reopen() const = 0;
  // "sqlite" or "postgresql".
  virtual std::string_view Backend() const = 0;

  // Tenants. PutTenant inserts or replaces by id; the record is validated first.
  virtual Result<void> PutTenant(const TenantRecord& tenant) = 0;
  virtual Result<std::vector<TenantRecord>> Tenants() = 0;  // by id.
  virtual Result<std::optional<TenantRecord>> GetTenant(std::string_view id) = 0;

  // Creates a random key for a known tenant; the plaintext is returned once and never stored.
  virtual Result<CreatedKey> CreateKey(std::string_view tenant_id) = 0;
  // Registers a key by its hash (demo keys whose text is known). Idempotent: the same id, tenant
  // and hash again returns the stored record (revoked stays revoked); a clash is an error.
  virtual Result<KeyRecord> AddKeyHash(std::string_view tenant_id, std::string_view key_sha256,
                                       std::string_view key_id) = 0;
  // All keys, or one tenant's, by id.
  virtual Result<std::vector<KeyRecord>> Keys(std::optional<std::string_view> tenant = {}) = 0;
  // True when the key was live and is now revoked; false when unknown or already revoked.
  virtual Result<bool> RevokeKey(std::string_view key_id) = 0;

  // A counter that changes with every tenant or key change (any process). One small read:
  // gateways poll it (every ~250 ms) and reload tenants and keys when it moves.
  virtual Result<std::int64_t> Version() = 0;

  // Appends rows in one transaction. A row whose request_id is already stored (or repeated in
  // `rows`) is ignored. Returns how many rows were new.
  virtual Result<std::size_t> AppendLedger(std::span<const LedgerRow> rows) = 0;
  // Rows with from_ms <= end_unix_ms < to_ms, by end time then request id.
  virtual Result<std::vector<LedgerRow>> Ledger(std::int64_t from_ms, std::int64_t to_ms,
                                                std::optional<std::string_view> tenant = {}) = 0;
  virtual Result<bool> HasLedgerRow(std::string_view request_id) = 0;
  // Sums over from_ms <= end_unix_ms < to_ms, for one tenant (or all when empty), by group.
  virtual Result<std::vector<UsageRow>> Usage(std::string_view tenant, std::int64_t from_ms,
                                              std::int64_t to_ms, UsageGroup group) = 0;
  // For each of `tenants`, in their order, the sum of charged_usd of its rows with
  // end_unix_ms >= since_ms (0 for a tenant without rows). Whole UTC days come from the daily
  // totals (at most 31 rows a tenant for a month), so the read is a few small queries (500
  // tenants each), however busy they are. GrowBudgetLease reads the same sum in its transaction.
  virtual Result<std::vector<double>> ChargedUsd(std::span<const std::string> tenants,
                                                 std::int64_t since_ms) = 0;
  // The same for one tenant.
  Result<double> ChargedUsd(std::string_view tenant, std::int64_t since_ms);

  // Rate-limit totals shared between gateways (RateUsageRow), timed by the store's clock (not the
  // gateways', which may disagree). PutRateUsage writes `rows` (by member and tenant, replacing
  // what was there); RateUsage returns the rows written within the last `look_back_ms` (every
  // row when negative); ForgetSilentMembers removes every row of the members whose heartbeat is
  // older than `silent_ms`.
  virtual Result<void> PutRateUsage(std::span<const RateUsageRow> rows) = 0;
  virtual Result<std::vector<RateUsageRow>> RateUsage(std::int64_t look_back_ms) = 0;
  virtual Result<void> ForgetSilentMembers(std::int64_t silent_ms) = 0;

  // Budget leases (BudgetLeaseRow), in one transaction each, serialised per tenant.
  // GrowBudgetLease asks for `ask.member`'s grant of the tenant's budget in the period starting
  // `ask.period_start_ms` to become `ask.want_usd`, and records its settled and spent. What is
  // free: the tenant's budget as stored, less the other members' grants, less what the ledger
  // holds for the period beyond what every member says it settled (rows of gateways that never
  // leased, or that stopped before saying). Granted: all it wants when that is free; else what it
  // needs plus half of what is free beyond that (so that one busy member does not take all that
  // is left from the others), at most what is free; never less than it holds. Other members not
  // heard from for `silent_ms` by the store's clock keep their grants (they may have served
  // within them rows the store does not hold yet) but are not counted as holding anything that
  // they would give back. A member asking ahead (need_usd no more than it holds) gets a spare
  // part only where all of it is free. A member refused while others hold parts beyond their
  // spend marks their leases wanted (RefreshBudgetLeases tells them, for 3 s), so that they give
  // back their spare. Leases of the tenant's earlier periods are removed. A tenant whose stored
  // period is not `ask.period` gets nothing (period_changed).
  virtual Result<BudgetGrant> GrowBudgetLease(const BudgetLeaseAsk& ask, std::int64_t silent_ms) = 0;
  // Shrinks (never grows) each of `member`'s leases in `rows` to its granted_usd and records its
  // settled_usd and spent_usd; every lease of the member is marked heard from now. Returns each of the
  // member's leases as stored after (a grant another member shrank shows here).
  virtual Result<std::vector<BudgetLeaseRow>> RefreshBudgetLeases(
      std::string_view member, std::span<const BudgetLeaseRow> rows) = 0;

  // Removes every budget lease of `member`, a gateway gone whose ledger rows are all in the
  // store (its journal replayed), or that will never run again: its spend counts from the ledger
  // from then on. Returns how many leases it held.
  virtual Result<std::size_t> RetireBudgetMember(std::string_view member) = 0;
  // Every budget lease, by member, tenant and period (GET /admin/gateways).
  virtual Result<std::vector<BudgetLeaseState>> BudgetLeases() = 0;

  // The audit log: appended, never changed. Audit returns from_ms <= unix_ms < to_ms in order.
  virtual Result<void> AppendAudit(const AuditRow& row) = 0;
  virtual Result<std::vector<AuditRow>> Audit(std::int64_t from_ms, std::int64_t to_ms) = 0;
};

}  // namespace powerplane::store
