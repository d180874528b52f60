#include "openadr/ven.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <charconv>
#include <cmath>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "grid/time.h"
#include "net/http_client.h"
#include "openadr/events.h"

namespace powerplane::openadr {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;
namespace asio = net::asio;
namespace http = net::http;

constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);
constexpr int kPageLimit = 50;  // the spec's maximum `limit`.
constexpr int kMaxPages = 20;

enum class FaultKind { kUnreachable, kTimeout, kHttp, kMalformed, kAuth };

struct Fault {
  FaultKind kind;
  std::string message;
};

std::string FormEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

bool SameEvents(const std::vector<core::GridEvent>& a, const std::vector<core::GridEvent>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const core::GridEvent& x, const core::GridEvent& y) {
                      return x.id == y.id && x.site == y.site && x.target_kw == y.target_kw &&
                             x.start_s == y.start_s && x.duration_s == y.duration_s &&
                             x.ramp_s == y.ramp_s && x.source == y.source;
                    });
}

// A short, printable excerpt of a body for error messages.
std::string Excerpt(std::string_view body) {
  std::string out;
  for (char c : body.substr(0, 80)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (body.size() > 80) out += "...";
  return out;
}

std::string ProblemBody(int status, std::string_view title, std::string_view detail) {
  return Json{{"type", "about:blank"}, {"title", title}, {"status", status}, {"detail", detail}}
      .dump();
}

}  // namespace

std::expected<VtnUrl, std::string> ParseVtnUrl(std::string_view url) {
  constexpr std::string_view kScheme = "http://";
  if (url.substr(0, kScheme.size()) != kScheme) {
    return std::unexpected("the VTN URL must start with http:// (https is not supported)");
  }
  url.remove_prefix(kScheme.size());
  const auto slash = url.find('/');
  const std::string_view authority = url.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view{} : url.substr(slash);
  if (path.find_first_of("?#") != std::string_view::npos) {
    return std::unexpected("the VTN URL must not have a query or fragment");
  }
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  VtnUrl out;
  out.prefix = std::string(path);
  if (authority.empty()) return std::unexpected("the VTN URL has no host");
  if (authority.find('@') != std::string_view::npos) {
    return std::unexpected("the VTN URL must not carry user info");
  }
  if (authority.find(':') == std::string_view::npos) {
    out.host = std::string(authority);
    return out;
  }
  if (!net::SplitHostPort(authority, &out.host, &out.port) || out.port == 0) {
    return std::unexpected("the VTN URL's port is not a number from 1 to 65535");
  }
  return out;
}

struct Ven::State : std::enable_shared_from_this<Ven::State> {
  State(asio::any_io_executor ex, VenOptions o, VtnUrl u, EventsCallback on, MeterCallback m)
      : executor(ex),
        options(std::move(o)),
        url(std::move(u)),
        on_events(std::move(on)),
        measure_kw(std::move(m)),
        timer(ex) {}

  // --- shared by all threads ---
  asio::any_io_executor executor;
  const VenOptions options;
  const VtnUrl url;
  EventsCallback on_events;
  MeterCallback measure_kw;
  std::atomic<bool> stopped{false};
  std::atomic<bool> started{false};
  std::atomic<bool> running{false};
  std::recursive_mutex callback_mu;  // held while a callback runs, and by Stop.
  mutable std::mutex mu;             // guards stats and current.
  VenStats stats;
  std::vector<core::GridEvent> current;

  // --- the executor's only ---
  asio::steady_timer timer;
  bool poll_now = false;
  std::string token;
  Clock::time_point token_refresh_at{};
  std::optional<std::vector<core::GridEvent>> delivered;
  std::vector<EventSummary> summaries;  // of `delivered`, with its ranges.
  int faults_in_a_row = 0;
  Clock::time_point last_fault_log{};
  std::uint64_t faults_not_logged = 0;
  Clock::time_point last_bad_events_log{};
  Clock::time_point last_report_fault_log{};
  Clock::time_point last_subscribe_log{};

