#include "gateway/gateway.h"

#include <spdlog/spdlog.h>

#include <charconv>
#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>

#include "fleet/config.h"
#include "gateway/admin_parse.h"
#include "gateway/await_done.h"

namespace powerplane::gateway {
namespace http = net::http;
using json = nlohmann::json;

namespace {

// JSON is built outside coroutines: g++ 12 miscompiles initializer lists of string literals in a
// coroutine body ("array used as initializer").
std::string ModelsJson(const std::vector<std::string>& models) {
  json data = json::array();
  for (const auto& m : models) {
    data.push_back(
        {{"id", m}, {"object", "model"}, {"created", 1721692800}, {"owned_by", "powerplane"}});
  }
  return json{{"object", "list"}, {"data", std::move(data)}}.dump();
}

std::string RateLimitMessage(const Tenant& t, bool tokens, std::int64_t worst_tokens) {
  if (tokens) {
    return "Rate limit reached for tokens per minute (" + std::to_string(t.tpm) +
           "); this request needs up to " + std::to_string(worst_tokens);
  }
  return "Rate limit reached for requests per minute (" + std::to_string(t.rpm) + ")";
}

std::string TooLargeMessage(const Tenant& t, int prompt_tokens, std::optional<int> max_tokens,
                            int worst_output) {
  std::string m = "Request too large: it may use up to " +
                  std::to_string(static_cast<std::int64_t>(prompt_tokens) + worst_output) +
                  " tokens (" + std::to_string(prompt_tokens) + " in the prompt and " +
                  std::to_string(worst_output) + " of output, ";
  m += max_tokens ? "its max_tokens" : "the default when max_tokens is not set";
  m += "), more than your limit of " + std::to_string(t.tpm) +
       " tokens per minute. Lower max_tokens or shorten the prompt.";
  return m;
}

// (Outside the coroutine: see the note above on g++ 12 and JSON temporaries.)
std::string SiteJson(const std::string& site) { return AuditDetail({{"site", site}}); }

std::string PriceJson(const std::string& site, double usd_per_mwh) {
  return json{{"site", site}, {"usd_per_mwh", usd_per_mwh}}.dump();
}

// The one method a path of the public API takes; none for any other path (admin paths answer
// their own 405s). A GET path also takes HEAD (the server sends the answer's header alone).
std::optional<http::verb> PublicPathMethod(std::string_view path) {
  if (path == "/v1/chat/completions" || path == "/v1/completions") return http::verb::post;
  if (path == "/v1/models" || path == "/metrics" || path == "/healthz") return http::verb::get;
  return std::nullopt;
}

// Why a request was not let in: no key at all, or one that is not (or no longer) valid.
std::string UnauthorizedMessage(const net::ServerRequest& request) {
  if (BearerToken(request[http::field::authorization]).empty()) {
    return "You didn't provide an API key. Send it in the Authorization header as "
           "'Authorization: Bearer YOUR_KEY'.";
  }
  return "Incorrect API key provided.";
}

}  // namespace

// "req_", the Unix time in milliseconds (12 hex digits), 12 random hex digits, then an 8-digit
// hex counter; written by hand, not with snprintf, since every request makes one. Ids made later
// sort after earlier ones (as UUIDv7s do), so the ledger's primary key grows at its end instead
// of at random places: a batch of rows dirties a few index pages, not one per row.
std::string NewRequestId() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  thread_local std::uint32_t counter = 0;
  constexpr char kHex[] = "0123456789abcdef";
  std::string id(4 + 12 + 12 + 8, '0');
  id.replace(0, 4, "req_");
  const auto put_hex = [&](std::size_t end, std::size_t digits, std::uint64_t value) {
    for (std::size_t i = end; i-- > end - digits;) {
      id[i] = kHex[value & 15];
      value >>= 4;
    }
  };
  const auto unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
  put_hex(4 + 12, 12, static_cast<std::uint64_t>(unix_ms));
  put_hex(4 + 24, 12, rng());
  put_hex(4 + 32, 8, ++counter);
  return id;
}

Gateway::Gateway(fleet::Fleet& fleet, TenantDirectory tenants, GatewayOptions options)
    : Gateway(fleet, std::make_shared<Tenancy>(std::move(tenants)), std::move(options)) {}

