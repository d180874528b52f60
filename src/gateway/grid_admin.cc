// The admin API of the grid side: grid events (POST/GET /admin/grid-events, DELETE
// /admin/grid-events/{id}) and the hashprice (GET/POST /admin/hashprice).

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <expected>
#include <nlohmann/json.hpp>

#include "gateway/admin_parse.h"
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

std::string HashpriceJson(double usd_per_ph_day) {
  return json{{"usd_per_ph_day", usd_per_ph_day}}.dump();
}

std::string DeletedJson(const std::string& id) { return json{{"deleted", id}}.dump(); }
std::string EventIdJson(const std::string& id) { return AuditDetail({{"id", id}}); }

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
    if (request.method() != http::verb::get && request.method() != http::verb::post) {
      co_await Fail(responder, id, http::status::method_not_allowed, "use GET or POST",
                    "invalid_request_error", "method_not_allowed", 0, "GET, POST");
      co_return true;
    }
    if (request.method() == http::verb::post) {
      const auto hashprice = HashpriceFromJson(request.body());
      if (!hashprice) {
        co_await Fail(responder, id, http::status::bad_request, hashprice.error(),
                      "invalid_request_error", "invalid_body");
        co_return true;
      }
      grid.SetHashprice(*hashprice);
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
    const auto site_known = [this](std::string_view site) {
      return fleet_.SiteIndex(site).has_value();
    };
    auto event = GridEventFromJson(request.body(), site_known, NowSeconds());
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
    tenancy_->Audit("admin", "grid_event.delete", EventIdJson(event_id));
    auto res = net::MakeResponse(http::status::ok, DeletedJson(event_id), "application/json");
    co_await responder.Send(std::move(res));
    co_return true;
  }
  const std::string_view allow = path == kEvents ? "GET, POST" : "DELETE";
  const std::string message = "use " + std::string(allow);
  co_await Fail(responder, id, http::status::method_not_allowed, message, "invalid_request_error",
                "method_not_allowed", 0, allow);
  co_return true;
}

}  // namespace powerplane::gateway
