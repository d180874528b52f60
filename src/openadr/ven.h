#pragma once
// An OpenADR 3 VEN (client): authenticates to a utility's VTN with OAuth2 client credentials,
// polls its events (and, given a callback URL, subscribes to event changes by webhook), turns
// IMPORT_CAPACITY_LIMIT events into core::GridEvents for the sites they target, and posts USAGE
// reports of each targeted site's measured power. A VTN that is down, slow, answers errors or
// sends malformed JSON is counted and logged (rate-limited); the last valid events stay in force.

#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/grid_event.h"
#include "net/http.h"
#include "net/http_server.h"

namespace powerplane::openadr {

// A VTN base URL `http://host[:port][/prefix]` taken apart. prefix is "" or starts with '/' and
// has no trailing '/'. Only plain http is supported.
struct VtnUrl {
  std::string host;
  unsigned short port = 80;
  std::string prefix;
};
std::expected<VtnUrl, std::string> ParseVtnUrl(std::string_view url);

struct VenOptions {
  std::string vtn_url;  // http://host:port[/prefix]; endpoints are prefix + "/events" etc.
  std::string client_id;
  std::string client_secret;
  std::string ven_name = "powerplane";  // clientName in reports and subscriptions.
  // How often GET /events is polled. Never less than min_poll_gap.
  std::chrono::milliseconds poll_interval{2000};
  // The least time between two polls, those a notification triggers included.
  std::chrono::milliseconds min_poll_gap{250};
  // How often USAGE reports are posted (only when a meter callback is given).
  std::chrono::milliseconds report_interval{60000};
  // The ramp every GridEvent gets (OpenADR 3 carries none; see events.h).
  std::chrono::seconds default_ramp{60};
  // Each HTTP exchange with the VTN must finish within this (after Stop, the coroutine exits
  // when the exchange in flight ends).
  std::chrono::milliseconds request_timeout{5000};
  // When not empty: subscribe (POST /subscriptions) to EVENT create/update/delete with this
  // callbackUrl, where the owner mounts NotificationHandler(). Tried after each good poll until
  // it succeeds.
  std::string callback_url;
  // When not empty: sent as the subscription's bearerToken and required on notifications.
  std::string callback_token;
  // A run of faults is logged at its first fault, then at most once per log_interval.
  std::chrono::milliseconds log_interval{60000};
  // UTC seconds since the epoch ("now" for events starting 0001-01-01 and report times).
  // Empty: the system clock.
  std::function<std::int64_t()> clock_s;
};

// Counters since Start. A failed poll counts once in polls_failed and once in its cause.
struct VenStats {
  std::uint64_t polls_ok = 0;
  std::uint64_t polls_failed = 0;
  std::uint64_t unreachable = 0;    // connection refused, reset, name not found.
  std::uint64_t timeouts = 0;       // no full answer within request_timeout.
  std::uint64_t http_errors = 0;    // a non-2xx answer (401/403 count as auth_failures).
  std::uint64_t malformed = 0;      // an answer that is not what the spec says (not JSON, ...).
  std::uint64_t auth_failures = 0;  // a token refused or unreadable, a 401/403 on a call.
  std::uint64_t bad_events = 0;     // malformed events skipped inside good answers (per poll).
  std::uint64_t event_updates = 0;  // times the events callback got a new set.
  std::uint64_t tokens_obtained = 0;
  std::uint64_t reports_posted = 0;
  std::uint64_t reports_failed = 0;
  std::uint64_t notifications = 0;          // accepted webhook notifications.
  std::uint64_t subscription_failures = 0;  // POST /subscriptions failed (retried each poll).
  bool subscribed = false;
  std::string last_error;  // the latest fault, empty when none yet.
};

class Ven {
 public:
  // Gets the full current set of grid events each time it changes (and after the first good
  // poll). Called on the Ven's executor; never after Stop has returned.
  using EventsCallback = std::function<void(std::vector<core::GridEvent>)>;
  // The site's measured power draw in kW, or nullopt when unknown. Called on the Ven's executor;
  // never after Stop has returned.
  using MeterCallback = std::function<std::optional<double>(const std::string& site)>;

  // Checks the options (URL, credentials, intervals). `executor` must be a single-threaded
  // io_context's; the Ven runs there. No meter callback: no reports.
  static std::expected<std::unique_ptr<Ven>, std::string> Create(
      net::asio::any_io_executor executor, VenOptions options, EventsCallback on_events,
      MeterCallback measure_kw = {});
  // Stops. Destroy the Ven before its executor's io_context.
  ~Ven();
  Ven(const Ven&) = delete;
  Ven& operator=(const Ven&) = delete;

  // Starts polling (the first poll at once). Call once. Thread-safe.
  void Start();
  // Stops: no callback runs once this returns; the polling coroutine exits at its next step (at
  // once when waiting, within request_timeout when a request is in flight). Thread-safe.
  void Stop();
  // Polls as soon as min_poll_gap allows. Thread-safe.
  void PollNow();

  // A webhook for the VTN's notifications (the spec's notification object, POSTed): checks the
  // bearer token when one is configured, answers 200 (400 for a malformed notification), and on
  // an EVENT notification triggers a poll. Runs on any executor; the Ven must outlive the call.
  net::asio::awaitable<void> HandleNotification(net::ServerRequest& request,
                                                net::Responder& responder);
  // The same as a Handler that keeps the Ven's state alive (safe to mount on a server that
  // outlives the Ven; after Stop it still answers, without polling).
  net::Handler NotificationHandler() const;

  // Thread-safe snapshots.
  VenStats stats() const;
  std::vector<core::GridEvent> events() const;  // the last valid set.
  bool running() const;                         // the polling coroutine has not exited.

  struct State;

 private:
  explicit Ven(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

}  // namespace powerplane::openadr
