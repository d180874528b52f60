// The admin API of tenancy: tenants (POST/GET /admin/tenants), keys (POST/GET /admin/keys,
// DELETE /admin/keys/{id}), usage (GET /admin/usage), the ledger (GET /admin/ledger) and the audit
// log (GET /admin/audit), and the gateways sharing the store by their budget leases (GET
// /admin/gateways, DELETE /admin/gateways/{member}). Their store work runs on the gateway's admin thread, not on the I/O
// thread that received the request, so a long export or a slow store delays no other request.

#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <charconv>
#include <limits>
#include <optional>
#include <nlohmann/json.hpp>

#include "gateway/admin_parse.h"
#include "gateway/gateway.h"
#include "grid/time.h"

namespace powerplane::gateway {
namespace http = net::http;
using json = nlohmann::json;
namespace {

// ISO 8601 with milliseconds ("2026-11-28T12:00:00.123Z"): a ledger's rows keep their order
// and their gaps (whole seconds lost both).
std::string IsoMs(std::int64_t ms) {
  const std::int64_t whole_s = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
  const std::string s = grid::FormatUtc(grid::UtcTime(std::chrono::seconds(whole_s)));
  return fmt::format("{}.{:03}Z", s.substr(0, s.size() - 1), ms - whole_s * 1000);
}

json KeyJson(const store::KeyRecord& k) {
  return {{"id", k.id},
          {"tenant", k.tenant},
          {"created", IsoMs(k.created_unix_ms)},
          {"revoked", k.revoked},
          {"revoked_at", k.revoked ? json(IsoMs(k.revoked_unix_ms)) : json()}};
}

std::string CsvField(std::string_view v) {
  if (v.find_first_of(",\"\n") == std::string_view::npos) return std::string(v);
  std::string out = "\"";
  for (char c : v) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

json LedgerJson(const store::LedgerRow& r) {
  return {{"request_id", r.request_id},       {"tenant", r.tenant},
          {"key_id", r.key_id},               {"model", r.model},
          {"site", r.site},                   {"endpoint", r.endpoint},
          {"class", r.priority_class},        {"prompt_tokens", r.prompt_tokens},
          {"completion_tokens", r.completion_tokens},
          {"start", IsoMs(r.start_unix_ms)},  {"end", IsoMs(r.end_unix_ms)},
          {"ttft_ms", r.ttft_ms},             {"joules", r.joules},
          {"usd_per_mwh", r.usd_per_mwh},     {"energy_cost_usd", r.energy_cost_usd},
          {"charged_usd", r.charged_usd},     {"outcome", r.outcome}};
}

std::string LedgerCsv(const std::vector<store::LedgerRow>& rows) {
  std::string out =
      "request_id,tenant,key_id,model,site,endpoint,class,prompt_tokens,completion_tokens,start,"
      "end,ttft_ms,joules,usd_per_mwh,energy_cost_usd,charged_usd,outcome\n";
  for (const auto& r : rows) {
    out += CsvField(r.request_id) + ',' + CsvField(r.tenant) + ',' + CsvField(r.key_id) + ',' +
           CsvField(r.model) + ',' + CsvField(r.site) + ',' + CsvField(r.endpoint) + ',' +
           CsvField(r.priority_class) + ',' + std::to_string(r.prompt_tokens) + ',' +
           std::to_string(r.completion_tokens) + ',' + IsoMs(r.start_unix_ms) + ',' +
           IsoMs(r.end_unix_ms) + ',' + fmt::format("{:.3f},{:.9g},{:.6g},{:.9g},{:.9g},", r.ttft_ms,
                                                    r.joules, r.usd_per_mwh, r.energy_cost_usd,
                                                    r.charged_usd) +
           CsvField(r.outcome) + '\n';
  }
  return out;
}

struct Reply {
  Reply() = default;
  Reply(http::status s, std::string b, std::string type = "application/json", std::string code = "")
      : status(s), body(std::move(b)), content_type(std::move(type)), error_code(std::move(code)) {}
  http::status status = http::status::ok;
  std::string body;
  std::string content_type = "application/json";
  std::string error_code;  // set for errors.
  int retry_after_s = 0;
  std::string allow;  // a 405's methods.
};

Reply Error(http::status status, std::string message, std::string code) {
  return {status, std::move(message), "", std::move(code)};
}

// Whether `path` (/admin/usage, /admin/ledger or /admin/audit) answers in CSV: as `format` says
// (usage: json or csv; the ledger: json, jsonl, ndjson or csv, its JSON being JSON lines; the audit
// log: JSON lines only), or when it is absent, as an Accept of text/csv asks. Any other format is
// refused, naming those the path takes.
std::expected<bool, std::string> WantsCsv(std::string_view path, std::string_view format,
                                          std::string_view accept) {
  const bool usage = path == "/admin/usage";
  if (format.empty()) return accept.find("text/csv") != accept.npos;
  if (format == "json" || (!usage && (format == "jsonl" || format == "ndjson"))) return false;
  if (format == "csv") return true;
  return std::unexpected(usage ? "format must be json or csv"
                               : "format must be json, jsonl, ndjson or csv");
}

// A 405 naming the methods the path takes (in its Allow header too).
Reply NotAllowed(std::string allow) {
  Reply r = Error(http::status::method_not_allowed, "use " + allow, "method_not_allowed");
  r.allow = std::move(allow);
  return r;
}

// A store failure: 503 with Retry-After when a retry may cure it (store::IsBusy), else 500.
Reply StoreError(const std::string& error) {
  const bool busy = store::IsBusy(error);
  Reply reply = Error(busy ? http::status::service_unavailable : http::status::internal_server_error,
                      "store: " + error, busy ? "store_busy" : "store_error");
  if (busy) reply.retry_after_s = 1;
  return reply;
}

// The first of `t`'s jurisdictions that no site of this fleet is in (`fleet`: theirs), if any.
// Jurisdictions are matched exactly ("us" is not "US"), so a tenant limited to one the fleet does
// not have could never be served: refused here, with the fleet's listed.
std::optional<std::string> UnknownJurisdiction(const store::TenantRecord& t,
                                               const std::vector<std::string>& fleet) {
  for (const auto& j : t.jurisdictions) {
    if (std::find(fleet.begin(), fleet.end(), j) != fleet.end()) continue;
    std::string known;
    for (const auto& f : fleet) known += (known.empty() ? "" : ", ") + f;
    return "jurisdictions: no site of this fleet is in '" + j + "' (the fleet's: " + known +
           "; `powerplane tenants add` takes any, for a store shared with other fleets)";
  }
  return std::nullopt;
}

// The gateways of the store, as their budget leases show them: each with when the store last
// heard from it and what it holds of each tenant's budget.
Reply GatewaysList(const Tenancy& tenancy, store::Store& st) {
  auto leases = st.BudgetLeases();
  if (!leases) return StoreError(leases.error());
  json list = json::array();
  for (const auto& l : *leases) {
    if (list.empty() || list.back()["member"] != l.lease.member) {
      list.push_back({{"member", l.lease.member},
                      {"self", l.lease.member == tenancy.member()},
                      {"heard_s_ago", l.heard_ms_ago / 1000.0},
                      {"leases", json::array()}});
    }
    json& g = list.back();
    g["heard_s_ago"] = std::min(g["heard_s_ago"].get<double>(), l.heard_ms_ago / 1000.0);
    g["leases"].push_back({{"tenant", l.lease.tenant},
                           {"period_start", IsoMs(l.lease.period_start_ms)},
                           {"granted_usd", l.lease.granted_usd},
                           {"settled_usd", l.lease.settled_usd},
                           {"spent_usd", l.lease.spent_usd},
                           {"wanted", l.lease.wanted}});
  }
  return {http::status::ok, json{{"self", tenancy.member()}, {"data", list}}.dump()};
}

// Retires a gateway that will not run again on its state directory: the parts of budgets it
// holds go back to the others (its spend counts from the ledger). One heard from lately is
// refused unless `force`: it is running, and would only ask again (meanwhile its requests under
// way may spend what they reserved beyond its grant, now gone).
Reply RetireGateway(Tenancy& tenancy, store::Store& st, std::string_view member, bool force) {
  if (member == tenancy.member()) {
    return Error(http::status::conflict, "'" + std::string(member) + "' is this gateway",
                 "gateway_is_self");
  }
  auto leases = st.BudgetLeases();
  if (!leases) return StoreError(leases.error());
  std::optional<std::int64_t> heard_ms_ago;
  for (const auto& l : *leases) {
    if (l.lease.member != member) continue;
    heard_ms_ago = std::min(heard_ms_ago.value_or(l.heard_ms_ago), l.heard_ms_ago);
  }
  if (!heard_ms_ago) {
    return Error(http::status::not_found, "no gateway '" + std::string(member) + "' holds a lease",
                 "gateway_not_found");
  }
  if (*heard_ms_ago < kLeaseSilentMs && !force) {
    return Error(http::status::conflict,
                 fmt::format("gateway '{}' was heard from {:.0f} s ago: stop it first (a gateway "
                             "can be retired once silent for {} s, or now with ?force=true)",
                             member, *heard_ms_ago / 1000.0, kLeaseSilentMs / 1000),
                 "gateway_alive");
  }
  auto retired = st.RetireBudgetMember(member);
  if (!retired) return StoreError(retired.error());
  tenancy.Audit("admin", "gateway.retire",
                AuditDetail({{"member", member}, {"leases", std::to_string(*retired)}}));
  return {http::status::ok,
          json{{"member", member}, {"retired_leases", *retired}}.dump()};
}

// Everything below runs outside coroutines (see gateway.cc on g++ 12 and JSON literals).
Reply TenancyAdmin(net::ServerRequest& request, Tenancy& tenancy, store::Store& st,
                   std::string_view path, const std::vector<std::string>& jurisdictions) {
  const std::string_view target = request.target();
  const auto method = request.method();
  if (path == "/admin/tenants") {
    if (method == http::verb::get) {
      auto all = st.Tenants();
      if (!all) return StoreError(all.error());
      std::string out = R"({"data":[)";
      for (const auto& t : *all) out += (out.back() == '[' ? "" : ",") + TenantToJson(t);
      return {http::status::ok, out + "]}"};
    }
    if (method != http::verb::post) {
      return NotAllowed("GET, POST");
    }
    auto t = TenantFromJson(request.body());
    if (!t) return Error(http::status::bad_request, t.error(), "invalid_body");
    // A tenant already stored keeps what the body leaves out.
    auto stored = st.GetTenant(t->id);
    if (!stored) return StoreError(stored.error());
    if (stored->has_value()) t = TenantFromJson(request.body(), &**stored);
    if (!t) return Error(http::status::bad_request, t.error(), "invalid_body");
    if (auto unknown = UnknownJurisdiction(*t, jurisdictions)) {
      return Error(http::status::bad_request, *unknown, "invalid_body");
    }
    if (auto r = st.PutTenant(*t); !r) return StoreError(r.error());
    if (auto r = tenancy.Reload(); !r) spdlog::warn("tenancy reload: {}", r.error());
    std::string shown = TenantToJson(*t);
    tenancy.Audit("admin", "tenant.put", shown);
    return {http::status::ok, std::move(shown)};
  }
  if (path == "/admin/keys") {
    if (method == http::verb::get) {
      static constexpr std::string_view kKeys[] = {"tenant"};
      if (auto unknown = UnknownQueryParam(target, kKeys)) {
        return Error(http::status::bad_request, *unknown, "invalid_query");
      }
      const auto tenant = QueryParam(target, "tenant");
      if (!tenant) return Error(http::status::bad_request, tenant.error(), "invalid_query");
      auto keys = tenant->empty() ? st.Keys() : st.Keys(std::string_view(*tenant));
      if (!keys) return StoreError(keys.error());
      json list = json::array();
      for (const auto& k : *keys) list.push_back(KeyJson(k));
      return {http::status::ok, json{{"data", list}}.dump()};
    }
    if (method != http::verb::post) {
      return NotAllowed("GET, POST");
    }
    auto j = json::parse(request.body(), nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("tenant") || !j["tenant"].is_string() ||
        j.size() != 1) {
      return Error(http::status::bad_request,
                   "body must be {\"tenant\": \"id\"} and nothing else", "invalid_body");
    }
    const std::string tenant = j["tenant"];
    auto known = st.GetTenant(tenant);
    if (!known) return StoreError(known.error());
    if (!*known) {
      return Error(http::status::not_found, "unknown tenant '" + tenant + "'", "tenant_not_found");
    }
    auto created = st.CreateKey(tenant);
    if (!created) return StoreError(created.error());
    if (auto r = tenancy.Reload(); !r) spdlog::warn("tenancy reload: {}", r.error());
    tenancy.Audit("admin", "key.create",
                  AuditDetail({{"id", created->record.id}, {"tenant", tenant}}));
    json out = KeyJson(created->record);
    out["key"] = created->plaintext;  // shown once; only its hash is stored.
    return {http::status::ok, out.dump()};
  }
  if (path.starts_with("/admin/keys/")) {
    if (method != http::verb::delete_) {
      return NotAllowed("DELETE");
    }
    const std::string key_id(path.substr(std::string_view("/admin/keys/").size()));
    auto revoked = st.RevokeKey(key_id);
    if (!revoked) return StoreError(revoked.error());
    if (!*revoked) {
      return Error(http::status::not_found, "no live key '" + key_id + "'", "key_not_found");
    }
    // Takes effect here at once; other gateways sharing the store see the version move.
    if (auto r = tenancy.Reload(); !r) spdlog::warn("tenancy reload: {}", r.error());
    tenancy.Audit("admin", "key.revoke", AuditDetail({{"id", key_id}}));
    return {http::status::ok, json{{"id", key_id}, {"revoked", true}}.dump()};
  }
  if (path == "/admin/gateways") {
    if (method != http::verb::get) return NotAllowed("GET");
    return GatewaysList(tenancy, st);
  }
  if (path.starts_with("/admin/gateways/")) {
    if (method != http::verb::delete_) return NotAllowed("DELETE");
    const auto force = QueryParam(target, "force");
    if (!force || (!force->empty() && *force != "true" && *force != "false")) {
      return Error(http::status::bad_request, "force must be true or false", "invalid_query");
    }
    return RetireGateway(tenancy, st, path.substr(std::string_view("/admin/gateways/").size()),
                         *force == "true");
  }
  if (method != http::verb::get) {
    return NotAllowed("GET");
  }
  static constexpr std::string_view kUsage[] = {"from", "to", "format", "tenant", "group_by"};
  static constexpr std::string_view kLedger[] = {"from", "to", "format", "tenant"};
  static constexpr std::string_view kAudit[] = {"from", "to", "format"};
  const std::span<const std::string_view> known =
      path == "/admin/usage"    ? std::span<const std::string_view>(kUsage)
      : path == "/admin/ledger" ? std::span<const std::string_view>(kLedger)
                                : std::span<const std::string_view>(kAudit);
  if (auto unknown = UnknownQueryParam(target, known)) {
    return Error(http::status::bad_request, *unknown, "invalid_query");
  }
  auto from = TimeParam(target, "from", 0);
  auto to = TimeParam(target, "to", std::numeric_limits<std::int64_t>::max());
  if (!from) return Error(http::status::bad_request, from.error(), "invalid_query");
  if (!to) return Error(http::status::bad_request, to.error(), "invalid_query");
  if (*from > *to) {
    return Error(http::status::bad_request, "from is after to", "invalid_query");
  }
  const auto format = QueryParam(target, "format");
  if (!format) return Error(http::status::bad_request, format.error(), "invalid_query");
  const auto csv = WantsCsv(path, *format, request[http::field::accept]);
  if (!csv) return Error(http::status::bad_request, csv.error(), "invalid_query");
  const auto tenant_param = QueryParam(target, "tenant");
  if (!tenant_param) return Error(http::status::bad_request, tenant_param.error(), "invalid_query");
  const std::string& tenant = *tenant_param;
  // Journaled rows reach the store a few milliseconds after their requests end: wait for those
  // this gateway has queued, so that its answer includes every request it has finished.
  if (!tenancy.FlushLedger()) spdlog::warn("ledger: rows still queued after the flush wait");
  if (path == "/admin/usage") {
    const auto by_param = QueryParam(target, "group_by");
    if (!by_param) return Error(http::status::bad_request, by_param.error(), "invalid_query");
    const std::string& by = *by_param;
    auto group = store::ParseUsageGroup(by.empty() ? "site" : by);
    if (!group) {
      return Error(http::status::bad_request, "group_by must be site, model, day or tenant",
                   "invalid_query");
    }
    auto rows = st.Usage(tenant, *from, *to, *group);
    if (!rows) return StoreError(rows.error());
    if (*csv) {
      std::string out = "group,requests,prompt_tokens,completion_tokens,joules,energy_cost_usd,"
                        "charged_usd\n";
      for (const auto& u : *rows) {
        out += CsvField(u.group) + fmt::format(",{},{},{},{:.9g},{:.9g},{:.9g}\n", u.requests,
                                               u.prompt_tokens, u.completion_tokens, u.joules,
                                               u.energy_cost_usd, u.charged_usd);
      }
      return {http::status::ok, std::move(out), "text/csv"};
    }
    json list = json::array();
    for (const auto& u : *rows) {
      list.push_back({{"group", u.group},
                      {"requests", u.requests},
                      {"prompt_tokens", u.prompt_tokens},
                      {"completion_tokens", u.completion_tokens},
                      {"joules", u.joules},
                      {"energy_cost_usd", u.energy_cost_usd},
                      {"charged_usd", u.charged_usd}});
    }
    return {http::status::ok,
            json{{"group_by", by.empty() ? "site" : by}, {"data", list}}.dump()};
  }
  if (path == "/admin/ledger") {
    auto rows = tenant.empty() ? st.Ledger(*from, *to) : st.Ledger(*from, *to, std::string_view(tenant));
    if (!rows) return StoreError(rows.error());
    if (*csv) return {http::status::ok, LedgerCsv(*rows), "text/csv"};
    std::string out;
    for (const auto& r : *rows) out += LedgerJson(r).dump() + "\n";
    return {http::status::ok, std::move(out), "application/x-ndjson"};
  }
  // /admin/audit
  auto rows = st.Audit(*from, *to);
  if (!rows) return StoreError(rows.error());
  std::string out;
  if (*csv) {
    out = "time,actor,action,detail\n";
    for (const auto& a : *rows) {
      out += IsoMs(a.unix_ms) + ',' + CsvField(a.actor) + ',' + CsvField(a.action) + ',' +
             CsvField(a.detail) + '\n';
    }
    return {http::status::ok, std::move(out), "text/csv"};
  }
  for (const auto& a : *rows) {
    out += json{{"time", IsoMs(a.unix_ms)}, {"actor", a.actor}, {"action", a.action},
                {"detail", a.detail}}.dump() + "\n";
  }
  return {http::status::ok, std::move(out), "application/x-ndjson"};
}

}  // namespace

std::vector<std::string> Gateway::FleetJurisdictions() const {
  std::vector<std::string> out;
  for (std::uint32_t i = 0; i < fleet_.site_count(); ++i) {
    const std::string& j = fleet_.site(i).jurisdiction;
    if (std::find(out.begin(), out.end(), j) == out.end()) out.push_back(j);
  }
  return out;
}

net::asio::awaitable<bool> Gateway::HandleTenancyAdmin(net::ServerRequest& request,
                                                       net::Responder& responder) {
  const std::string_view target = request.target();
  const std::string_view path = target.substr(0, target.find('?'));
  const bool tenancy_path = path == "/admin/tenants" || path == "/admin/keys" ||
                            path.starts_with("/admin/keys/") || path == "/admin/usage" ||
                            path == "/admin/ledger" || path == "/admin/audit" ||
                            path == "/admin/gateways" || path.starts_with("/admin/gateways/");
  if (!tenancy_path) co_return false;
  const std::string id = NewRequestId();
  store::Store* st = tenancy_->store();
  Reply reply;
  if (st == nullptr) {
    reply = Error(http::status::not_found,
                  "tenancy admin needs a store (powerplane up --data-dir DIR or --store URL)",
                  "no_store");
  } else {
    const std::vector<std::string> jurisdictions = FleetJurisdictions();
    // On the admin thread; the request resumes on its own I/O thread afterwards.
    reply = co_await net::asio::co_spawn(
        admin_pool_.get_executor(),
        [&]() -> net::asio::awaitable<Reply> {
          co_return TenancyAdmin(request, *tenancy_, *st, path, jurisdictions);
        },
        net::asio::use_awaitable);
  }
  if (!reply.error_code.empty()) {
    const bool server = static_cast<int>(reply.status) >= 500;
    co_await Fail(responder, id, reply.status, reply.body,
                  server ? "server_error" : "invalid_request_error", reply.error_code,
                  reply.retry_after_s, reply.allow);
  } else {
    co_await responder.Send(net::MakeResponse(reply.status, std::move(reply.body),
                                              reply.content_type));
  }
  co_return true;
}

}  // namespace powerplane::gateway
