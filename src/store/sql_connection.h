#pragma once
// Internal to pp_store: the small SQL surface the store needs, implemented once for SQLite and
// once for PostgreSQL. Statements use $1, $2, ... placeholders on both. Methods throw (the
// drivers' exceptions, or SqlError); SqlStore catches them at its boundary and returns messages.
// Not thread-safe: the owner serialises calls.

#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "store/records.h"

namespace powerplane::store::internal {

struct SqlError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// The store is busy (another writer held its lock past the busy timeout) or out of reach: a
// retry later may succeed. SqlStore reports it with store::kBusyPrefix.
struct BusyError : SqlError {
  using SqlError::SqlError;
};

using Param = std::variant<std::int64_t, double, std::string>;

// One result row. PostgreSQL cells arrive as text and are parsed on read.
class Row {
 public:
  using Cell = std::variant<std::monostate, std::int64_t, double, std::string>;
  explicit Row(std::vector<Cell> cells) : cells_(std::move(cells)) {}
  std::int64_t Int(std::size_t i) const;
  double Double(std::size_t i) const;
  std::string Text(std::size_t i) const;
  bool IsNull(std::size_t i) const { return std::holds_alternative<std::monostate>(cells_.at(i)); }

 private:
  std::vector<Cell> cells_;
};

class Connection {
 public:
  virtual ~Connection() = default;
  virtual std::string_view Backend() const = 0;
  // A new connection to the same database.
  virtual std::unique_ptr<Connection> Reconnect() const = 0;
  // True when `e`, thrown by this connection, says the store is busy or out of reach.
  virtual bool IsBusy(const std::exception& e) const noexcept {
    return dynamic_cast<const BusyError*>(&e) != nullptr;
  }
  // `e`, thrown by this connection, in words for an operator.
  virtual std::string Describe(const std::exception& e) const { return e.what(); }

  // Runs one statement (inside the open transaction, if any) and returns its rows.
  virtual std::vector<Row> Query(const std::string& sql, std::span<const Param> params = {}) = 0;
  // A write transaction: SQLite takes the write lock at once (BEGIN IMMEDIATE).
  virtual void Begin() = 0;
  virtual void Commit() = 0;
  virtual void Rollback() noexcept = 0;

  // Inside a transaction: inserts rows, ignoring request ids already present (or repeated in
  // `rows`); returns how many were new. Each new row's charged_usd is added to its tenant's day
  // in spend_daily (day = end_unix_ms / kDayMs) in the same transaction: by InsertLedger itself
  // on SQLite, by a trigger on PostgreSQL (KeepSpendDaily). Backends batch as suits them.
  virtual std::size_t InsertLedger(std::span<const LedgerRow> rows) = 0;

  // Inside a transaction (schema creation): sets up what keeps spend_daily. PostgreSQL: a
  // statement-level trigger on the ledger, so that every writer keeps the totals, a gateway of
  // an older version included (several hosts sharing a server may run different versions for a
  // while); its upserts go in (tenant, day) order. SQLite: nothing beyond InsertLedger (a row
  // trigger would halve the writer's rate; processes sharing a file run one version).
  virtual void KeepSpendDaily() = 0;

  // Inside a transaction: serialises schema creation against other openers.
  virtual void LockSchema() = 0;
  // Inside a write transaction: serialises it against other transactions that lock `key`
  // (SQLite: every write transaction holds the database's one write lock already).
  virtual void LockKey(std::string_view key) = 0;
  // SQL for the audit table's id column.
  virtual std::string_view AuditIdColumn() const = 0;
  // A query whose one row's one value counts the columns named $2 of the table named $1.
  virtual std::string_view CountColumnQuery() const = 0;
  // SQL for the UTC day "YYYY-MM-DD" of the ledger's end_unix_ms.
  virtual std::string_view EndDayExpression() const = 0;
  // SQL for the database's clock now, in unix milliseconds (one clock for every gateway).
  virtual std::string_view NowMsExpression() const = 0;
};

// The ledger's columns in insert order, and the row's values in that order.
inline constexpr std::string_view kLedgerColumns =
    "request_id, tenant, key_id, model, site, endpoint, priority_class, prompt_tokens, "
    "completion_tokens, start_unix_ms, end_unix_ms, ttft_ms, joules, usd_per_mwh, "
    "energy_cost_usd, charged_usd, outcome";
inline constexpr std::size_t kLedgerColumnCount = 17;
// spend_daily's day of a ledger row: end_unix_ms / kDayMs (UTC days since the epoch).
inline constexpr std::int64_t kDayMs = 24 * 3600 * 1000;
void AppendLedgerParams(const LedgerRow& row, std::vector<Param>& out);
LedgerRow LedgerRowFrom(const Row& row);  // columns in kLedgerColumns order.

// `busy_timeout_ms`: how long a statement waits for another connection's write lock;
// `sync_commits`: synchronous=FULL (each commit flushed to disk) rather than NORMAL.
std::unique_ptr<Connection> OpenSqlite(const std::string& path, int busy_timeout_ms,
                                       bool sync_commits);
std::unique_ptr<Connection> OpenPostgres(const std::string& url);

}  // namespace powerplane::store::internal
