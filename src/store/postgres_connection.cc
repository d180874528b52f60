// The PostgreSQL backend (libpqxx 6.4). Parameters travel as text; cells come back as text and
// are parsed on read. Ledger batches go in as multi-row INSERT ... ON CONFLICT DO NOTHING
// statements, or through COPY into a temporary table (see PostgresLedgerInsert).

#include <algorithm>
#include <atomic>
#include <charconv>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <tuple>
#include <utility>

#include "store/postgres_options.h"
#include "store/sql_connection.h"

namespace powerplane::store {
namespace {
std::atomic<PostgresLedgerInsert> g_ledger_insert{PostgresLedgerInsert::kCopy};
}  // namespace

void SetPostgresLedgerInsert(PostgresLedgerInsert mode) { g_ledger_insert.store(mode); }

namespace internal {
namespace {

// Rows per INSERT statement: 17 parameters each, under PostgreSQL's 65535-parameter limit.
constexpr std::size_t kRowsPerInsert = 1000;
// Serialises schema creation across openers (pg_advisory_xact_lock key).
constexpr std::int64_t kSchemaLockKey = 0x70700001;

std::string ToText(const Param& p) {
  if (const auto* v = std::get_if<std::int64_t>(&p)) return std::to_string(*v);
  if (const auto* d = std::get_if<double>(&p)) {
    char buf[32];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, *d);  // shortest exact form.
    return std::string(buf, end);
  }
  return std::get<std::string>(p);
}

// pqxx::stream_to takes tuples, not containers.
template <std::size_t... I>
auto AsTuple(const std::vector<std::string>& v, std::index_sequence<I...>) {
  return std::make_tuple(v[I]...);
}

class PostgresConnection final : public Connection {
 public:
  explicit PostgresConnection(std::string url) : url_(std::move(url)), conn_(url_) {}

  ~PostgresConnection() override { Rollback(); }

  std::string_view Backend() const override { return "postgresql"; }

  std::unique_ptr<Connection> Reconnect() const override {
    return std::make_unique<PostgresConnection>(url_);
  }

  // A dropped connection, a transaction the server rolled back (serialization failure,
  // deadlock; not "completion unknown", which a retry might apply twice), a lock or statement
  // timeout, or a server shutting down, crashed or starting (57P01-57P03; not 57P04, a dropped
  // database). PostgreSQL waits for locks without limit unless lock_timeout is set (in the URL:
  // ?options=-c%20lock_timeout%3D5000).
  bool IsBusy(const std::exception& e) const noexcept override {
    if (dynamic_cast<const pqxx::statement_completion_unknown*>(&e) != nullptr) return false;
    if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr) return true;
    if (dynamic_cast<const pqxx::transaction_rollback*>(&e) != nullptr) return true;
    if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) {
      const std::string& state = sql->sqlstate();
      return state == "55P03" || state == "57014" || state == "57P01" || state == "57P02" ||
             state == "57P03";
    }
    return false;
  }

