// The admin API of the grid side: grid events (POST/GET /admin/grid-events, DELETE
// /admin/grid-events/{id}) and the hashprice (GET/POST /admin/hashprice).

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <expected>
#include <nlohmann/json.hpp>

#include "gateway/gateway.h"
#include "grid/time.h"

namespace powerplane::gateway {
namespace http = net::http;
using json = nlohmann::json;
namespace {

std::int64_t NowSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

json EventJson(const core::GridEvent& e, std::int64_t now_s) {
  const char* state = e.ActiveAt(now_s) ? (e.BindingAt(now_s) ? "binding" : "ramping")
                      : now_s < e.start_s ? "pending"
                                          : "ended";
  return {{"id", e.id},
          {"site", e.site},
          {"target_kw", e.target_kw},
          {"start", grid::FormatUtc(grid::UtcTime(std::chrono::seconds(e.start_s)))},
          {"duration_s", e.duration_s},
          {"ramp_s", e.ramp_s},
          {"source", e.source},
          {"state", state}};
}

std::string EventsJson(const std::vector<core::GridEvent>& events) {
  const auto now = NowSeconds();
  json out = json::array();
  for (const auto& e : events) out.push_back(EventJson(e, now));
  return json{{"events", out}}.dump();
}

// Parses a POST body into an event; an error message on bad input.
std::expected<core::GridEvent, std::string> ParseEvent(const std::string& body,
                                                       const fleet::Fleet& fleet) {
  auto j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::unexpected("body must be a JSON object");
  core::GridEvent e;
  e.source = "admin";
  if (!j.contains("site") || !j["site"].is_string()) return std::unexpected("'site' is required");
  e.site = j["site"].get<std::string>();
  if (!fleet.SiteIndex(e.site)) return std::unexpected("unknown site '" + e.site + "'");
  if (!j.contains("target_kw") || !j["target_kw"].is_number()) {
    return std::unexpected("'target_kw' is required (a number)");
  }
  e.target_kw = j["target_kw"].get<double>();
  if (!std::isfinite(e.target_kw) || e.target_kw < 0) {
    return std::unexpected("'target_kw' must be >= 0");
  }
  e.start_s = NowSeconds();
  if (j.contains("start") && !j["start"].is_null()) {
    if (j["start"].is_number()) {
      e.start_s = j["start"].get<std::int64_t>();
    } else if (j["start"].is_string()) {
      auto t = grid::ParseUtcTimestamp(j["start"].get<std::string>());
      if (!t) return std::unexpected("'start': " + t.error());
      e.start_s = t->time_since_epoch().count();
    } else {
      return std::unexpected("'start' must be ISO 8601 or epoch seconds");
    }
  }
  for (const char* key : {"duration_s", "ramp_s"}) {
    if (!j.contains(key)) continue;
    if (!j[key].is_number() || j[key].get<double>() < 0) {
      return std::unexpected(std::string("'") + key + "' must be a number >= 0");
    }
  }
  e.duration_s = j.value("duration_s", std::int64_t{3600});
  e.ramp_s = j.value("ramp_s", std::int64_t{10});
  if (j.contains("id") && j["id"].is_string()) e.id = j["id"].get<std::string>();
  return e;
}

std::string HashpriceJson(double usd_per_ph_day) {
  return json{{"usd_per_ph_day", usd_per_ph_day}}.dump();
}

std::string DeletedJson(const std::string& id) { return json{{"deleted", id}}.dump(); }

}  // namespace

net::asio::awaitable<bool> Gateway::HandleGridAdmin(net::ServerRequest& request,
                                                    net::Responder& responder) {
  const std::string_view target = request.target();
  const std::string_view path = target.substr(0, target.find('?'));
  constexpr std::string_view kEvents = "/admin/grid-events";
  const bool events_path = path == kEvents || path.starts_with(std::string(kEvents) + "/");
  if (!events_path && path != "/admin/hashprice") co_return false;
  const std::string id = NewRequestId();
  if (!options_.grid) {
    co_await Fail(responder, id, http::status::not_found, "grid control is not enabled",
                  "invalid_request_error", "not_found");
    co_return true;
  }
  fleet::GridState& grid = *options_.grid;
  if (path == "/admin/hashprice") {
    if (request.method() == http::verb::post) {
      auto j = json::parse(request.body(), nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("usd_per_ph_day") ||
          !j["usd_per_ph_day"].is_number() || j["usd_per_ph_day"].get<double>() < 0) {
        co_await Fail(responder, id, http::status::bad_request,
                      "body must be {\"usd_per_ph_day\": number >= 0}", "invalid_request_error",
                      "invalid_body");
        co_return true;
      }
      grid.SetHashprice(j["usd_per_ph_day"].get<double>());
      spdlog::info("admin: hashprice set to {} USD/PH/day", grid.hashprice());
      tenancy_->Audit("admin", "hashprice.set", HashpriceJson(grid.hashprice()));
    }
    auto res =
        net::MakeResponse(http::status::ok, HashpriceJson(grid.hashprice()), "application/json");
    co_await responder.Send(std::move(res));
    co_return true;
  }
  if (path == kEvents && request.method() == http::verb::get) {
    auto res = net::MakeResponse(http::status::ok, EventsJson(grid.Events()), "application/json");
    co_await responder.Send(std::move(res));
    co_return true;
  }
  if (path == kEvents && request.method() == http::verb::post) {
    auto event = ParseEvent(request.body(), fleet_);
    if (!event) {
      co_await Fail(responder, id, http::status::bad_request, event.error(),
                    "invalid_request_error", "invalid_body");
      co_return true;
    }
    event->id = grid.AddEvent(*event);
    spdlog::info("admin: grid event {} at {}: {} kW for {} s (ramp {} s)", event->id,
                 event->site, event->target_kw, event->duration_s, event->ramp_s);
    std::string created = EventsJson({*event});
    tenancy_->Audit("admin", "grid_event.add", created);
    auto res = net::MakeResponse(http::status::created, std::move(created), "application/json");
    co_await responder.Send(std::move(res));
    co_return true;
  }
  if (path.size() > kEvents.size() + 1 && request.method() == http::verb::delete_) {
    const std::string event_id(path.substr(kEvents.size() + 1));
    if (!grid.DeleteEvent(event_id)) {
      co_await Fail(responder, id, http::status::not_found, "no grid event '" + event_id + "'",
                    "invalid_request_error", "not_found");
      co_return true;
    }
    spdlog::info("admin: grid event {} deleted", event_id);
    tenancy_->Audit("admin", "grid_event.delete", event_id);
    auto res = net::MakeResponse(http::status::ok, DeletedJson(event_id), "application/json");
    co_await responder.Send(std::move(res));
    co_return true;
  }
  co_await Fail(responder, id, http::status::method_not_allowed, "method not allowed here",
                "invalid_request_error", "method_not_allowed");
  co_return true;
}

}  // namespace powerplane::gateway
