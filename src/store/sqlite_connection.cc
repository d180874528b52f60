// The SQLite backend: one file in WAL mode, synchronous=NORMAL (FULL when every commit must reach
// the disk), a busy timeout so other connections and processes wait rather than fail, and a cache
// of prepared statements.

#include <sqlite3.h>

#include <map>
#include <string>
#include <unordered_map>
#include <utility>

#include "store/sql_connection.h"

namespace powerplane::store::internal {
namespace {

class SqliteConnection final : public Connection {
 public:
  SqliteConnection(std::string path, int busy_timeout_ms, bool sync_commits)
      : path_(std::move(path)), busy_timeout_ms_(busy_timeout_ms), sync_commits_(sync_commits) {
    const int rc =
        sqlite3_open_v2(path_.c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      std::string message = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
      sqlite3_close(db_);
      db_ = nullptr;
      throw SqlError("sqlite: cannot open " + path_ + ": " + message);
    }
    sqlite3_busy_timeout(db_, busy_timeout_ms_);
    try {
      Exec("PRAGMA journal_mode=WAL");
      Exec(sync_commits_ ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
      Exec("PRAGMA foreign_keys=ON");
    } catch (...) {
      sqlite3_close(db_);  // the destructor does not run for a constructor that throws.
      db_ = nullptr;
      throw;
    }
  }

  ~SqliteConnection() override {
    for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
    sqlite3_close(db_);
  }

  std::string_view Backend() const override { return "sqlite"; }

  std::unique_ptr<Connection> Reconnect() const override {
    return std::make_unique<SqliteConnection>(path_, busy_timeout_ms_, sync_commits_);
  }

  std::vector<Row> Query(const std::string& sql, std::span<const Param> params) override {
    sqlite3_stmt* stmt = Prepare(sql);
    Bind(stmt, params);
    std::vector<Row> rows;
    for (;;) {
      const int rc = sqlite3_step(stmt);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) Fail(stmt, "step");
      const int n = sqlite3_column_count(stmt);
      std::vector<Row::Cell> cells;
      cells.reserve(n);
      for (int i = 0; i < n; ++i) {
        switch (sqlite3_column_type(stmt, i)) {
          case SQLITE_INTEGER:
            cells.emplace_back(std::int64_t{sqlite3_column_int64(stmt, i)});
            break;
          case SQLITE_FLOAT:
            cells.emplace_back(sqlite3_column_double(stmt, i));
            break;
          case SQLITE_NULL:
            cells.emplace_back(std::monostate{});
            break;
          default: {
            const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, i));
            cells.emplace_back(std::string(text ? text : "", sqlite3_column_bytes(stmt, i)));
          }
        }
      }
      rows.emplace_back(std::move(cells));
    }
    sqlite3_reset(stmt);
    return rows;
  }

  void Begin() override { Exec("BEGIN IMMEDIATE"); }
  void Commit() override { Exec("COMMIT"); }
  void Rollback() noexcept override {
    if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }

  std::size_t InsertLedger(std::span<const LedgerRow> rows) override {
    static const std::string sql = [] {
      std::string s = "INSERT INTO ledger (" + std::string(kLedgerColumns) + ") VALUES (";
      for (std::size_t i = 1; i <= kLedgerColumnCount; ++i) {
        s += (i > 1 ? ", $" : "$") + std::to_string(i);
      }
      return s + ") ON CONFLICT (request_id) DO NOTHING";
    }();
    sqlite3_stmt* stmt = Prepare(sql);
    std::vector<Param> params;
    // Each new row's charge is added to spend_daily here, summed per (tenant, day) over the
    // batch: a trigger would upsert once per row (measured: half the writer's rows per second).
    std::size_t inserted = 0;
    std::map<std::pair<std::string_view, std::int64_t>, double> spend;
    for (const auto& row : rows) {
      params.clear();
      AppendLedgerParams(row, params);
      Bind(stmt, params);
      if (sqlite3_step(stmt) != SQLITE_DONE) Fail(stmt, "insert");
      if (sqlite3_changes(db_) > 0) {
        ++inserted;
        spend[{row.tenant, row.end_unix_ms / kDayMs}] += row.charged_usd;
      }
      sqlite3_reset(stmt);
    }
    for (const auto& [key, usd] : spend) {
      Query("INSERT INTO spend_daily (tenant, day, charged_usd) VALUES ($1, $2, $3) "
            "ON CONFLICT (tenant, day) DO UPDATE "
            "SET charged_usd = spend_daily.charged_usd + excluded.charged_usd",
            std::vector<Param>{std::string(key.first), key.second, usd});
    }
    return inserted;
  }

