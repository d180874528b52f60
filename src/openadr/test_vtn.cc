#include "openadr/test_vtn.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/system/system_error.hpp>
#include <charconv>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "grid/time.h"
#include "net/http_client.h"
#include "openadr/ven.h"

namespace powerplane::openadr {
namespace {

using Json = nlohmann::json;
namespace http = net::http;
namespace asio = net::asio;
using Clock = std::chrono::steady_clock;

net::Response JsonAnswer(http::status status, const Json& body, unsigned version) {
  return net::MakeResponse(status, body.dump(), "application/json", version);
}

// The spec's problem body.
net::Response Problem(http::status status, std::string detail, unsigned version) {
  return JsonAnswer(status,
                    {{"type", "about:blank"},
                     {"title", std::string(http::obsolete_reason(status))},
                     {"status", static_cast<int>(status)},
                     {"detail", std::move(detail)}},
                    version);
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string UrlDecode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && HexDigit(s[i + 1]) >= 0 &&
               HexDigit(s[i + 2]) >= 0) {
      out += static_cast<char>(HexDigit(s[i + 1]) * 16 + HexDigit(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// "a=1&b=2" -> {a: 1, b: 2}, URL-decoded.
std::map<std::string, std::string> ParsePairs(std::string_view s) {
  std::map<std::string, std::string> out;
  while (!s.empty()) {
    const auto amp = s.find('&');
    const std::string_view pair = s.substr(0, amp);
    const auto eq = pair.find('=');
    if (eq != std::string_view::npos) {
      out[UrlDecode(pair.substr(0, eq))] = UrlDecode(pair.substr(eq + 1));
    }
    if (amp == std::string_view::npos) break;
    s.remove_prefix(amp + 1);
  }
  return out;
}

std::string NowUtc() {
  return grid::FormatUtc(
      std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()));
}

std::size_t Number(const std::string& text, std::size_t fallback) {
  std::size_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  return ec == std::errc() && p == text.data() + text.size() ? v : fallback;
}

bool Contains(const Json& array, const std::string& value) {
  if (!array.is_array()) return false;
  for (const auto& v : array) {
    if (v.is_string() && v.get_ref<const std::string&>() == value) return true;
  }
  return false;
}

}  // namespace

TestVtn::TestVtn(TestVtnOptions options) : options_(std::move(options)), port_(options_.port) {
  Listen();
  pool_.Start();
}

// The members do it all: server_ stops (its destructor), then pool_ ends its thread.
TestVtn::~TestVtn() = default;

std::string TestVtn::url() const { return "http://127.0.0.1:" + std::to_string(port_); }

void TestVtn::Listen() {
  const auto endpoint = net::tcp::endpoint(net::asio::ip::make_address("127.0.0.1"), port_);
  // After Down, the old acceptor closes on the VTN's thread: retry until the port is free.
  for (int attempt = 0;; ++attempt) {
    try {
      server_ = std::make_unique<net::HttpServer>(
          pool_.Executors(), endpoint,
          [this](net::ServerRequest& req, net::Responder& res) { return Handle(req, res); });
      break;
    } catch (const boost::system::system_error&) {
      if (attempt >= 200) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  server_->Start();
  port_ = server_->port();
}

void TestVtn::SetEvents(std::string json_array) {
  std::lock_guard lock(mu_);
  events_ = std::move(json_array);
}

void TestVtn::SetMode(VtnMode mode) {
  std::lock_guard lock(mu_);
  if (mode == mode_) return;
  if (mode == VtnMode::kDown) {
    server_->Stop();
    server_.reset();
  } else if (mode_ == VtnMode::kDown) {
    Listen();
  }
  mode_ = mode;
}

void TestVtn::SetGarbage(VtnGarbage garbage) {
  std::lock_guard lock(mu_);
  garbage_ = garbage;
}

void TestVtn::SetTokenExpiresIn(std::int64_t seconds) {
  std::lock_guard lock(mu_);
  options_.token_expires_in_s = seconds;
}

asio::awaitable<void> TestVtn::Handle(net::ServerRequest& req, net::Responder& res) {
  bool slow;
  {
    std::lock_guard lock(mu_);
    slow = mode_ == VtnMode::kSlow;
  }
  if (slow) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    timer.expires_after(options_.slow_delay);
    co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  co_await res.Send(Answer(req));
}

bool TestVtn::Authorized(const net::ServerRequest& req) {
  const std::string_view value = req[http::field::authorization];  // empty when missing.
  constexpr std::string_view kBearer = "Bearer ";
  if (value.starts_with(kBearer)) {
    const std::string_view token = value.substr(kBearer.size());
    for (const Token& t : tokens_) {
      if (t.value == token && Clock::now() < t.expires) return true;
    }
  }
  ++unauthorized_;
  return false;
}

net::Response TestVtn::Answer(const net::ServerRequest& req) {
  std::lock_guard lock(mu_);
  const unsigned version = req.version();
  const std::string_view target = req.target();
  const auto question = target.find('?');
  const std::string_view path = target.substr(0, question);
  const auto query = ParsePairs(question == std::string_view::npos ? std::string_view{}
                                                                   : target.substr(question + 1));

  if (path == "/auth/token") {
    if (req.method() != http::verb::post)
      return Problem(http::status::method_not_allowed, "POST", version);
    ++token_requests_;
    auto form = ParsePairs(req.body());
    if (form["grant_type"] != "client_credentials" || form["client_id"].empty() ||
        form["client_secret"].empty()) {
      return JsonAnswer(http::status::bad_request,
                        {{"error", "invalid_request"},
                         {"error_description", "client_credentials with client_id and secret"}},
                        version);
    }
    if (form["client_id"] != options_.client_id ||
        form["client_secret"] != options_.client_secret) {
      return JsonAnswer(http::status::unauthorized, {{"error", "invalid_client"}}, version);
    }
    Token token{"tok-" + std::to_string(tokens_.size() + 1),
                Clock::now() + std::chrono::seconds(options_.token_expires_in_s)};
    tokens_.push_back(token);
    return JsonAnswer(http::status::ok,
                      {{"access_token", token.value},
                       {"token_type", "Bearer"},
                       {"expires_in", options_.token_expires_in_s}},
                      version);
  }

  if (path == "/events") {
    if (req.method() != http::verb::get)
      return Problem(http::status::method_not_allowed, "GET", version);
    if (!Authorized(req))
      return Problem(http::status::unauthorized, "bearer token needed", version);
    ++event_requests_;
    if (mode_ == VtnMode::kServerError) {
      return Problem(http::status::internal_server_error, "the VTN is unwell", version);
    }
    if (mode_ == VtnMode::kMalformed) {
      std::string body;
      switch (garbage_) {
        case VtnGarbage::kNotJson:
          body = "<html>oops";
          break;
        case VtnGarbage::kTruncated:
          body = events_.substr(0, events_.size() / 2);
          break;
        case VtnGarbage::kWrongTypes:
          body = R"({"events": 5, "intervals": "none"})";
          break;
      }
      return net::MakeResponse(http::status::ok, std::move(body), "application/json", version);
    }
    Json events = Json::parse(events_, nullptr, /*allow_exceptions=*/false);
    if (!events.is_array()) {
      return net::MakeResponse(http::status::ok, events_, "application/json", version);
    }
    std::size_t skip = 0, limit = 50;
    if (query.contains("skip")) skip = Number(query.at("skip"), 0);
    if (query.contains("limit")) limit = std::min<std::size_t>(50, Number(query.at("limit"), 50));
    Json page = Json::array();
    for (std::size_t i = skip; i < events.size() && page.size() < limit; ++i)
      page.push_back(events[i]);
    return JsonAnswer(http::status::ok, page, version);
  }

  if (path == "/reports" || path == "/subscriptions") {
    if (req.method() != http::verb::post)
      return Problem(http::status::method_not_allowed, "POST", version);
    if (!Authorized(req))
      return Problem(http::status::unauthorized, "bearer token needed", version);
    Json body = Json::parse(req.body(), nullptr, /*allow_exceptions=*/false);
    if (!body.is_object() || !body.contains("clientName")) {
      return Problem(http::status::bad_request, "a JSON object with clientName", version);
    }
    (path == "/reports" ? reports_ : subscriptions_).push_back(req.body());
    body["id"] = (path == "/reports" ? "report-" : "subscription-") + std::to_string(next_id_++);
    body["createdDateTime"] = NowUtc();
    body["modificationDateTime"] = body["createdDateTime"];
    body["objectType"] = path == "/reports" ? "REPORT" : "SUBSCRIPTION";
    body["clientID"] = options_.client_id;
    return JsonAnswer(http::status::created, body, version);
  }

  return Problem(http::status::not_found, "no such endpoint", version);
}

int TestVtn::Notify(const std::string& object_type, const std::string& operation,
                    const std::string& object_json) {
  struct Delivery {
    VtnUrl url;
    std::string bearer;
  };
  std::vector<Delivery> deliveries;
  {
    std::lock_guard lock(mu_);
    for (const std::string& s : subscriptions_) {
      const Json sub = Json::parse(s, nullptr, false);
      if (!sub.is_object() || !sub.contains("objectOperations")) continue;
      for (const Json& op : sub["objectOperations"]) {
        if (!op.is_object() || !Contains(op.value("objects", Json()), object_type) ||
            !Contains(op.value("operations", Json()), operation) ||
            !op.value("callbackUrl", Json()).is_string()) {
          continue;
        }
        auto url = ParseVtnUrl(op["callbackUrl"].get<std::string>());
        if (!url) continue;
        const Json bearer = op.value("bearerToken", Json());
        deliveries.push_back({*url, bearer.is_string() ? bearer.get<std::string>() : ""});
      }
    }
  }
  const Json object = Json::parse(object_json, nullptr, false);
  const std::string body =
      Json{{"objectType", object_type}, {"operation", operation}, {"object", object}}.dump();
  int delivered = 0;
  for (const Delivery& d : deliveries) {
    net::Request req{http::verb::post, d.url.prefix.empty() ? "/" : d.url.prefix, 11};
    req.set(http::field::content_type, "application/json");
    if (!d.bearer.empty()) req.set(http::field::authorization, "Bearer " + d.bearer);
    req.body() = body;
    auto answer = asio::co_spawn(pool_.context(0),
                                 net::Fetch(d.url.host, d.url.port, std::move(req),
                                            std::chrono::milliseconds(2000)),
                                 asio::use_future)
                      .get();
    if (answer && answer->result_int() / 100 == 2) ++delivered;
  }
  return delivered;
}

std::vector<std::string> TestVtn::reports() const {
  std::lock_guard lock(mu_);
  return reports_;
}
std::vector<std::string> TestVtn::subscriptions() const {
  std::lock_guard lock(mu_);
  return subscriptions_;
}
int TestVtn::token_requests() const {
  std::lock_guard lock(mu_);
  return token_requests_;
}
int TestVtn::tokens_issued() const {
  std::lock_guard lock(mu_);
  return static_cast<int>(tokens_.size());
}
int TestVtn::event_requests() const {
  std::lock_guard lock(mu_);
  return event_requests_;
}
int TestVtn::unauthorized_requests() const {
  std::lock_guard lock(mu_);
  return unauthorized_;
}

}  // namespace powerplane::openadr