Gateway::Gateway(fleet::Fleet& fleet, std::shared_ptr<Tenancy> tenancy, GatewayOptions options)
    : fleet_(fleet),
      tenancy_(std::move(tenancy)),
      options_(std::move(options)),
      metrics_(fleet, options_.grid) {}

net::Handler Gateway::handler() {
  return [this](net::ServerRequest& req, net::Responder& r) { return Handle(req, r); };
}

net::Handler Gateway::admin_handler() {
  return [this](net::ServerRequest& req, net::Responder& r) { return HandleAdminListener(req, r); };
}

net::asio::awaitable<void> Gateway::HandleAdminListener(net::ServerRequest& request,
                                                        net::Responder& responder) {
  const std::string_view target = request.target();
  const std::string_view path = target.substr(0, target.find('?'));
  if (path.starts_with("/admin/") || path == "/metrics" || path == "/healthz") {
    co_await Handle(request, responder, /*admin_listener=*/true);
    co_return;
  }
  co_await Fail(responder, NewRequestId(), http::status::not_found,
                "this listener serves only /admin/, /metrics and /healthz", "invalid_request_error",
                "not_found");
}

net::asio::awaitable<void> Gateway::Fail(net::Responder& responder, const std::string& request_id,
                                         http::status status, std::string_view message,
                                         std::string_view type, std::string_view code,
                                         int retry_after_s, std::string_view allow) {
  auto res = net::ErrorResponse(status, message, type, code);
  res.set("x-request-id", request_id);
  if (retry_after_s > 0) res.set(http::field::retry_after, std::to_string(retry_after_s));
  if (!allow.empty()) res.set(http::field::allow, allow);  // a 405's methods (RFC 9110).
  // A budget spent for the period, a request larger than a whole minute's tokens, or a model
  // no site of the tenant's jurisdictions serves: retrying in seconds cannot help, and the
  // OpenAI SDKs obey this header over their retries.
  if (code == "insufficient_quota" || code == "request_too_large" ||
      code == "no_capacity_in_jurisdiction") {
    res.set("x-should-retry", "false");
  }
  metrics_.RecordRequest("", static_cast<int>(status));
  co_await responder.Send(std::move(res));
}

net::asio::awaitable<void> Gateway::Handle(net::ServerRequest& request, net::Responder& responder,
                                           bool admin_listener) {
  const std::string_view target = request.target();
  const std::string_view path = target.substr(0, target.find('?'));
  if (request.method() == http::verb::post &&
      (path == "/v1/chat/completions" || path == "/v1/completions")) {
    return HandleInference(path == "/v1/completions" ? ApiKind::kCompletion : ApiKind::kChat,
                           request, responder);
  }
  return HandleOther(path, request, responder, admin_listener);
}

net::asio::awaitable<void> Gateway::HandleOther(std::string_view path, net::ServerRequest& request,
                                                net::Responder& responder, bool admin_listener) {
  // A POST to the completions paths went to HandleInference: here they take no method.
  if (const auto method = PublicPathMethod(path);
      method && request.method() != *method &&
      !(*method == http::verb::get && request.method() == http::verb::head)) {
    const std::string_view allow = *method == http::verb::get ? std::string_view("GET, HEAD")
                                                               : std::string_view("POST");
    const std::string message = "use " + std::string(allow) + " for " + std::string(path);
    co_await Fail(responder, NewRequestId(), http::status::method_not_allowed, message,
                  "invalid_request_error", "method_not_allowed", 0, allow);
    co_return;
  }
  if (path == "/v1/models") {
    const Identity tenant = co_await IdentifyCaller(request);
    if (!tenant) {
      co_await Fail(responder, NewRequestId(), http::status::unauthorized,
                    UnauthorizedMessage(request), "invalid_request_error", "invalid_api_key");
      co_return;
    }
    auto res = net::MakeResponse(http::status::ok, ModelsJson(fleet_.models()), "application/json");
    co_await responder.Send(std::move(res));
    co_return;
  }
  if (path == "/metrics" && options_.admin_on_separate_listener && !admin_listener) {
    // With an admin listener, the fleet's figures are served there only, as the admin API is.
    co_await Fail(responder, NewRequestId(), http::status::not_found,
                  "Unknown path /metrics (served on the admin listener)", "invalid_request_error",
                  "not_found");
    co_return;
  }
  if (path == "/metrics") {
    if (tenancy_) metrics_.SetRateLimitPeers(tenancy_->rate_limit_peers());
    co_await responder.Send(net::MakeResponse(http::status::ok, metrics_.Serialize(),
                                              "text/plain; version=0.0.4"));
    co_return;
  }
  if (path == "/healthz") {
    auto res = net::MakeResponse(http::status::ok, std::string(R"({"status":"ok"})"),
                                 "application/json");
    co_await responder.Send(std::move(res));
    co_return;
  }
  if (path.starts_with("/admin/")) {
    if (options_.admin_on_separate_listener && !admin_listener) {
      // The admin API lives on its own listener: this one does not even admit it exists.
      co_await Fail(responder, NewRequestId(), http::status::not_found,
                    "Unknown path " + std::string(path), "invalid_request_error", "not_found");
      co_return;
    }
    co_await HandleAdmin(request, responder);
    co_return;
  }
  co_await Fail(responder, NewRequestId(), http::status::not_found,
                "Unknown path " + std::string(path), "invalid_request_error", "not_found");
}