  // libpq's words for a lost connection depend on where it was noticed ("Could not obtain
  // client encoding", "server closed the connection unexpectedly"): say what happened first.
  std::string Describe(const std::exception& e) const override {
    if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr) {
      return std::string("the connection to PostgreSQL is lost or refused (") + e.what() + ")";
    }
    return e.what();
  }

  std::vector<Row> Query(const std::string& sql, std::span<const Param> params) override {
    std::vector<std::string> text;
    text.reserve(params.size());
    for (const auto& p : params) text.push_back(ToText(p));
    pqxx::result result;
    if (tx_) {
      result = tx_->exec_params(sql, pqxx::prepare::make_dynamic_params(text));
    } else {
      pqxx::nontransaction once(conn_);
      result = once.exec_params(sql, pqxx::prepare::make_dynamic_params(text));
    }
    std::vector<Row> rows;
    rows.reserve(result.size());
    for (const auto& r : result) {
      std::vector<Row::Cell> cells;
      cells.reserve(r.size());
      for (const auto& field : r) {
        if (field.is_null()) {
          cells.emplace_back(std::monostate{});
        } else {
          cells.emplace_back(std::string(field.c_str(), field.size()));
        }
      }
      rows.emplace_back(std::move(cells));
    }
    return rows;
  }

  void Begin() override { tx_.emplace(conn_); }
  void Commit() override {
    tx_->commit();
    tx_.reset();
  }
  void Rollback() noexcept override { tx_.reset(); }  // an open pqxx::work aborts when destroyed.

  std::size_t InsertLedger(std::span<const LedgerRow> rows) override {
    return g_ledger_insert.load() == PostgresLedgerInsert::kCopy ? CopyLedger(rows)
                                                                 : InsertLedgerRows(rows);
  }

  void LockSchema() override {
    Query("SELECT pg_advisory_xact_lock($1)", {{Param{kSchemaLockKey}}});
  }
  void LockKey(std::string_view key) override {
    // The two-key form: a key space apart from the schema's lock (one bigint key).
    Query("SELECT pg_advisory_xact_lock(7070, hashtext($1))", {{Param{std::string(key)}}});
  }
  std::string_view AuditIdColumn() const override { return "BIGSERIAL PRIMARY KEY"; }
  std::string_view CountColumnQuery() const override {
    return "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = "
           "current_schema() AND table_name = $1 AND column_name = $2";
  }
  std::string_view EndDayExpression() const override {
    return "to_char(to_timestamp(end_unix_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')";
  }
  std::string_view NowMsExpression() const override {
    // The statement's start: one value for the whole statement, so an index can serve it.
    return "CAST(EXTRACT(EPOCH FROM statement_timestamp()) * 1000 AS BIGINT)";
  }

 private:
  void KeepSpendDaily() override {
    // One statement-level trigger: the statement's new rows (a transition table, which holds
    // only the rows ON CONFLICT DO NOTHING inserted) summed per tenant and day, upserted in
    // order. InsertLedgerRows sorts a batch the same way across its statements, so writers
    // take these row locks in one order and cannot deadlock.
    tx_->exec0(
        "CREATE OR REPLACE FUNCTION pp_ledger_spend_daily() RETURNS trigger LANGUAGE plpgsql AS "
        "$fn$ BEGIN INSERT INTO spend_daily (tenant, day, charged_usd) SELECT tenant, "
        "end_unix_ms / " + std::to_string(kDayMs) + ", SUM(charged_usd) FROM pp_new_ledger_rows "
        "GROUP BY 1, 2 ORDER BY 1, 2 ON CONFLICT (tenant, day) DO UPDATE "
        "SET charged_usd = spend_daily.charged_usd + excluded.charged_usd; RETURN NULL; END $fn$");
    tx_->exec0("DROP TRIGGER IF EXISTS ledger_spend_daily ON ledger");
    tx_->exec0(
        "CREATE TRIGGER ledger_spend_daily AFTER INSERT ON ledger "
        "REFERENCING NEW TABLE AS pp_new_ledger_rows FOR EACH STATEMENT "
        "EXECUTE FUNCTION pp_ledger_spend_daily()");
  }

  std::size_t InsertLedgerRows(std::span<const LedgerRow> rows) {
    // In (tenant, day) order across the statements: the trigger's row locks on spend_daily are
    // then taken in one order by every writer.
    std::vector<const LedgerRow*> sorted;
    sorted.reserve(rows.size());
    for (const auto& r : rows) sorted.push_back(&r);
    std::stable_sort(sorted.begin(), sorted.end(), [](const LedgerRow* a, const LedgerRow* b) {
      return std::pair(std::string_view(a->tenant), a->end_unix_ms / kDayMs) <
             std::pair(std::string_view(b->tenant), b->end_unix_ms / kDayMs);
    });
    std::size_t inserted = 0;
    std::vector<Param> params;
    for (std::size_t start = 0; start < rows.size(); start += kRowsPerInsert) {
      const std::size_t n = std::min(kRowsPerInsert, rows.size() - start);
      std::string sql = "INSERT INTO ledger (" + std::string(kLedgerColumns) + ") VALUES ";
      params.clear();
      for (std::size_t r = 0; r < n; ++r) {
        sql += r ? ",(" : "(";
        for (std::size_t c = 0; c < kLedgerColumnCount; ++c) {
          sql += (c ? ",$" : "$") + std::to_string(r * kLedgerColumnCount + c + 1);
        }
        sql += ')';
        AppendLedgerParams(*sorted[start + r], params);
      }
      sql += " ON CONFLICT (request_id) DO NOTHING";
      std::vector<std::string> text;
      text.reserve(params.size());
      for (const auto& p : params) text.push_back(ToText(p));
      inserted += tx_->exec_params(sql, pqxx::prepare::make_dynamic_params(text)).affected_rows();
    }
    return inserted;
  }

  std::size_t CopyLedger(std::span<const LedgerRow> rows) {
    tx_->exec0(
        "CREATE TEMP TABLE IF NOT EXISTS ledger_in (LIKE ledger INCLUDING DEFAULTS) "
        "ON COMMIT DELETE ROWS");
    {
      static const std::vector<std::string> kColumns = {
          "request_id",     "tenant",        "key_id",
          "model",          "site",          "endpoint",
          "priority_class", "prompt_tokens", "completion_tokens",
          "start_unix_ms",  "end_unix_ms",   "ttft_ms",
          "joules",         "usd_per_mwh",   "energy_cost_usd",
          "charged_usd",    "outcome"};
      pqxx::stream_to stream(*tx_, "ledger_in", kColumns);
      std::vector<Param> params;
      std::vector<std::string> text;
      for (const auto& row : rows) {
        params.clear();
        AppendLedgerParams(row, params);
        text.clear();
        for (const auto& p : params) text.push_back(ToText(p));
        stream << AsTuple(text, std::make_index_sequence<kLedgerColumnCount>());
      }
      stream.complete();
    }
    return tx_
        ->exec0("INSERT INTO ledger (" + std::string(kLedgerColumns) + ") SELECT " +
                std::string(kLedgerColumns) + " FROM ledger_in ON CONFLICT (request_id) DO NOTHING")
        .affected_rows();
  }

  std::string url_;
  pqxx::connection conn_;
  std::optional<pqxx::work> tx_;
};

}  // namespace

std::unique_ptr<Connection> OpenPostgres(const std::string& url) {
  return std::make_unique<PostgresConnection>(url);
}

}  // namespace internal
}  // namespace powerplane::store