  std::int64_t NowS() const {
    if (options.clock_s) return options.clock_s();
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  std::chrono::milliseconds PollInterval() const {
    return std::max(options.poll_interval, options.min_poll_gap);
  }

  // --- HTTP ---

  net::Request MakeRequest(http::verb verb, const std::string& path, bool auth) const {
    net::Request req{verb, url.prefix + path, 11};
    req.set(http::field::host, url.host + ":" + std::to_string(url.port));
    req.set(http::field::accept, "application/json");
    req.set(http::field::user_agent, "powerplane-ven");
    if (auth) req.set(http::field::authorization, "Bearer " + token);
    return req;
  }

  asio::awaitable<std::expected<net::Response, Fault>> Call(net::Request req) {
    const auto begin = Clock::now();
    auto res = co_await net::Fetch(url.host, url.port, std::move(req), options.request_timeout);
    if (res) co_return std::move(*res);
    // net::Fetch reports errors as text; a timeout also shows in the time it took.
    const bool timed_out = res.error().find("timeout") != std::string::npos ||
                           res.error().find("timed out") != std::string::npos ||
                           Clock::now() - begin >= options.request_timeout * 9 / 10;
    co_return std::unexpected(
        Fault{timed_out ? FaultKind::kTimeout : FaultKind::kUnreachable, "VTN " + res.error()});
  }

  static std::string Status(const net::Response& res) {
    return std::to_string(res.result_int()) + " " + Excerpt(res.body());
  }

  // A valid token, fetched when there is none or the current one is near its expiry.
  asio::awaitable<std::expected<void, Fault>> EnsureToken() {
    if (!token.empty() && Clock::now() < token_refresh_at) co_return std::expected<void, Fault>{};
    token.clear();
    auto req = MakeRequest(http::verb::post, "/auth/token", /*auth=*/false);
    req.set(http::field::content_type, "application/x-www-form-urlencoded");
    req.body() = "grant_type=client_credentials&client_id=" + FormEncode(options.client_id) +
                 "&client_secret=" + FormEncode(options.client_secret);
    auto res = co_await Call(std::move(req));
    if (!res) co_return std::unexpected(res.error());
    if (res->result_int() < 200 || res->result_int() > 299) {
      co_return std::unexpected(Fault{FaultKind::kAuth, "token refused: " + Status(*res)});
    }
    const Json body = Json::parse(res->body(), nullptr, /*allow_exceptions=*/false);
    const auto bad = [&](std::string why) -> std::expected<void, Fault> {
      return std::unexpected(
          Fault{FaultKind::kAuth, "token answer " + why + ": " + Excerpt(res->body())});
    };
    if (!body.is_object()) co_return bad("is not a JSON object");
    auto access = body.find("access_token");
    if (access == body.end() || !access->is_string() ||
        access->get_ref<const std::string&>().empty()) {
      co_return bad("has no access_token");
    }
    auto type = body.find("token_type");
    if (type != body.end() && type->is_string()) {
      std::string t = type->get<std::string>();
      std::transform(t.begin(), t.end(), t.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      if (t != "bearer") co_return bad("has token_type other than Bearer");
    }
    std::int64_t expires_in_s = 3600;  // RFC 6749: optional; an hour when absent.
    auto expires = body.find("expires_in");
    if (expires != body.end() && !expires->is_null()) {
      if (!expires->is_number() || !std::isfinite(expires->get<double>()) ||
          expires->get<double>() <= 0) {
        co_return bad("has an expires_in that is not a positive number");
      }
      expires_in_s = static_cast<std::int64_t>(std::min(expires->get<double>(), 1e9));
    }
    // Refresh a fifth of the lifetime (at most a minute) before expiry.
    const auto lifetime = std::chrono::milliseconds(expires_in_s * 1000);
    const auto margin = std::min<std::chrono::milliseconds>(lifetime / 5, std::chrono::seconds(60));
    token = access->get<std::string>();
    token_refresh_at = Clock::now() + lifetime - margin;
    Count([](VenStats& s) { ++s.tokens_obtained; });
    co_return std::expected<void, Fault>{};
  }

  // Sends an authorized request; on 401/403 fetches a new token and tries once more.
  asio::awaitable<std::expected<net::Response, Fault>> AuthorizedCall(http::verb verb,
                                                                      std::string path,
                                                                      std::string json_body) {
    for (int attempt = 0;; ++attempt) {
      auto ok = co_await EnsureToken();
      if (!ok) co_return std::unexpected(ok.error());
      auto req = MakeRequest(verb, path, /*auth=*/true);
      if (!json_body.empty()) {
        req.set(http::field::content_type, "application/json");
        req.body() = json_body;
      }
      auto res = co_await Call(std::move(req));
      if (!res) co_return res;
      const int status = res->result_int();
      if (status == 401 || status == 403) {
        token.clear();
        if (attempt == 0) continue;
        co_return std::unexpected(Fault{FaultKind::kAuth, path + " refused: " + Status(*res)});
      }
      if (status < 200 || status > 299) {
        co_return std::unexpected(Fault{FaultKind::kHttp, path + ": " + Status(*res)});
      }
      co_return res;
    }
  }

  // --- bookkeeping ---

  template <typename F>
  void Count(F f) {
    std::lock_guard lock(mu);
    f(stats);
  }

  void RecordPollFault(const Fault& fault) {
    Count([&](VenStats& s) {
      ++s.polls_failed;
      switch (fault.kind) {
        case FaultKind::kUnreachable:
          ++s.unreachable;
          break;
        case FaultKind::kTimeout:
          ++s.timeouts;
          break;
        case FaultKind::kHttp:
          ++s.http_errors;
          break;
        case FaultKind::kMalformed:
          ++s.malformed;
          break;
        case FaultKind::kAuth:
          ++s.auth_failures;
          break;
      }
      s.last_error = fault.message;
    });
    ++faults_in_a_row;
    const auto now = Clock::now();
    if (faults_in_a_row == 1 || now - last_fault_log >= options.log_interval) {
      spdlog::warn("openadr: poll of {} failed ({} in a row, {} not logged; keeping {} events): {}",
                   options.vtn_url, faults_in_a_row, faults_not_logged,
                   delivered ? delivered->size() : 0, fault.message);
      last_fault_log = now;
      faults_not_logged = 0;
    } else {
      ++faults_not_logged;
    }
  }

  void RecordPollOk() {
    Count([](VenStats& s) { ++s.polls_ok; });
    if (faults_in_a_row > 0) {
      spdlog::info("openadr: VTN {} answers again after {} failed polls", options.vtn_url,
                   faults_in_a_row);
    }
    faults_in_a_row = 0;
    faults_not_logged = 0;
  }

  // --- the loop ---

  asio::awaitable<void> Subscribe() {
    Json op = {{"objects", {"EVENT"}},
               {"operations", {"CREATE", "UPDATE", "DELETE"}},
               {"callbackUrl", options.callback_url}};
    if (!options.callback_token.empty()) op["bearerToken"] = options.callback_token;
    const Json body = {{"clientName", options.ven_name}, {"objectOperations", Json::array({op})}};
    auto res = co_await AuthorizedCall(http::verb::post, "/subscriptions", body.dump());
    if (!res) {
      Count([&](VenStats& s) {
        ++s.subscription_failures;
        s.last_error = res.error().message;
      });
      const auto now = Clock::now();
      if (last_subscribe_log == Clock::time_point{} ||
          now - last_subscribe_log >= options.log_interval) {
        spdlog::warn("openadr: subscription at {} failed (polling meanwhile, retrying): {}",
                     options.vtn_url, res.error().message);
        last_subscribe_log = now;
      }
      co_return;
    }
    Count([](VenStats& s) { s.subscribed = true; });
    spdlog::info("openadr: subscribed to event changes at {} (callback {})", options.vtn_url,
                 options.callback_url);
  }

  asio::awaitable<void> PollOnce() {
    ParseOptions parse_options;
    parse_options.now_s = NowS();
    parse_options.default_ramp_s = options.default_ramp.count();
    ParsedEvents all;
    std::set<std::string> seen;
    for (int page = 0; page < kMaxPages; ++page) {
      const std::string path = "/events?skip=" + std::to_string(page * kPageLimit) +
                               "&limit=" + std::to_string(kPageLimit);
      auto res = co_await AuthorizedCall(http::verb::get, path, {});
      if (stopped) co_return;
      if (!res) {
        RecordPollFault(res.error());
        co_return;
      }
      auto parsed = ParseEvents(res->body(), parse_options);
      if (!parsed) {
        RecordPollFault(Fault{FaultKind::kMalformed, parsed.error()});
        co_return;
      }
      const std::size_t count =
          parsed->events.size() +
          static_cast<std::size_t>(parsed->ignored_events + parsed->bad_events);
      // A VTN that ignores skip serves the first page again: stop at a repeat.
      if (!parsed->events.empty() && seen.contains(parsed->events.front().id)) break;
      const std::size_t offset = all.grid_events.size();
      for (auto& e : parsed->events) {
        seen.insert(e.id);
        e.first_grid_event += offset;
        all.events.push_back(std::move(e));
      }
      std::move(parsed->grid_events.begin(), parsed->grid_events.end(),
                std::back_inserter(all.grid_events));
      all.bad_events += parsed->bad_events;
      all.ignored_events += parsed->ignored_events;
      all.bad_event_ids.insert(all.bad_event_ids.end(), parsed->bad_event_ids.begin(),
                               parsed->bad_event_ids.end());
      all.errors.insert(all.errors.end(), parsed->errors.begin(), parsed->errors.end());
      if (count != static_cast<std::size_t>(kPageLimit)) break;
    }
    RecordPollOk();
    if (all.bad_events > 0) {
      Count([&](VenStats& s) { s.bad_events += static_cast<std::uint64_t>(all.bad_events); });
      const auto now = Clock::now();
      if (last_bad_events_log == Clock::time_point{} ||
          now - last_bad_events_log >= options.log_interval) {
        spdlog::warn(
            "openadr: {} malformed events from {} skipped (a known one keeps its last "
            "good form), first: {}",
            all.bad_events, options.vtn_url, all.errors.empty() ? "" : all.errors[0]);
        last_bad_events_log = now;
      }
      KeepLastGoodForms(&all);
    }
    Adopt(std::move(all));
    // Subscribed after a good poll, so a VTN that is down is not asked twice per poll.
    bool subscribed;
    {
      std::lock_guard lock(mu);
      subscribed = stats.subscribed;
    }
    if (!options.callback_url.empty() && !subscribed && !stopped) co_await Subscribe();
  }

  // A malformed event that was good at the last poll keeps its last good form.
  void KeepLastGoodForms(ParsedEvents* parsed) {
    if (!delivered) return;
    for (const std::string& id : parsed->bad_event_ids) {
      for (const EventSummary& old : summaries) {
        if (old.id != id) continue;
        EventSummary kept = old;
        kept.first_grid_event = parsed->grid_events.size();
        for (std::size_t i = 0; i < old.grid_event_count; ++i) {
          parsed->grid_events.push_back((*delivered)[old.first_grid_event + i]);
        }
        parsed->events.push_back(std::move(kept));
      }
    }
  }

  void Adopt(ParsedEvents parsed) {
    if (delivered && SameEvents(*delivered, parsed.grid_events)) {
      summaries = std::move(parsed.events);
      return;
    }
    delivered = parsed.grid_events;
    summaries = std::move(parsed.events);
    {
      std::lock_guard lock(mu);
      current = parsed.grid_events;
      ++stats.event_updates;
    }
    spdlog::info("openadr: {} grid events from {}", parsed.grid_events.size(), options.vtn_url);
    std::lock_guard lock(callback_mu);
    if (stopped || !on_events) return;
    on_events(std::move(parsed.grid_events));
  }

  std::optional<double> Measure(const std::string& site) {
    std::lock_guard lock(callback_mu);
    if (stopped || !measure_kw) return std::nullopt;
    auto kw = measure_kw(site);
    if (kw && !std::isfinite(*kw)) return std::nullopt;
    return kw;
  }

  // One USAGE report per event with a site under it now.
  asio::awaitable<void> ReportOnce() {
    if (!delivered) co_return;
    const std::int64_t now_s = NowS();
    const std::string start = grid::FormatUtc(grid::UtcTime{std::chrono::seconds(now_s)});
    const std::vector<EventSummary> events = summaries;
    const std::vector<core::GridEvent> grid_events = *delivered;
    for (const EventSummary& e : events) {
      Json resources = Json::array();
      for (const std::string& site : e.sites) {
        bool active = false;
        for (std::size_t i = 0; i < e.grid_event_count; ++i) {
          const auto& g = grid_events[e.first_grid_event + i];
          active = active || (g.site == site && g.ActiveAt(now_s));
        }
        if (!active) continue;
        auto kw = Measure(site);
        if (!kw) continue;
        resources.push_back(
            {{"resourceName", site},
             {"intervalPeriod", {{"start", start}, {"duration", "PT0S"}}},
             {"intervals",
              Json::array(
                  {{{"id", 0},
                    {"payloads", Json::array({{{"type", "USAGE"}, {"values", {*kw}}}})}}})}});
      }
      if (resources.empty() || stopped) continue;
      const Json report = {
          {"programID", e.program_id},
          {"eventID", e.id},
          {"clientName", options.ven_name},
          {"reportName", "powerplane USAGE " + e.id},
          {"payloadDescriptors", Json::array({{{"objectType", "REPORT_PAYLOAD_DESCRIPTOR"},
                                               {"payloadType", "USAGE"},
                                               {"readingType", "DIRECT_READ"},
                                               {"units", "KW"}}})},
          {"resources", std::move(resources)}};
      auto res = co_await AuthorizedCall(http::verb::post, "/reports", report.dump());
      if (stopped) co_return;
      if (res) {
        Count([](VenStats& s) { ++s.reports_posted; });
        continue;
      }
      Count([&](VenStats& s) {
        ++s.reports_failed;
        s.last_error = res.error().message;
      });
      const auto now = Clock::now();
      if (last_report_fault_log == Clock::time_point{} ||
          now - last_report_fault_log >= options.log_interval) {
        spdlog::warn("openadr: USAGE report for event {} failed: {}", e.id, res.error().message);
        last_report_fault_log = now;
      }
    }
  }

  asio::awaitable<void> Run() {
    auto self = shared_from_this();
    struct Exit {
      std::atomic<bool>& running;
      ~Exit() { running = false; }
    } exit{running};
    const bool reporting = static_cast<bool>(measure_kw);
    Clock::time_point last_poll = Clock::now() - options.min_poll_gap;
    Clock::time_point next_poll = Clock::now();
    Clock::time_point next_report = Clock::now() + options.report_interval;
    while (!stopped) {
      const auto now = Clock::now();
      const bool gap_ok = now - last_poll >= options.min_poll_gap;
      if ((poll_now || now >= next_poll) && gap_ok) {
        poll_now = false;
        last_poll = now;
        co_await PollOnce();
        next_poll = last_poll + PollInterval();
        continue;
      }
      if (reporting && now >= next_report) {
        co_await ReportOnce();
        next_report = Clock::now() + options.report_interval;
        continue;
      }
      Clock::time_point wake = poll_now ? last_poll + options.min_poll_gap : next_poll;
      if (reporting) wake = std::min(wake, next_report);
      timer.expires_at(wake);
      co_await timer.async_wait(kUseTuple);
    }
  }

  void Wake(bool poll) {
    asio::post(executor, [self = shared_from_this(), poll] {
      if (poll) self->poll_now = true;
      self->timer.cancel();
    });
  }
};

namespace {

asio::awaitable<void> Notify(std::shared_ptr<Ven::State> state, net::ServerRequest& req,
                             net::Responder& res) {
  const auto answer = [&](http::status status, std::string body) {
    return res.Send(net::MakeResponse(status, std::move(body), "application/json", req.version()));
  };
  if (req.method() != http::verb::post) {
    co_await answer(http::status::method_not_allowed,
                    ProblemBody(405, "Method Not Allowed", "notifications are POSTed"));
    co_return;
  }
  if (!state->options.callback_token.empty()) {
    // A missing field reads as empty, which no "Bearer <token>" equals.
    if (req[http::field::authorization] != "Bearer " + state->options.callback_token) {
      co_await answer(http::status::unauthorized,
                      ProblemBody(401, "Unauthorized", "missing or wrong bearer token"));
      co_return;
    }
  }
  const Json body = Json::parse(req.body(), nullptr, /*allow_exceptions=*/false);
  std::string problem;
  if (!body.is_object()) {
    problem = "the notification is not a JSON object";
  } else if (!body.contains("objectType") || !body["objectType"].is_string()) {
    problem = "objectType is missing or not a string";
  } else if (!body.contains("operation") || !body["operation"].is_string()) {
    problem = "operation is missing or not a string";
  } else if (!body.contains("object") || !body["object"].is_object()) {
    problem = "object is missing or not an object";
  }
  if (!problem.empty()) {
    co_await answer(http::status::bad_request, ProblemBody(400, "Bad Request", problem));
    co_return;
  }
  state->Count([](VenStats& s) { ++s.notifications; });
  if (body["objectType"] == "EVENT" && !state->stopped) state->Wake(/*poll=*/true);
  co_await answer(http::status::ok, "{}");
}

}  // namespace

std::expected<std::unique_ptr<Ven>, std::string> Ven::Create(asio::any_io_executor executor,
                                                             VenOptions options,
                                                             EventsCallback on_events,
                                                             MeterCallback measure_kw) {
  auto url = ParseVtnUrl(options.vtn_url);
  if (!url) return std::unexpected(url.error());
  if (options.client_id.empty()) return std::unexpected("the OpenADR client id is empty");
  if (options.client_secret.empty()) return std::unexpected("the OpenADR client secret is empty");
  if (options.ven_name.empty()) return std::unexpected("the VEN name is empty");
  if (options.poll_interval.count() <= 0 || options.min_poll_gap.count() < 0 ||
      options.report_interval.count() <= 0 || options.request_timeout.count() <= 0) {
    return std::unexpected("OpenADR poll, report and request intervals must be positive");
  }
  if (options.default_ramp.count() < 0) return std::unexpected("the default ramp is negative");
  if (!options.callback_url.empty() && options.callback_url.find("://") == std::string::npos) {
    return std::unexpected("the OpenADR callback URL is not an absolute URL");
  }
  auto state = std::make_shared<State>(executor, std::move(options), std::move(*url),
                                       std::move(on_events), std::move(measure_kw));
  return std::unique_ptr<Ven>(new Ven(std::move(state)));
}

Ven::~Ven() { Stop(); }

void Ven::Start() {
  if (state_->started.exchange(true) || state_->stopped) return;
  state_->running = true;
  asio::co_spawn(state_->executor, state_->Run(), asio::detached);
}

void Ven::Stop() {
  {
    std::lock_guard lock(state_->callback_mu);
    if (state_->stopped.exchange(true)) return;
  }
  if (state_->started) state_->Wake(/*poll=*/false);
}

void Ven::PollNow() { state_->Wake(/*poll=*/true); }

asio::awaitable<void> Ven::HandleNotification(net::ServerRequest& request,
                                              net::Responder& responder) {
  return Notify(state_, request, responder);
}

net::Handler Ven::NotificationHandler() const {
  return [state = state_](net::ServerRequest& request, net::Responder& responder) {
    return Notify(state, request, responder);
  };
}

VenStats Ven::stats() const {
  std::lock_guard lock(state_->mu);
  return state_->stats;
}

std::vector<core::GridEvent> Ven::events() const {
  std::lock_guard lock(state_->mu);
  return state_->current;
}

bool Ven::running() const { return state_->running; }

}  // namespace powerplane::openadr