// A key this gateway does not know yet may have been made a moment ago at another gateway of the
// store: the store is asked (off this thread) before the key is refused.
net::asio::awaitable<Identity> Gateway::IdentifyCaller(const net::ServerRequest& request) {
  const std::string_view key = BearerToken(request[http::field::authorization]);
  Identity identity = tenancy_->Identify(key);
  if (identity || key.empty() || !tenancy_->has_store()) co_return identity;
  co_return co_await AwaitDone<Identity>(
      [this, &key](std::function<void(Identity)> done) {
        tenancy_->IdentifyAfterLook(std::string(key), std::move(done));
      });
}

net::asio::awaitable<void> Gateway::HandleInference(ApiKind kind, net::ServerRequest& request,
                                                    net::Responder& responder) {
  Call call;
  call.start = std::chrono::steady_clock::now();
  call.request_id = NewRequestId();
  Identity identity = co_await IdentifyCaller(request);
  call.tenant = std::move(identity.tenant);
  call.key_id = std::move(identity.key_id);
  call.start_unix_ms = UnixMsNow();
  if (!call.tenant) {
    co_await Fail(responder, call.request_id, http::status::unauthorized,
                  UnauthorizedMessage(request), "invalid_request_error", "invalid_api_key");
    co_return;
  }
  auto parsed = ParseOpenAiRequest(kind, request.body());
  if (!parsed) {
    auto res = net::MakeResponse(
        static_cast<http::status>(parsed.error().status),
        net::ErrorBody(parsed.error().message, "invalid_request_error", parsed.error().code,
                       parsed.error().param),
        "application/json");
    res.set("x-request-id", call.request_id);
    metrics_.RecordRequest("", parsed.error().status);
    co_await responder.Send(std::move(res));
    co_return;
  }
  call.parsed = std::move(*parsed);
  auto model = fleet_.ModelIndex(call.parsed.model);
  if (!model) {
    co_await Fail(responder, call.request_id, http::status::not_found,
                  "The model '" + call.parsed.model + "' does not exist", "invalid_request_error",
                  "model_not_found");
    co_return;
  }
  const Tenant& t = *call.tenant;
  core::Request& r = call.routed;
  r.model_index = *model;
  r.prompt_tokens = call.parsed.prompt_tokens;
  r.max_output_tokens = call.parsed.max_tokens.value_or(0);
  // Planned with the tenant's learned completion length (the fleet default until it has one),
  // capped by max_tokens.
  const int typical = tenancy_->ExpectedOutputTokens(t, options_.default_output_tokens);
  r.expected_output_tokens =
      call.parsed.max_tokens ? std::min(*call.parsed.max_tokens, typical) : typical;
  r.allowed_jurisdictions = t.jurisdictions;
  r.priority = t.priority;
  r.ttft_target_s = t.ttft_target_s;
  r.tpot_target_s = t.tpot_target_s;
  // Requests and tokens per minute: the worst case (prompt + the most output it may produce) is
  // taken now and the unused part given back when the request ends.
  const int worst_output =
      call.parsed.max_tokens ? *call.parsed.max_tokens : options_.worst_case_output_tokens;
  call.worst_tokens = static_cast<std::int64_t>(r.prompt_tokens) + worst_output;
  if (t.tpm > 0 && call.worst_tokens > t.tpm) {
    // More than a whole minute's tokens: no wait would let it in, so no Retry-After, and the
    // header the OpenAI SDKs obey tells them not to retry it.
    const std::string message = TooLargeMessage(t, r.prompt_tokens, call.parsed.max_tokens,
                                                worst_output);
    co_await Fail(responder, call.request_id, http::status::too_many_requests, message,
                  "rate_limit_error", "request_too_large");
    co_return;
  }
  const Admission rate = tenancy_->AdmitRate(t, call.worst_tokens);
  if (rate.verdict != Admission::Verdict::kOk) {
    // Built outside the co_await: g++ 12 destroys temporaries of a ?: inside one twice.
    const bool tokens = rate.verdict == Admission::Verdict::kTokenLimited;
    const std::string message = RateLimitMessage(t, tokens, call.worst_tokens);
    const std::string_view code = tokens ? "tokens_per_minute" : "requests_per_minute";
    co_await Fail(responder, call.request_id, http::status::too_many_requests, message,
                  "rate_limit_error", code, rate.retry_after_s);
    co_return;
  }
  call.target = std::string(request.target());
  call.upstream_body = UpstreamBody(call.parsed, std::move(request.body()));
  co_await Proxy(call, responder);
}