  void KeepSpendDaily() override {
    // InsertLedger keeps the totals; an earlier build's trigger, if any, would count twice.
    Query("DROP TRIGGER IF EXISTS ledger_spend_daily", {});
  }

  void LockSchema() override {}  // BEGIN IMMEDIATE already excludes other writers.
  void LockKey(std::string_view) override {}  // so does it here.
  std::string_view AuditIdColumn() const override { return "INTEGER PRIMARY KEY AUTOINCREMENT"; }
  std::string_view CountColumnQuery() const override {
    return "SELECT COUNT(*) FROM pragma_table_info($1) WHERE name = $2";
  }
  std::string_view EndDayExpression() const override {
    return "strftime('%Y-%m-%d', end_unix_ms / 1000, 'unixepoch')";
  }
  std::string_view NowMsExpression() const override {
    return "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";
  }

 private:
  void Exec(const char* sql) {
    char* error = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
      std::string message = std::string("sqlite: ") + sql + ": " + (error ? error : "?");
      sqlite3_free(error);
      Throw(std::move(message));
    }
  }

  sqlite3_stmt* Prepare(const std::string& sql) {
    auto it = statements_.find(sql);
    if (it != statements_.end()) return it->second;
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()),
                           SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) != SQLITE_OK) {
      Throw(std::string("sqlite: prepare: ") + sqlite3_errmsg(db_) + ": " + sql);
    }
    statements_.emplace(sql, stmt);
    return stmt;
  }

  // The index of each of `count` parameters $1..$count in `stmt`, looked up once per statement.
  const std::vector<int>& ParameterIndexes(sqlite3_stmt* stmt, std::size_t count) {
    std::vector<int>& indexes = parameter_indexes_[stmt];
    while (indexes.size() < count) {
      std::string name = "$";  // appended: g++ 12 warns falsely (-Wrestrict) on "$" + string.
      name += std::to_string(indexes.size() + 1);
      const int index = sqlite3_bind_parameter_index(stmt, name.c_str());
      if (index == 0) throw SqlError("sqlite: statement has no parameter " + name);
      indexes.push_back(index);
    }
    return indexes;
  }

  // Text is bound without a copy (SQLITE_STATIC): `params` outlive the statement's steps, and
  // every Bind clears the bindings before it binds again.
  void Bind(sqlite3_stmt* stmt, std::span<const Param> params) {
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    const std::vector<int>& indexes = ParameterIndexes(stmt, params.size());
    for (std::size_t i = 0; i < params.size(); ++i) {
      const int index = indexes[i];
      int rc = SQLITE_OK;
      if (const auto* v = std::get_if<std::int64_t>(&params[i])) {
        rc = sqlite3_bind_int64(stmt, index, *v);
      } else if (const auto* d = std::get_if<double>(&params[i])) {
        rc = sqlite3_bind_double(stmt, index, *d);
      } else {
        const auto& s = std::get<std::string>(params[i]);
        rc = sqlite3_bind_text(stmt, index, s.data(), static_cast<int>(s.size()), SQLITE_STATIC);
      }
      if (rc != SQLITE_OK) Fail(stmt, "bind");
    }
  }

  [[noreturn]] void Fail(sqlite3_stmt* stmt, const char* what) {
    std::string message = std::string("sqlite: ") + what + ": " + sqlite3_errmsg(db_);
    const int code = sqlite3_errcode(db_);
    sqlite3_reset(stmt);
    Throw(std::move(message), code);
  }

  // SQLITE_BUSY: the wait for another connection's lock ran out. (SQLITE_LOCKED, a conflict
  // within this connection without shared cache, is not cured by waiting: not busy.)
  [[noreturn]] void Throw(std::string message, int code) {
    if (code == SQLITE_BUSY) throw BusyError(message);
    throw SqlError(message);
  }
  [[noreturn]] void Throw(std::string message) { Throw(std::move(message), sqlite3_errcode(db_)); }

  std::string path_;
  int busy_timeout_ms_;
  bool sync_commits_;
  sqlite3* db_ = nullptr;
  std::unordered_map<std::string, sqlite3_stmt*> statements_;
  std::unordered_map<sqlite3_stmt*, std::vector<int>> parameter_indexes_;
};

}  // namespace

std::unique_ptr<Connection> OpenSqlite(const std::string& path, int busy_timeout_ms,
                                       bool sync_commits) {
  return std::make_unique<SqliteConnection>(path, busy_timeout_ms, sync_commits);
}

}  // namespace powerplane::store::internal
