// Store over a Connection: the schema, the queries and the transactions, once for both backends.
// Every public method locks the connection's mutex and turns any exception into a message.

#include "store/sql_store.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <unordered_map>

#include "store/keys.h"

namespace powerplane::store::internal {
namespace {

std::int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string JoinJurisdictions(const std::vector<std::string>& list) {
  std::string out;
  for (const auto& j : list) {
    if (!out.empty()) out += ',';
    out += j;
  }
  return out;
}

std::vector<std::string> SplitJurisdictions(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    out.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

constexpr std::string_view kTenantColumns =
    "id, jurisdictions, priority_class, latency_target_ms, rpm, tpm, budget_usd, budget_period";
constexpr std::string_view kKeyColumns =
    "id, tenant, key_sha256, created_unix_ms, revoked, revoked_unix_ms";

TenantRecord TenantFrom(const Row& r) {
  return TenantRecord{.id = r.Text(0),
                      .jurisdictions = SplitJurisdictions(r.Text(1)),
                      .priority_class = r.Text(2),
                      .latency_target_ms = r.Int(3),
                      .rpm = r.Int(4),
                      .tpm = r.Int(5),
                      .budget_usd = r.Double(6),
                      .budget_period = r.Text(7)};
}

KeyRecord KeyFrom(const Row& r) {
  return KeyRecord{.id = r.Text(0),
                   .tenant = r.Text(1),
                   .key_sha256 = r.Text(2),
                   .created_unix_ms = r.Int(3),
                   .revoked = r.Int(4) != 0,
                   .revoked_unix_ms = r.Int(5)};
}

template <typename... T>
std::vector<Param> Params(T&&... values) {
  std::vector<Param> out;
  (out.emplace_back(std::forward<T>(values)), ...);
  return out;
}

}  // namespace

SqlStore::SqlStore(std::unique_ptr<Connection> connection, std::string origin)
    : connection_(std::move(connection)), origin_(std::move(origin)) {}

Result<std::unique_ptr<SqlStore>> SqlStore::Create(std::unique_ptr<Connection> connection,
                                                   std::string origin) {
  auto store = std::unique_ptr<SqlStore>(new SqlStore(std::move(connection), std::move(origin)));
  auto created = store->Guard([&] {
    store->Transaction([&] { store->CreateSchema(); });
    return true;
  });
  if (!created) return std::unexpected(created.error());
  return store;
}

void SqlStore::CreateSchema() {
  Connection& c = *connection_;
  c.LockSchema();
  const std::string statements[] = {
      "CREATE TABLE IF NOT EXISTS pp_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
      "INSERT INTO pp_meta (name, value) VALUES ('version', 1) ON CONFLICT (name) DO NOTHING",
      "INSERT INTO pp_meta (name, value) VALUES ('schema', 1) ON CONFLICT (name) DO NOTHING",
      "CREATE TABLE IF NOT EXISTS tenants ("
      "id TEXT PRIMARY KEY, jurisdictions TEXT NOT NULL, priority_class TEXT NOT NULL, "
      "latency_target_ms BIGINT NOT NULL, rpm BIGINT NOT NULL, tpm BIGINT NOT NULL, "
      "budget_usd DOUBLE PRECISION NOT NULL, budget_period TEXT NOT NULL, "
      "updated_unix_ms BIGINT NOT NULL)",
      "CREATE TABLE IF NOT EXISTS api_keys ("
      "id TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants (id), "
      "key_sha256 TEXT NOT NULL UNIQUE, created_unix_ms BIGINT NOT NULL, "
      "revoked INTEGER NOT NULL DEFAULT 0, revoked_unix_ms BIGINT NOT NULL DEFAULT 0)",
      "CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant)",
      "CREATE TABLE IF NOT EXISTS ledger ("
      "request_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, key_id TEXT NOT NULL, "
      "model TEXT NOT NULL, site TEXT NOT NULL, endpoint TEXT NOT NULL, "
      "priority_class TEXT NOT NULL, prompt_tokens BIGINT NOT NULL, "
      "completion_tokens BIGINT NOT NULL, start_unix_ms BIGINT NOT NULL, "
      "end_unix_ms BIGINT NOT NULL, ttft_ms DOUBLE PRECISION NOT NULL, "
      "joules DOUBLE PRECISION NOT NULL, usd_per_mwh DOUBLE PRECISION NOT NULL, "
      "energy_cost_usd DOUBLE PRECISION NOT NULL, charged_usd DOUBLE PRECISION NOT NULL, "
      "outcome TEXT NOT NULL)",
      "CREATE INDEX IF NOT EXISTS ledger_end ON ledger (end_unix_ms)",
      "CREATE INDEX IF NOT EXISTS ledger_tenant_end ON ledger (tenant, end_unix_ms)",
      "CREATE TABLE IF NOT EXISTS audit (id " + std::string(c.AuditIdColumn()) +
          ", unix_ms BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, "
          "detail TEXT NOT NULL)",
      "CREATE INDEX IF NOT EXISTS audit_time ON audit (unix_ms)",
      "CREATE TABLE IF NOT EXISTS rate_usage ("
      "member TEXT NOT NULL, tenant TEXT NOT NULL, domain TEXT NOT NULL, "
      "requests DOUBLE PRECISION NOT NULL, tokens DOUBLE PRECISION NOT NULL, "
      "started_unix_ms BIGINT NOT NULL, updated_unix_ms BIGINT NOT NULL, "
      "PRIMARY KEY (member, tenant))",
      "CREATE INDEX IF NOT EXISTS rate_usage_updated ON rate_usage (updated_unix_ms)",
      // Each tenant's charges per UTC day (day = end_unix_ms / kDayMs), kept in the
      // transaction that inserts the ledger rows (Connection::KeepSpendDaily): a month's
      // budget is a sum over at most 31 of these, not over the month's ledger rows.
      "CREATE TABLE IF NOT EXISTS spend_daily (tenant TEXT NOT NULL, day BIGINT NOT NULL, "
      "charged_usd DOUBLE PRECISION NOT NULL, PRIMARY KEY (tenant, day))",
      // Each gateway's lease on part of a tenant's budget in a period (GrowBudgetLease).
      "CREATE TABLE IF NOT EXISTS budget_leases (tenant TEXT NOT NULL, "
      "period_start_ms BIGINT NOT NULL, member TEXT NOT NULL, "
      "granted_usd DOUBLE PRECISION NOT NULL, settled_usd DOUBLE PRECISION NOT NULL, "
      "spent_usd DOUBLE PRECISION NOT NULL, wanted_unix_ms BIGINT NOT NULL DEFAULT 0, "
      "updated_unix_ms BIGINT NOT NULL, PRIMARY KEY (tenant, period_start_ms, member))",
      "CREATE INDEX IF NOT EXISTS budget_leases_member ON budget_leases (member)",
  };
  for (const auto& sql : statements) c.Query(sql);
  // Schema 1 had no daily totals, schema 2 kept them on PostgreSQL from the application rather
  // than a trigger: the backend's way of keeping them is set up and they are summed once from
  // the ledger.
  const auto schema = c.Query("SELECT value FROM pp_meta WHERE name = 'schema'");
  if (schema.empty() || schema.front().Int(0) < 3) {
    c.KeepSpendDaily();
    c.Query("DELETE FROM spend_daily");
    const std::string day = "end_unix_ms / " + std::to_string(kDayMs);
    c.Query("INSERT INTO spend_daily (tenant, day, charged_usd) SELECT tenant, " + day +
            ", SUM(charged_usd) FROM ledger GROUP BY tenant, " + day);
    c.Query("UPDATE pp_meta SET value = 3 WHERE name = 'schema'");
  }
  // Columns added since their table was made: a refused member's claim on what others give
  // back next (GrowBudgetLease).
  for (const auto& [name, type] : {std::pair{"claim_usd", "DOUBLE PRECISION NOT NULL DEFAULT 0"},
                                   std::pair{"claim_since_ms", "BIGINT NOT NULL DEFAULT 0"},
                                   std::pair{"claim_seen_ms", "BIGINT NOT NULL DEFAULT 0"}}) {
    const auto n = c.Query(std::string(c.CountColumnQuery()),
                           Params(std::string("budget_leases"), std::string(name)));
    if (n.front().Int(0) == 0) {
      c.Query("ALTER TABLE budget_leases ADD COLUMN " + std::string(name) + " " + type);
    }
  }
}

void SqlStore::BumpVersion() {
  connection_->Query("UPDATE pp_meta SET value = value + 1 WHERE name = 'version'");
}

Result<std::unique_ptr<Store>> SqlStore::Reopen() const {
  std::unique_ptr<Connection> fresh;
  try {
    std::lock_guard lock(mu_);
    fresh = connection_->Reconnect();
  } catch (const std::exception& e) {
    return std::unexpected(std::string(e.what()));
  }
  auto store = Create(std::move(fresh), origin_);
  if (!store) return std::unexpected(store.error());
  return std::unique_ptr<Store>(std::move(*store));
}

std::string_view SqlStore::Backend() const { return connection_->Backend(); }

Result<void> SqlStore::PutTenant(const TenantRecord& t) {
  if (auto error = TenantError(t)) return std::unexpected(*error);
  auto done = Guard([&] {
    Transaction([&] {
      connection_->Query(
          "INSERT INTO tenants (" + std::string(kTenantColumns) +
              ", updated_unix_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
              "ON CONFLICT (id) DO UPDATE SET jurisdictions = excluded.jurisdictions, "
              "priority_class = excluded.priority_class, "
              "latency_target_ms = excluded.latency_target_ms, rpm = excluded.rpm, "
              "tpm = excluded.tpm, budget_usd = excluded.budget_usd, "
              "budget_period = excluded.budget_period, updated_unix_ms = excluded.updated_unix_ms",
          Params(t.id, JoinJurisdictions(t.jurisdictions), t.priority_class, t.latency_target_ms,
                 t.rpm, t.tpm, t.budget_usd, t.budget_period, NowUnixMs()));
      BumpVersion();
    });
    return true;
  });
  if (!done) return std::unexpected(done.error());
  return {};
}

Result<std::vector<TenantRecord>> SqlStore::Tenants() {
  return Guard([&] {
    std::vector<TenantRecord> out;
    for (const auto& r : connection_->Query("SELECT " + std::string(kTenantColumns) +
                                            " FROM tenants ORDER BY id")) {
      out.push_back(TenantFrom(r));
    }
    return out;
  });
}

Result<std::optional<TenantRecord>> SqlStore::GetTenant(std::string_view id) {
  return Guard([&]() -> std::optional<TenantRecord> {
    auto rows =
        connection_->Query("SELECT " + std::string(kTenantColumns) + " FROM tenants WHERE id = $1",
                           Params(std::string(id)));
    if (rows.empty()) return std::nullopt;
    return TenantFrom(rows.front());
  });
}

Result<CreatedKey> SqlStore::CreateKey(std::string_view tenant_id) {
  auto text = NewKeyText();
  if (!text) return std::unexpected(text.error());
  auto id = NewKeyId();
  if (!id) return std::unexpected(id.error());
  CreatedKey created{.record = {.id = *id,
                                .tenant = std::string(tenant_id),
                                .key_sha256 = Sha256Hex(*text),
                                .created_unix_ms = NowUnixMs()},
                     .plaintext = std::move(*text)};
  if (created.record.key_sha256.empty()) return std::unexpected("SHA-256 failed");
  auto done = Guard([&] {
    bool known = false;
    Transaction([&] {
      known =
          !connection_->Query("SELECT 1 FROM tenants WHERE id = $1", Params(created.record.tenant))
               .empty();
      if (!known) return;
      InsertKey(created.record);
      BumpVersion();
    });
    return known;
  });
  if (!done) return std::unexpected(done.error());
  if (!*done) return std::unexpected("unknown tenant '" + std::string(tenant_id) + "'");
  return created;
}

void SqlStore::InsertKey(const KeyRecord& k) {
  connection_->Query("INSERT INTO api_keys (" + std::string(kKeyColumns) +
                         ") VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                     Params(k.id, k.tenant, k.key_sha256, k.created_unix_ms,
                            std::int64_t{k.revoked}, k.revoked_unix_ms));
}

Result<KeyRecord> SqlStore::AddKeyHash(std::string_view tenant_id, std::string_view key_sha256,
                                       std::string_view key_id) {
  if (!IsSha256Hex(key_sha256)) {
    return std::unexpected("key hash must be 64 lower-case hex digits");
  }
  if (key_id.empty()) return std::unexpected("key id must not be empty");
  KeyRecord wanted{.id = std::string(key_id),
                   .tenant = std::string(tenant_id),
                   .key_sha256 = std::string(key_sha256),
                   .created_unix_ms = NowUnixMs()};
  auto found = Guard([&]() -> std::optional<KeyRecord> {
    std::optional<KeyRecord> stored;
    Transaction([&] {
      if (connection_->Query("SELECT 1 FROM tenants WHERE id = $1", Params(wanted.tenant))
              .empty()) {
        return;
      }
      auto before = connection_->Query(
          "SELECT " + std::string(kKeyColumns) + " FROM api_keys WHERE id = $1 OR key_sha256 = $2",
          Params(wanted.id, wanted.key_sha256));
      if (before.empty()) {
        InsertKey(wanted);
        BumpVersion();
        stored = wanted;
      } else {
        stored = KeyFrom(before.front());
      }
    });
    return stored;
  });
  if (!found) return std::unexpected(found.error());
  if (!*found) return std::unexpected("unknown tenant '" + wanted.tenant + "'");
  const KeyRecord& k = **found;
  if (k.id != wanted.id || k.tenant != wanted.tenant || k.key_sha256 != wanted.key_sha256) {
    return std::unexpected("key '" + wanted.id + "' clashes with stored key '" + k.id + "'");
  }
  return k;
}

Result<std::vector<KeyRecord>> SqlStore::Keys(std::optional<std::string_view> tenant) {
  return Guard([&] {
    const std::string select = "SELECT " + std::string(kKeyColumns) + " FROM api_keys";
    auto rows = tenant ? connection_->Query(select + " WHERE tenant = $1 ORDER BY id",
                                            Params(std::string(*tenant)))
                       : connection_->Query(select + " ORDER BY id");
    std::vector<KeyRecord> out;
    for (const auto& r : rows) out.push_back(KeyFrom(r));
    return out;
  });
}

Result<bool> SqlStore::RevokeKey(std::string_view key_id) {
  return Guard([&] {
    bool revoked = false;
    Transaction([&] {
      revoked = !connection_
                     ->Query(
                         "UPDATE api_keys SET revoked = 1, revoked_unix_ms = $2 "
                         "WHERE id = $1 AND revoked = 0 RETURNING id",
                         Params(std::string(key_id), NowUnixMs()))
                     .empty();
      if (revoked) BumpVersion();
    });
    return revoked;
  });
}

Result<std::int64_t> SqlStore::Version() {
  return Guard([&] {
    auto rows = connection_->Query("SELECT value FROM pp_meta WHERE name = 'version'");
    if (rows.empty()) throw SqlError("pp_meta has no version row");
    return rows.front().Int(0);
  });
}

Result<std::size_t> SqlStore::AppendLedger(std::span<const LedgerRow> rows) {
  for (const auto& r : rows) {
    if (r.request_id.empty()) return std::unexpected("ledger row without a request_id");
  }
  if (rows.empty()) return 0;
  return Guard([&] {
    std::size_t inserted = 0;
    Transaction([&] { inserted = connection_->InsertLedger(rows); });
    return inserted;
  });
}

Result<std::vector<LedgerRow>> SqlStore::Ledger(std::int64_t from_ms, std::int64_t to_ms,
                                                std::optional<std::string_view> tenant) {
  return Guard([&] {
    const std::string select = "SELECT " + std::string(kLedgerColumns) +
                               " FROM ledger WHERE end_unix_ms >= $1 AND end_unix_ms < $2";
    auto rows =
        tenant ? connection_->Query(select + " AND tenant = $3 ORDER BY end_unix_ms, request_id",
                                    Params(from_ms, to_ms, std::string(*tenant)))
               : connection_->Query(select + " ORDER BY end_unix_ms, request_id",
                                    Params(from_ms, to_ms));
    std::vector<LedgerRow> out;
    out.reserve(rows.size());
    for (const auto& r : rows) out.push_back(LedgerRowFrom(r));
    return out;
  });
}

Result<bool> SqlStore::HasLedgerRow(std::string_view request_id) {
  return Guard([&] {
    return !connection_
                ->Query("SELECT 1 FROM ledger WHERE request_id = $1",
                        Params(std::string(request_id)))
                .empty();
  });
}

Result<std::vector<UsageRow>> SqlStore::Usage(std::string_view tenant, std::int64_t from_ms,
                                              std::int64_t to_ms, UsageGroup group) {
  std::string key;
  switch (group) {
    case UsageGroup::kSite:
      key = "site";
      break;
    case UsageGroup::kModel:
      key = "model";
      break;
    case UsageGroup::kTenant:
      key = "tenant";
      break;
    case UsageGroup::kDay:
      key = std::string(connection_->EndDayExpression());
      break;
  }
  return Guard([&] {
    std::string sql = "SELECT " + key +
                      " AS g, COUNT(*), COALESCE(SUM(prompt_tokens), 0), "
                      "COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(joules), 0), "
                      "COALESCE(SUM(energy_cost_usd), 0), COALESCE(SUM(charged_usd), 0) "
                      "FROM ledger WHERE end_unix_ms >= $1 AND end_unix_ms < $2";
    auto params = Params(from_ms, to_ms);
    if (!tenant.empty()) {
      sql += " AND tenant = $3";
      params.emplace_back(std::string(tenant));
    }
    sql += " GROUP BY g ORDER BY g";
    std::vector<UsageRow> out;
    for (const auto& r : connection_->Query(sql, params)) {
      out.push_back(UsageRow{.group = r.Text(0),
                             .requests = r.Int(1),
                             .prompt_tokens = r.Int(2),
                             .completion_tokens = r.Int(3),
                             .joules = r.Double(4),
                             .energy_cost_usd = r.Double(5),
                             .charged_usd = r.Double(6)});
    }
    return out;
  });
}

std::vector<double> SqlStore::ChargedSince(std::span<const std::string> tenants,
                                           std::int64_t since_ms) {
  // Whole days from the daily totals; the part of a day before the first whole one (none when
  // since_ms starts a UTC day, as budget periods do) from the ledger rows.
  constexpr std::size_t kTenantsPerQuery = 500;
  const std::int64_t first_day = since_ms <= 0 ? 0 : (since_ms + kDayMs - 1) / kDayMs;
  std::unordered_map<std::string, double> sums;
  for (std::size_t start = 0; start < tenants.size(); start += kTenantsPerQuery) {
    const std::size_t n = std::min(kTenantsPerQuery, tenants.size() - start);
    auto params = Params(first_day, since_ms, first_day * kDayMs);
    std::string in = "IN (";
    for (std::size_t i = 0; i < n; ++i) {
      in += i ? ", $" : "$";
      in += std::to_string(params.size() + 1);
      params.emplace_back(tenants[start + i]);
    }
    in += ')';
    for (const auto& r : connection_->Query(
             "SELECT tenant, SUM(charged_usd) FROM ("
             "SELECT tenant, charged_usd FROM spend_daily WHERE day >= $1 AND tenant " + in +
                 " UNION ALL SELECT tenant, charged_usd FROM ledger "
                 "WHERE end_unix_ms >= $2 AND end_unix_ms < $3 AND tenant " + in +
                 ") AS spent GROUP BY tenant",
             params)) {
      sums[r.Text(0)] = r.Double(1);
    }
  }
  std::vector<double> out;
  out.reserve(tenants.size());
  for (const auto& t : tenants) {
    auto it = sums.find(t);
    out.push_back(it == sums.end() ? 0.0 : it->second);
  }
  return out;
}

Result<std::vector<double>> SqlStore::ChargedUsd(std::span<const std::string> tenants,
                                                 std::int64_t since_ms) {
  return Guard([&] { return ChargedSince(tenants, since_ms); });
}

// How long a lease stays wanted by another member after that member was refused, and how long a
// refused member's claim lasts after its last ask (its client is told to retry after 2 s).
constexpr std::int64_t kWantedForMs = 3000;
constexpr std::int64_t kClaimForMs = 3000;

Result<BudgetGrant> SqlStore::GrowBudgetLease(const BudgetLeaseAsk& ask, std::int64_t silent_ms) {
  return Guard([&] {
    BudgetGrant grant;
    Transaction([&] {
      Connection& c = *connection_;
      c.LockKey(ask.tenant);
      const auto stored = c.Query("SELECT budget_usd, budget_period FROM tenants WHERE id = $1",
                                  Params(ask.tenant));
      if (!stored.empty() && stored.front().Text(1) != ask.period) {
        grant.granted_usd = ask.holds_usd;
        grant.period_changed = true;
        return;
      }
      const std::string now(c.NowMsExpression());
      c.Query("DELETE FROM budget_leases WHERE tenant = $1 AND period_start_ms < $2",
              Params(ask.tenant, ask.period_start_ms));
      // A silent member keeps its grant: it may have served within it after it was last heard
      // from, rows the store does not hold yet (journaled, or on their way). Its grant goes
      // when it is heard from again, or when a gateway that replays its journal retires it
      // (RetireBudgetMember). But it gives nothing back meanwhile, so it is not "elsewhere".
      // Claims: a member refused while what it needs would come free (others hold it) claims
      // it, and what comes free goes to the claims in the order they were made, before anyone
      // who asks later takes it (so that a gateway whose clients retry at once does not take
      // every part that others give back). A claim lasts kClaimForMs after its member's last ask.
      const std::string live_claim =
          "claim_usd > 0 AND claim_seen_ms > " + now + " - " + std::to_string(kClaimForMs);
      const auto own = c.Query("SELECT claim_since_ms FROM budget_leases WHERE tenant = $1 AND "
                               "period_start_ms = $2 AND member = $3 AND " + live_claim,
                               Params(ask.tenant, ask.period_start_ms, ask.member));
      const std::int64_t own_since =
          own.empty() ? std::numeric_limits<std::int64_t>::max() : own.front().Int(0);
      double others = 0, settled = ask.settled_usd, claimed_before = 0;
      for (const auto& r : c.Query("SELECT member, granted_usd, settled_usd, spent_usd, CASE WHEN "
                                   "updated_unix_ms < " + now + " - $4 THEN 1 ELSE 0 END, CASE "
                                   "WHEN " + live_claim + " AND claim_since_ms < $5 THEN "
                                   "claim_usd ELSE 0 END FROM budget_leases WHERE tenant = $1 AND "
                                   "period_start_ms = $2 AND member <> $3",
                                   Params(ask.tenant, ask.period_start_ms, ask.member, silent_ms,
                                          own_since))) {
        others += r.Double(1);
        settled += r.Double(2);
        const double unspent = std::max(0.0, r.Double(1) - r.Double(3));
        (r.Int(4) == 0 ? grant.held_elsewhere_usd : grant.held_silent_usd) += unspent;
        claimed_before += r.Double(5);
      }
      const std::string tenant[] = {ask.tenant};
      const double charged = ChargedSince(tenant, ask.period_start_ms).front();
      const double limit = stored.empty() ? 0.0 : stored.front().Double(0);
      // A tenant whose budget was removed (or who was never stored) has nothing to hold back.
      const double free = limit > 0 ? limit - others - std::max(0.0, charged - settled)
                                    : ask.want_usd;
      // A member that needs nothing now (asking ahead) gets its spare part only where all of it
      // is free: near the end of a budget, parts go to requests, not to whoever asks most often.
      const bool ahead = ask.need_usd <= ask.holds_usd;
      grant.free_usd = free;
      const double open = free - claimed_before;  // what is free less the claims before this one.
      double offer =
          open >= ask.want_usd ? ask.want_usd
          : ahead              ? ask.holds_usd
                               : std::min(open, ask.need_usd + std::max(0.0, open - ask.need_usd) / 2);
      // Less than the request needs is no use to it, and would only be kept from the others.
      if (offer < ask.need_usd && !ahead) offer = ask.holds_usd;
      grant.granted_usd = std::max(ask.holds_usd, offer);
      if (grant.granted_usd < ask.need_usd && grant.held_elsewhere_usd > 0) {
        // Refused while others hold parts: they give back their spare at their next refresh.
        c.Query("UPDATE budget_leases SET wanted_unix_ms = " + now + " WHERE tenant = $1 AND "
                "period_start_ms = $2 AND member <> $3 AND granted_usd > spent_usd",
                Params(ask.tenant, ask.period_start_ms, ask.member));
      }
      // Refused, with what it needs held by others: it claims what it lacks (keeping its place
      // when it claimed already). Granted, or refused for want of budget: no claim. Asking
      // ahead (its refresh, for a spare part) leaves a claim of its other requests as it is.
      const bool claims = grant.granted_usd < ask.need_usd &&
                          free + grant.held_elsewhere_usd >= ask.need_usd;
      const double claim_usd = claims ? ask.need_usd - grant.granted_usd : 0.0;
      const std::int64_t claim_since = !claims ? 0 : own.empty() ? -1 : own_since;  // -1: now.
      c.Query("INSERT INTO budget_leases (tenant, period_start_ms, member, granted_usd, "
              "settled_usd, spent_usd, updated_unix_ms, claim_usd, claim_since_ms, "
              "claim_seen_ms) VALUES ($1, $2, $3, $4, $5, $6, " + now + ", $7, CASE WHEN CAST($8 AS "
                  "BIGINT) < 0 THEN " + now + " ELSE CAST($8 AS BIGINT) END, " + now +
                  ") ON CONFLICT (tenant, period_start_ms, member) DO UPDATE SET "
                  "granted_usd = excluded.granted_usd, settled_usd = excluded.settled_usd, "
                  "spent_usd = excluded.spent_usd, updated_unix_ms = excluded.updated_unix_ms, "
                  "claim_usd = CASE WHEN $9 = 1 THEN budget_leases.claim_usd ELSE "
                  "excluded.claim_usd END, claim_since_ms = CASE WHEN $9 = 1 THEN "
                  "budget_leases.claim_since_ms ELSE excluded.claim_since_ms END, claim_seen_ms = "
                  "CASE WHEN $9 = 1 THEN budget_leases.claim_seen_ms ELSE excluded.claim_seen_ms END",
              Params(ask.tenant, ask.period_start_ms, ask.member, grant.granted_usd,
                     ask.settled_usd, ask.spent_usd, claim_usd, claim_since,
                     std::int64_t{ahead ? 1 : 0}));
    });
    return grant;
  });
}

Result<std::vector<BudgetLeaseRow>> SqlStore::RefreshBudgetLeases(
    std::string_view member, std::span<const BudgetLeaseRow> rows) {
  return Guard([&] {
    std::vector<BudgetLeaseRow> out;
    const std::string now(connection_->NowMsExpression());
    // One member's own rows (another member only ever shrinks them, under the tenant's lock in
    // GrowBudgetLease): the smaller grant wins either way.
    Transaction([&] {
      for (const auto& r : rows) {
        connection_->Query(
            "UPDATE budget_leases SET granted_usd = CASE WHEN granted_usd < $1 THEN granted_usd "
            "ELSE $1 END, settled_usd = $2, spent_usd = $3 WHERE tenant = $4 AND "
            "period_start_ms = $5 AND member = $6",
            Params(r.granted_usd, r.settled_usd, r.spent_usd, r.tenant, r.period_start_ms,
                   std::string(member)));
      }
      connection_->Query("UPDATE budget_leases SET updated_unix_ms = " + now + " WHERE member = $1",
                         Params(std::string(member)));
      for (const auto& r : connection_->Query(
               "SELECT tenant, period_start_ms, granted_usd, settled_usd, spent_usd, CASE WHEN "
               "wanted_unix_ms > " + now + " - $2 THEN 1 ELSE 0 END FROM budget_leases "
               "WHERE member = $1",
               Params(std::string(member), kWantedForMs))) {
        out.push_back({r.Text(0), r.Int(1), std::string(member), r.Double(2), r.Double(3),
                       r.Double(4), r.Int(5) != 0});
      }
    });
    return out;
  });
}

Result<std::size_t> SqlStore::RetireBudgetMember(std::string_view member) {
  return Guard([&] {
    std::size_t held = 0;
    Transaction([&] {
      const auto rows = connection_->Query(
          "SELECT COUNT(*) FROM budget_leases WHERE member = $1", Params(std::string(member)));
      held = static_cast<std::size_t>(rows.at(0).Int(0));
      connection_->Query("DELETE FROM budget_leases WHERE member = $1",
                         Params(std::string(member)));
    });
    return held;
  });
}

Result<std::vector<BudgetLeaseState>> SqlStore::BudgetLeases() {
  return Guard([&] {
    const std::string now(connection_->NowMsExpression());
    std::vector<BudgetLeaseState> out;
    for (const auto& r : connection_->Query(
             "SELECT tenant, period_start_ms, member, granted_usd, settled_usd, spent_usd, CASE "
             "WHEN wanted_unix_ms > " + now + " - $1 THEN 1 ELSE 0 END, " + now +
                 " - updated_unix_ms FROM budget_leases ORDER BY member, tenant, period_start_ms",
             Params(kWantedForMs))) {
      out.push_back({{r.Text(0), r.Int(1), r.Text(2), r.Double(3), r.Double(4), r.Double(5),
                      r.Int(6) != 0},
                     r.Int(7)});
    }
    return out;
  });
}

Result<void> SqlStore::PutRateUsage(std::span<const RateUsageRow> rows) {
  auto done = Guard([&] {
    const std::string sql =
        "INSERT INTO rate_usage (member, tenant, domain, requests, tokens, started_unix_ms, "
        "updated_unix_ms) VALUES ($1, $2, $3, $4, $5, $6, " +
        std::string(connection_->NowMsExpression()) +
        ") ON CONFLICT (member, tenant) DO UPDATE SET domain = excluded.domain, "
        "requests = excluded.requests, tokens = excluded.tokens, "
        "started_unix_ms = excluded.started_unix_ms, updated_unix_ms = excluded.updated_unix_ms";
    // One member's own rows only: no two writers touch the same rows.
    Transaction([&] {
      for (const auto& r : rows) {
        connection_->Query(sql, Params(r.member, r.tenant, r.domain, r.requests, r.tokens,
                                       r.started_unix_ms));
      }
    });
    return true;
  });
  if (!done) return std::unexpected(done.error());
  return {};
}

Result<std::vector<RateUsageRow>> SqlStore::RateUsage(std::int64_t look_back_ms) {
  return Guard([&] {
    std::string sql =
        "SELECT member, domain, tenant, requests, tokens, started_unix_ms, updated_unix_ms "
        "FROM rate_usage";
    std::vector<Param> params;
    if (look_back_ms >= 0) {
      sql += " WHERE updated_unix_ms >= " + std::string(connection_->NowMsExpression()) + " - $1";
      params = Params(look_back_ms);
    }
    std::vector<RateUsageRow> out;
    for (const auto& row : connection_->Query(sql, params)) {
      out.push_back({row.Text(0), row.Text(1), row.Text(2), row.Double(3), row.Double(4),
                     row.Int(5), row.Int(6)});
    }
    return out;
  });
}

Result<void> SqlStore::ForgetSilentMembers(std::int64_t silent_ms) {
  auto done = Guard([&] {
    connection_->Query(
        "DELETE FROM rate_usage WHERE member IN (SELECT member FROM rate_usage WHERE tenant = '' "
        "AND updated_unix_ms < " + std::string(connection_->NowMsExpression()) + " - $1)",
        Params(silent_ms));
    return true;
  });
  if (!done) return std::unexpected(done.error());
  return {};
}

Result<void> SqlStore::AppendAudit(const AuditRow& row) {
  auto done = Guard([&] {
    Transaction([&] {
      connection_->Query(
          "INSERT INTO audit (unix_ms, actor, action, detail) VALUES ($1, $2, $3, $4)",
          Params(row.unix_ms, row.actor, row.action, row.detail));
    });
    return true;
  });
  if (!done) return std::unexpected(done.error());
  return {};
}

Result<std::vector<AuditRow>> SqlStore::Audit(std::int64_t from_ms, std::int64_t to_ms) {
  return Guard([&] {
    std::vector<AuditRow> out;
    for (const auto& r : connection_->Query("SELECT unix_ms, actor, action, detail FROM audit "
                                            "WHERE unix_ms >= $1 AND unix_ms < $2 "
                                            "ORDER BY unix_ms, id",
                                            Params(from_ms, to_ms))) {
      out.push_back(AuditRow{
          .unix_ms = r.Int(0), .actor = r.Text(1), .action = r.Text(2), .detail = r.Text(3)});
    }
    return out;
  });
}

}  // namespace powerplane::store::internal