std::string Gateway::FleetJson() const {
  const fleet::FleetStatus st = fleet_.Status();
  json sites = json::array();
  for (const auto& s : st.sites) {
    json endpoints = json::array();
    for (const auto& e : st.endpoints) {
      if (e.site_id != s.id) continue;
      endpoints.push_back({{"id", e.id},
                           {"model", e.model},
                           {"address", e.address},
                           {"healthy", e.healthy},
                           {"in_flight", e.in_flight},
                           {"running", e.load.running},
                           {"waiting", e.load.waiting},
                           {"kv_cache_usage", e.scraped.kv_usage_fraction},
                           {"power_w", e.scraped.watts >= 0 ? json(e.scraped.watts) : json()},
                           {"failures_in_a_row", e.failures_in_a_row},
                           {"last_error", e.last_error.empty() ? json() : json(e.last_error)}});
    }
    sites.push_back(
        {{"id", s.id},
         {"jurisdiction", s.jurisdiction},
         {"usd_per_mwh", s.usd_per_mwh},
         {"market_usd_per_mwh", s.market_usd_per_mwh},
         {"override_usd_per_mwh",
          s.override_usd_per_mwh ? json(*s.override_usd_per_mwh) : json()},
         {"pue", s.pue},
         {"network_rtt_ms", s.network_rtt_ms},
         {"power_kw", s.facility_watts / 1e3},
         {"gpu_power_kw", s.gpu_watts / 1e3},
         {"in_flight", s.in_flight},
         {"healthy_endpoints", s.healthy_endpoints},
         {"steer_away", s.steer_away},
         {"shed_low_priority", s.shed_low_priority},
         {"deferrable_paused", s.pause_deferrable},
         {"in_flight_batch", s.in_flight_batch},
         {"endpoints", std::move(endpoints)}});
    if (options_.grid) {
      if (auto g = options_.grid->Status(s.id)) {
        json& site = sites.back();
        site["power_kw"] = g->plan.power_kw;
        site["import_kw"] = g->plan.import_kw;
        site["budget_kw"] = g->plan.budget_kw < 1e8 ? json(g->plan.budget_kw) : json();
        site["event"] = g->plan.event ? json{{"id", g->plan.event->id},
                                             {"target_kw", g->plan.event->target_kw},
                                             {"source", g->plan.event->source}}
                                      : json();
        site["target_kw"] = g->plan.event ? json(g->plan.event->target_kw) : json();
        site["miners_kw"] = g->miners_kw;
        site["miners_on"] = g->plan.miners_on;
        site["mining_usd_per_mwh"] = g->mining_usd_per_mwh;
        site["generation_kw"] = g->generation_kw;
        site["export_kw"] = g->export_kw;
        site["gas_kw"] = g->gas_kw;
        site["marginal_source"] = g->marginal_source;
        site["grid_usd_per_mwh"] = g->grid_usd_per_mwh;
        site["gpu_cap_w"] = g->plan.gpu_cap_watts > 0 ? json(g->plan.gpu_cap_watts) : json();
        site["seconds_above_target"] = g->seconds_above_target;
        site["actions"] = json(std::vector<std::string>(g->recent_actions.begin(),
                                                         g->recent_actions.end()));
      }
    }
  }
  json out = {{"sites", std::move(sites)}};
  if (options_.market_time) out["market_time"] = options_.market_time();
  return out.dump();
}

