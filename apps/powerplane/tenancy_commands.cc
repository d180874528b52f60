#include "tenancy_commands.h"

#include <chrono>
#include <cstdio>
#include <optional>

#include "gateway/admin_parse.h"
#include "store/store.h"

namespace powerplane::cli {
namespace {

void AddStoreFlags(CLI::App* c, StoreFlags* flags) {
  c->add_option("--data-dir", flags->data_dir, "folder of the SQLite store (powerplane.db)")
      ->capture_default_str();
  c->add_option("--store", flags->store_url,
                "postgresql://... or sqlite:PATH[?busy_timeout_ms=N] (instead of --data-dir)");
}

std::vector<std::string> SplitComma(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= text.size() && !text.empty()) {
    const auto comma = text.find(',', start);
    out.push_back(text.substr(start, comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// Records a change made from the command line in the audit log, as the admin API records its own
// (actor "admin"). The change is made already, so a failure here is reported, not fatal.
void Audit(store::Store& st, std::string action, std::string detail) {
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  if (auto r = st.AppendAudit({now_ms, "cli", std::move(action), std::move(detail)}); !r) {
    std::fprintf(stderr, "warning: audit log: %s\n", r.error().c_str());
  }
}

}  // namespace

TenancyCommands::TenancyCommands(CLI::App& app) {
  keys_ = app.add_subcommand("keys", "API keys in the tenancy store: create, list, revoke");
  keys_->require_subcommand(1);
  keys_create_ = keys_->add_subcommand("create", "create a key for a tenant; shown once");
  keys_create_->add_option("--tenant", tenant_, "tenant id")->required();
  keys_list_ = keys_->add_subcommand("list", "list keys (never their text)");
  keys_list_->add_option("--tenant", tenant_, "only this tenant's keys");
  keys_revoke_ = keys_->add_subcommand("revoke", "revoke a key (every gateway within a second)");
  keys_revoke_->add_option("id", key_id_, "key id")->required();
  tenants_ = app.add_subcommand("tenants", "tenants in the tenancy store: add, list");
  tenants_->require_subcommand(1);
  tenants_add_ = tenants_->add_subcommand(
      "add", "add a tenant, or change the given fields of a stored one (the others are kept)");
  tenants_add_->add_option("--id", tenant_, "tenant id")->required();
  tenants_add_->add_option("--jurisdictions", jurisdictions_, "allowed, comma-separated (empty = any)");
  tenants_add_->add_option("--class", priority_class_, "interactive, standard or batch")
      ->capture_default_str();
  // The admin API's bounds: beyond them a value is refused, not clamped.
  tenants_add_->add_option("--latency-target-ms", latency_target_ms_, "time to first token target")
      ->check(CLI::Range(std::int64_t{0}, gateway::kMaxLatencyTargetMs));
  tenants_add_->add_option("--rpm", rpm_, "requests per minute (0 = unlimited)")
      ->check(CLI::Range(std::int64_t{0}, gateway::kMaxPerMinute));
  tenants_add_->add_option("--tpm", tpm_, "tokens per minute (0 = unlimited)")
      ->check(CLI::Range(std::int64_t{0}, gateway::kMaxPerMinute));
  tenants_add_->add_option("--budget-usd", budget_usd_, "USD per period (0 = none)");
  tenants_add_->add_option("--budget-period", budget_period_, "day, month or none")
      ->capture_default_str();
  tenants_list_ = tenants_->add_subcommand("list", "list tenants");
  for (CLI::App* c : {keys_create_, keys_list_, keys_revoke_, tenants_add_, tenants_list_}) {
    AddStoreFlags(c, &store_);
  }
}

int TenancyCommands::Run() {
  if (!keys_->parsed() && !tenants_->parsed()) return -1;
  auto fail = [](const std::string& e) {
    std::fprintf(stderr, "error: %s\n", e.c_str());
    return 1;
  };
  // The tenant `tenants add` stores: the flags given, over `base` (the stored tenant of that id,
  // so that a flag left out keeps its value; the defaults for a new one).
  auto added_over = [&](store::TenantRecord base) {
    base.id = tenant_;
    auto given = [&](const char* flag) { return tenants_add_->count(flag) > 0; };
    if (given("--jurisdictions")) base.jurisdictions = SplitComma(jurisdictions_);
    if (given("--class")) base.priority_class = priority_class_;
    if (given("--latency-target-ms")) base.latency_target_ms = latency_target_ms_;
    if (given("--rpm")) base.rpm = rpm_;
    if (given("--tpm")) base.tpm = tpm_;
    if (given("--budget-usd")) base.budget_usd = budget_usd_;
    if (given("--budget-period")) base.budget_period = budget_period_;
    return base;
  };
  if (tenants_add_->parsed()) {
    if (auto err = store::TenantError(added_over({}))) return fail(*err);
  }
  // Only `tenants add` makes a new SQLite store: any other command on a missing one is a mistyped
  // --data-dir (a new store has no tenant to make a key for, and nothing to list or revoke).
  const auto file = store::SqliteFile(store_.store_url, store_.data_dir);
  std::error_code ec;
  const bool new_store = file && !std::filesystem::exists(*file, ec);
  if (new_store && !tenants_add_->parsed()) {
    std::fprintf(stderr,
                 "error: no store at %s (check --data-dir or --store; `powerplane tenants add` "
                 "makes a new one)\n",
                 file->c_str());
    return 2;
  }
  auto opened = store::Store::Open(store_.store_url, store_.data_dir);
  if (!opened) {
    std::fprintf(stderr, "error: store: %s\n", opened.error().c_str());
    return 2;
  }
  if (new_store) std::fprintf(stderr, "notice: created a new store at %s\n", file->c_str());
  store::Store& st = **opened;
  if (keys_create_->parsed()) {
    auto known = st.GetTenant(tenant_);
    if (!known) return fail(known.error());
    if (!*known) {
      return fail("unknown tenant '" + tenant_ +
                  "': add it first (powerplane tenants add, POST /admin/tenants or the fleet file)");
    }
    auto key = st.CreateKey(tenant_);
    if (!key) return fail(key.error());
    Audit(st, "key.create", gateway::AuditDetail({{"id", key->record.id}, {"tenant", tenant_}}));
    std::printf("id:     %s\ntenant: %s\nkey:    %s\n(the key is shown once; only its hash is "
                "stored)\n",
                key->record.id.c_str(), key->record.tenant.c_str(), key->plaintext.c_str());
    return 0;
  }
  if (keys_list_->parsed()) {
    auto keys = tenant_.empty() ? st.Keys() : st.Keys(std::string_view(tenant_));
    if (!keys) return fail(keys.error());
    std::printf("%-20s %-20s %s\n", "id", "tenant", "state");
    for (const auto& k : *keys) {
      std::printf("%-20s %-20s %s\n", k.id.c_str(), k.tenant.c_str(), k.revoked ? "revoked" : "live");
    }
    return 0;
  }
  if (keys_revoke_->parsed()) {
    auto revoked = st.RevokeKey(key_id_);
    if (!revoked) return fail(revoked.error());
    if (!*revoked) return fail("no live key '" + key_id_ + "'");
    Audit(st, "key.revoke", gateway::AuditDetail({{"id", key_id_}}));
    std::printf("revoked %s\n", key_id_.c_str());
    return 0;
  }
  if (tenants_add_->parsed()) {
    auto stored = st.GetTenant(tenant_);
    if (!stored) return fail(stored.error());
    const store::TenantRecord added = added_over(stored->value_or(store::TenantRecord{}));
    if (auto err = store::TenantError(added)) return fail(*err);
    if (auto r = st.PutTenant(added); !r) return fail(r.error());
    Audit(st, "tenant.put", gateway::TenantToJson(added));
    std::printf("tenant %s stored\n", added.id.c_str());
    return 0;
  }
  auto tenants = st.Tenants();
  if (!tenants) return fail(tenants.error());
  std::printf("%-20s %-12s %-12s %8s %10s %12s %s\n", "id", "class", "jurisdictions", "rpm", "tpm",
              "budget_usd", "period");
  for (const auto& t : *tenants) {
    std::string j;
    for (const auto& x : t.jurisdictions) j += (j.empty() ? "" : ",") + x;
    std::printf("%-20s %-12s %-12s %8lld %10lld %12.6g %s\n", t.id.c_str(),
                t.priority_class.c_str(), j.empty() ? "any" : j.c_str(),
                static_cast<long long>(t.rpm), static_cast<long long>(t.tpm), t.budget_usd,
                t.budget_period.c_str());
  }
  return 0;
}

}  // namespace powerplane::cli