net::asio::awaitable<void> Gateway::HandleAdmin(net::ServerRequest& request,
                                                net::Responder& responder) {
  const std::string id = NewRequestId();
  if (options_.admin_key_sha256.empty()) {
    co_await Fail(responder, id, http::status::not_found, "the admin API is disabled",
                  "invalid_request_error", "not_found");
    co_return;
  }
  const auto key = BearerToken(request[http::field::authorization]);
  if (key.empty() || fleet::Sha256Hex(key) != options_.admin_key_sha256) {
    co_await Fail(responder, id, http::status::unauthorized, "admin key required",
                  "invalid_request_error", "invalid_api_key");
    co_return;
  }
  const std::string_view target = request.target();
  const std::string_view path = target.substr(0, target.find('?'));
  if (co_await HandleGridAdmin(request, responder)) co_return;
  if (co_await HandleTenancyAdmin(request, responder)) co_return;
  if (path == "/admin/fleet") {
    if (request.method() != http::verb::get) {
      co_await Fail(responder, id, http::status::method_not_allowed, "use GET",
                    "invalid_request_error", "method_not_allowed", 0, "GET");
      co_return;
    }
    co_await responder.Send(net::MakeResponse(http::status::ok, FleetJson(), "application/json"));
    co_return;
  }
  // /admin/sites/{id}/price
  constexpr std::string_view kSites = "/admin/sites/";
  constexpr std::string_view kPrice = "/price";
  if (path.starts_with(kSites) && path.ends_with(kPrice) &&
      path.size() > kSites.size() + kPrice.size()) {
    const std::string site_id(
        path.substr(kSites.size(), path.size() - kSites.size() - kPrice.size()));
    auto site = fleet_.SiteIndex(site_id);
    if (!site) {
      co_await Fail(responder, id, http::status::not_found, "unknown site '" + site_id + "'",
                    "invalid_request_error", "site_not_found");
      co_return;
    }
    if (request.method() == http::verb::post || request.method() == http::verb::put) {
      const auto parsed = SitePriceFromJson(request.body());
      if (!parsed) {
        co_await Fail(responder, id, http::status::bad_request, parsed.error(),
                      "invalid_request_error", "invalid_body");
        co_return;
      }
      const double price = *parsed;
      fleet_.SetPriceOverride(*site, price);
      spdlog::info("admin: price of {} overridden to {} USD/MWh", site_id, price);
      tenancy_->Audit("admin", "site.price.set", PriceJson(site_id, price));
    } else if (request.method() == http::verb::delete_) {
      fleet_.SetPriceOverride(*site, std::nullopt);
      spdlog::info("admin: price override of {} cleared", site_id);
      tenancy_->Audit("admin", "site.price.clear", SiteJson(site_id));
    } else {
      co_await Fail(responder, id, http::status::method_not_allowed, "use POST or DELETE",
                    "invalid_request_error", "method_not_allowed", 0, "POST, PUT, DELETE");
      co_return;
    }
    auto res = net::MakeResponse(http::status::ok, PriceJson(site_id, fleet_.UsdPerMwh(*site)),
                                 "application/json");
    co_await responder.Send(std::move(res));
    co_return;
  }
  co_await Fail(responder, id, http::status::not_found, "unknown admin path",
                "invalid_request_error", "not_found");
}

}  // namespace powerplane::gateway
