// The relay from an engine to the client: placement with bounded retries before the first byte,
// then the engine's answer chunk by chunk (read with async_read_some, never buffered whole),
// metering tokens from the usage the gateway always asks for.

#include <spdlog/spdlog.h>

#include <array>
#include <optional>
#include <tuple>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_suffix.hpp>
#include <boost/beast/http/write.hpp>
#include <nlohmann/json.hpp>

#include "gateway/gateway.h"
#include "gateway/await_done.h"
#include "gateway/admin_parse.h"
#include "gateway/chunked.h"
#include "gateway/sse.h"
#include "net/http_client.h"
#include "net/read_drained.h"
#include "net/write_now.h"
#include "store/records.h"

namespace powerplane::gateway {
namespace http = net::http;
namespace asio = net::asio;
namespace beast = boost::beast;
namespace {

constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kMaxUpstreamBody = 64 * 1024 * 1024;
// The most one read from an engine takes.
constexpr std::size_t kReadBytes = 16 * 1024;
// How late past its deadline an exchange with an engine may be cut.
constexpr std::chrono::seconds kDeadlineGranularity{1};

// Counts a request in flight at an endpoint until it ends, however it ends.
class EndpointAdmission {
 public:
  EndpointAdmission(fleet::Fleet& fleet, std::uint32_t endpoint, const core::Request& request)
      : fleet_(fleet), endpoint_(endpoint), request_(request) {}
  ~EndpointAdmission() { fleet_.Finish(endpoint_, request_); }
  EndpointAdmission(const EndpointAdmission&) = delete;
  EndpointAdmission& operator=(const EndpointAdmission&) = delete;

 private:
  fleet::Fleet& fleet_;
  std::uint32_t endpoint_;
  const core::Request& request_;
};

// An engine's error body in the OpenAI shape: vLLM puts the integer status in "code"; TGI sends
// {"error": "...", "error_type": ...}; anything else becomes the message.
std::string NormalizeError(const std::string& body, int status) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  std::string message = body.empty() ? "upstream error " + std::to_string(status) : body;
  std::string type = status >= 500 ? "server_error" : "invalid_request_error";
  std::string code;
  if (!j.is_discarded() && j.is_object() && j.contains("error")) {
    const auto& e = j["error"];
    if (e.is_object()) {
      if (e.contains("message") && e["message"].is_string()) message = e["message"];
      if (e.contains("type") && e["type"].is_string()) type = e["type"];
      if (e.contains("code") && e["code"].is_string()) code = e["code"];
    } else if (e.is_string()) {
      message = e.get<std::string>();
      if (j.contains("error_type") && j["error_type"].is_string()) type = j["error_type"];
    }
  }
  return net::ErrorBody(message, type, code);
}

// The headers that tell a client where its request ran.
template <typename Message>
void SetPlacementHeaders(Message& m, const std::string& request_id, const std::string& site,
                         const std::string& endpoint) {
  m.set("x-request-id", request_id);
  m.set("x-powerplane-site", site);
  m.set("x-powerplane-endpoint", endpoint);
}

// The same headers, with the stream's own, as header-field text for Responder::StartStream: no
// field objects on the hot path.
std::string StreamHeaderFields(const std::string& request_id, const std::string& site,
                               const std::string& endpoint) {
  std::string fields;
  fields.reserve(160 + request_id.size() + site.size() + endpoint.size());
  fields += "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\nx-request-id: ";
  fields += request_id;
  fields += "\r\nx-powerplane-site: ";
  fields += site;
  fields += "\r\nx-powerplane-endpoint: ";
  fields += endpoint;
  fields += "\r\n";
  return fields;
}

// Text buffers a relay grows as it goes (the events read, the bytes to write), kept per I/O
// thread between requests so that a stream does not allocate them anew and regrow them token by
// token. At most kKeptScratch are kept, none over kMaxScratchBytes.
class Scratch {
 public:
  Scratch() {
    if (!Kept().empty()) {
      text = std::move(Kept().back());
      Kept().pop_back();
    }
    text.clear();
  }
  ~Scratch() {
    if (Kept().size() < kKeptScratch && text.capacity() <= kMaxScratchBytes) {
      Kept().push_back(std::move(text));
    }
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  std::string text;

 private:
  static constexpr std::size_t kKeptScratch = 64;
  static constexpr std::size_t kMaxScratchBytes = 64 * 1024;
  static std::vector<std::string>& Kept() {
    thread_local std::vector<std::string> kept;
    return kept;
  }
};

struct Usage {
  bool reported = false;
  std::int64_t prompt_tokens = 0;
  std::int64_t completion_tokens = 0;
};

// GPU joules of a request at the rates of its decision: prefill per prompt token, decode per
// output token at the batch and context the router planned for.
double GpuJoules(const core::Decision& d, const core::GpuModel& gpu, std::int64_t prompt,
                 std::int64_t completion) {
  return prompt * gpu.JoulesPerPromptToken() +
         completion * gpu.JoulesPerOutputToken(d.score.batch_after, d.score.context_tokens);
}

// What a tenant is charged for a request: its energy at the site's price (never below zero) plus
// the hardware cost of its output tokens. The same formula gives the worst case reserved at
// admission (from max_tokens) and the charge settled at the end, so a request can never settle
// above its reservation unless it outruns its max_tokens.
double ChargeUsd(const core::Decision& d, const core::GpuModel& gpu, std::int64_t prompt,
                 std::int64_t completion) {
  const double energy =
      core::EnergyCostUsd(GpuJoules(d, gpu, prompt, completion), d.score.usd_per_mwh, d.score.pue);
  return std::max(0.0, energy) + completion * d.score.hardware_usd_per_token;
}

std::string ResidencyDetail(const Call& call) {
  std::string allowed;
  for (const auto& j : call.tenant->jurisdictions) allowed += (allowed.empty() ? "" : ",") + j;
  return AuditDetail({{"request_id", call.request_id},
                      {"tenant", call.tenant->id},
                      {"model", call.parsed.model},
                      {"allowed", allowed.empty() ? "any" : allowed}});
}

// The header of the request sent to an engine (HTTP/1.1, kept alive), ending with the blank line.
std::string UpstreamHeader(const Call& call, const fleet::EndpointAddress& addr) {
  std::string text;
  text.reserve(192 + call.target.size() + addr.host.size() + call.request_id.size());
  text += "POST ";
  text += call.target;
  text += " HTTP/1.1\r\nHost: ";
  text += addr.host;
  text += ':';
  text += std::to_string(addr.port);
  text += "\r\nContent-Type: application/json\r\nx-request-id: ";
  text += call.request_id;
  if (call.parsed.stream) text += "\r\nAccept: text/event-stream";
  text += "\r\nContent-Length: ";
  text += std::to_string(call.upstream_body.size());
  text += "\r\n\r\n";
  return text;
}

// Commits the ledger row and resumes once it is durable (true) or given up on (false).
asio::awaitable<bool> RecordDurably(Tenancy& tenancy, store::LedgerRow row) {
  if (!tenancy.has_store()) co_return true;
  if (tenancy.RecordNow(row)) co_return true;  // journaled: durable now, no wait.
  co_return co_await AwaitDone<bool>([&tenancy, &row](std::function<void(bool)> done) {
    tenancy.Record(std::move(row), std::move(done));
  });
}

// Tenancy::AdmitSpend, asking the store for more of the tenant's budget (off this thread) when
// this gateway's lease on it is too small.
asio::awaitable<Admission> AdmitSpend(Tenancy& tenancy, const Call& call) {
  const Admission spend = tenancy.AdmitSpend(*call.tenant, call.worst_usd);
  if (spend.verdict != Admission::Verdict::kNeedsLease) co_return spend;
  co_return co_await AwaitDone<Admission>([&tenancy, &call](std::function<void(Admission)> done) {
    tenancy.GrowLease(call.tenant, call.worst_usd, std::move(done));
  });
}

// The ledger fields of a call that every way it ends shares; tokens, energy and money are the
// caller's.
store::LedgerRow CallRow(const Call& call, std::string_view site, std::string_view endpoint,
                         std::string_view outcome, double elapsed_s) {
  store::LedgerRow row;
  row.request_id = call.request_id;
  row.tenant = call.tenant->id;
  row.key_id = call.key_id;
  row.model = call.parsed.model;
  row.site = site;
  row.endpoint = endpoint;
  row.priority_class = std::string(core::ToString(call.tenant->priority));
  row.start_unix_ms = call.start_unix_ms;
  row.end_unix_ms = call.start_unix_ms + static_cast<std::int64_t>(elapsed_s * 1e3);
  row.outcome = outcome;
  return row;
}

}  // namespace

asio::awaitable<void> Gateway::RefuseSpend(net::Responder& responder, const Call& call,
                                           const Admission& spend) {
  using Verdict = Admission::Verdict;
  std::string message;
  switch (spend.verdict) {
    case Verdict::kOverBudget:
      message = "You exceeded your current quota: this request could take the tenant over its "
                "budget of " + fmt::format("{:.6g}", call.tenant->budget_usd) + " USD" +
                (call.tenant->budget_period == core::BudgetPeriod::kDay     ? " for this day (UTC)"
                 : call.tenant->budget_period == core::BudgetPeriod::kMonth ? " for this month (UTC)"
                                                                            : " (a budget for all time)");
      co_await Fail(responder, call.request_id, http::status::too_many_requests, message,
                    "insufficient_quota", "insufficient_quota");
      break;
    case Verdict::kBudgetLeasedElsewhere:
      // Not spent: other gateways hold the rest, for their requests in flight or as spare that
      // they give back now that this one was refused. A retry may fit.
      message = "the rest of the tenant's budget is held by other gateways for their requests; "
                "retry shortly";
      co_await Fail(responder, call.request_id, http::status::too_many_requests, message,
                    "insufficient_quota", "budget_leased_elsewhere", spend.retry_after_s);
      break;
    case Verdict::kBudgetUnreachable:
      co_await Fail(responder, call.request_id, http::status::service_unavailable,
                    "the store that holds the tenant's budget is out of reach; retry shortly",
                    "server_error", "budget_store_unreachable", spend.retry_after_s);
      break;
    default:
      co_await Fail(responder, call.request_id, http::status::service_unavailable,
                    "the usage ledger is behind; retry shortly", "server_error", "ledger_backlog",
                    spend.retry_after_s);
  }
}

asio::awaitable<void> Gateway::Proxy(Call& call, net::Responder& responder) {
  std::vector<std::uint32_t> excluded;
  const auto capacity_deadline = call.start + options_.capacity_wait;
  // Made only when every endpoint is full (a request that is placed at once needs no timer).
  std::optional<asio::steady_timer> timer;
  int attempts = 0;
  core::NoPlacement last_why = core::NoPlacement::kNone;
  const Tenant& tenant = *call.tenant;
  bool spend_reserved = false;
  // Whatever was taken at admission is given back unless a relay settled it.
  auto give_back = [&] {
    tenancy_->Cancel(tenant, call.worst_tokens, call.worst_usd, spend_reserved);
  };
  while (attempts < options_.max_attempts) {
    core::Decision d = fleet_.RouteAndAdmit(call.routed, excluded);
    if (!d.placed) {
      last_why = d.why_not;
      if (d.why_not == core::NoPlacement::kAllAtCapacity &&
          std::chrono::steady_clock::now() < capacity_deadline) {
        // Every allowed endpoint is full: wait for a slot rather than leave the jurisdictions.
        if (!timer) timer.emplace(co_await asio::this_coro::executor);
        timer->expires_after(std::chrono::milliseconds(20));
        co_await timer->async_wait(kUseTuple);
        continue;
      }
      break;
    }
    metrics_.RecordPlaced(d.meets_targets);
    EndpointAdmission admission(fleet_, d.endpoint_index, call.routed);
    if (!spend_reserved) {
      // The budget is reserved at the first placement's price, for the worst case.
      call.worst_usd = ChargeUsd(d, *fleet_.endpoint(d.endpoint_index).gpu,
                                 call.routed.prompt_tokens,
                                 call.worst_tokens - call.routed.prompt_tokens);
      const Admission spend = co_await AdmitSpend(*tenancy_, call);
      if (spend.verdict != Admission::Verdict::kOk) {
        tenancy_->Cancel(tenant, call.worst_tokens, 0, false);
        co_await RefuseSpend(responder, call, spend);
        co_return;
      }
      spend_reserved = true;
    }
    if (spdlog::should_log(spdlog::level::debug)) {
      spdlog::debug("{} tenant={} -> {} ({} USD/Mtok, ttft {:.0f} ms)", call.request_id,
                    call.tenant->id, fleet_.endpoint(d.endpoint_index).id,
                    d.score.total_usd_per_token * 1e6, d.score.predicted_ttft_s * 1e3);
    }
    if (co_await Relay(call, d, responder)) co_return;
    excluded.push_back(d.endpoint_index);  // the endpoints that failed, the last one last.
    ++attempts;
    if (cutting()) break;  // the engines are being stopped: none will answer.
  }
  give_back();
  if (!excluded.empty() && tenancy_->has_store()) {
    // Endpoints were tried and none answered: nothing was generated and nothing is charged, but
    // the call used the fleet, so it has its row (at the endpoint tried last).
    const double elapsed_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - call.start).count();
    const core::Endpoint& last = fleet_.endpoint(excluded.back());
    store::LedgerRow row = CallRow(call, fleet_.site(last.site_index).id, last.id,
                                   cutting() ? "gateway_stopping" : "upstream_unavailable",
                                   elapsed_s);
    co_await RecordDurably(*tenancy_, std::move(row));
  }
  if (cutting() && !excluded.empty()) {
    co_await Fail(responder, call.request_id, http::status::service_unavailable,
                  "the gateway is shutting down: retry the request", "server_error",
                  "gateway_stopping", 1);
    co_return;
  }
  if (attempts >= options_.max_attempts) {
    const std::string message =
        "no endpoint answered after " + std::to_string(attempts) + " attempts";
    co_await Fail(responder, call.request_id, http::status::bad_gateway, message, "server_error",
                  "upstream_unavailable");
    co_return;
  }
  metrics_.RecordDecision(core::ToString(last_why));
  switch (last_why) {
    case core::NoPlacement::kModelNotServed:
      co_await Fail(responder, call.request_id, http::status::not_found,
                    "The model '" + call.parsed.model + "' is not served", "invalid_request_error",
                    "model_not_found");
      break;
    case core::NoPlacement::kResidency:
      // Every refusal for residency is audited: who, what, and which jurisdictions they allow.
      tenancy_->Audit("gateway", "residency.refused", ResidencyDetail(call));
      // Not a passing want of capacity: no site there serves the model at all, so a retry
      // cannot help (403, x-should-retry: false; it was 503 with Retry-After, which the OpenAI
      // SDKs retried for a minute).
      co_await Fail(responder, call.request_id, http::status::forbidden,
                    "no site in your allowed jurisdictions serves '" + call.parsed.model + "'",
                    "invalid_request_error", "no_capacity_in_jurisdiction");
      break;
    case core::NoPlacement::kAllUnhealthy:
      co_await Fail(responder, call.request_id, http::status::service_unavailable,
                    "no healthy endpoint in your allowed jurisdictions", "server_error",
                    "no_healthy_endpoint", 5);
      break;
    default:
      co_await Fail(responder, call.request_id, http::status::too_many_requests,
                    "all endpoints in your allowed jurisdictions are at capacity; retry later",
                    "rate_limit_error", "capacity_exceeded", 1);
      break;
  }
}

asio::awaitable<bool> Gateway::Relay(Call& call, const core::Decision& d,
                                     net::Responder& responder) {
  const std::uint32_t ep = d.endpoint_index;
  const fleet::EndpointAddress& addr = fleet_.address(ep);
  const core::Endpoint& endpoint = fleet_.endpoint(ep);
  const core::Site& site = fleet_.site(d.site_index);

  // The request's header is written as text and sent with the body in one gathered write: no
  // message object, no serializer, no copy of the body.
  const std::string up_header = UpstreamHeader(call, addr);
  const std::array<asio::const_buffer, 2> up_request{asio::buffer(up_header),
                                                     asio::buffer(call.upstream_body)};

  Usage usage;
  double ttft_s = -1;
  auto since_start = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - call.start).count();
  };
  // The end of a request that reached an engine: settle() meters it and settles the tenant's
  // reservations; then, where there is a ledger, record() makes its row durable before the
  // client's last byte is sent. Without a store the end costs no coroutine call.
  double gpu_joules = 0, cost = 0, charged = 0, elapsed_s = 0;
  auto settle = [&](std::string_view outcome) {
    if (!usage.reported && usage.prompt_tokens == 0) usage.prompt_tokens = call.routed.prompt_tokens;
    const core::GpuModel& gpu = *endpoint.gpu;
    gpu_joules = GpuJoules(d, gpu, usage.prompt_tokens, usage.completion_tokens);
    cost = core::EnergyCostUsd(gpu_joules, d.score.usd_per_mwh, d.score.pue);
    charged = ChargeUsd(d, gpu, usage.prompt_tokens, usage.completion_tokens);
    elapsed_s = since_start();
    tenancy_->Settle(*call.tenant, call.worst_tokens,
                     usage.prompt_tokens + usage.completion_tokens, call.worst_usd, charged);
    // What the ledger charges, /metrics counts, whatever the ending.
    metrics_.RecordServed(d.site_index, usage.prompt_tokens, usage.completion_tokens,
                          gpu_joules * d.score.pue, cost);
    if (outcome == "ok") {
      // An answer: it ends the endpoint's failure streak, and its TTFT feeds the latency breaker.
      fleet_.ReportAnswer(ep, options_.latency_breaker ? ttft_s : -1, d.score.predicted_ttft_s);
      tenancy_->ObserveOutputTokens(*call.tenant, options_.default_output_tokens,
                                    usage.completion_tokens);
      metrics_.RecordTimes(d.site_index, ttft_s, elapsed_s);
      metrics_.RecordOk(d.site_index);
    } else if (outcome == "client_cancelled") {
      metrics_.RecordRequest(site.id, 499);
    } else if (outcome == "stream_broken" || outcome == "upstream_error") {
      metrics_.RecordRequest(site.id, 502);
    } else if (outcome == "gateway_stopping") {
      metrics_.RecordRequest(site.id, 503);
    }
    return tenancy_->has_store();
  };
  auto record = [&](std::string_view outcome) -> asio::awaitable<void> {
    store::LedgerRow row = CallRow(call, site.id, endpoint.id, outcome, elapsed_s);
    row.prompt_tokens = usage.prompt_tokens;
    row.completion_tokens = usage.completion_tokens;
    row.ttft_ms = ttft_s >= 0 ? ttft_s * 1e3 : 0;
    row.joules = gpu_joules * d.score.pue;
    row.usd_per_mwh = d.score.usd_per_mwh;
    row.energy_cost_usd = cost;
    row.charged_usd = charged;
    if (!co_await RecordDurably(*tenancy_, std::move(row))) {
      spdlog::error("{}: ledger row not durable", call.request_id);
    }
  };
  auto finish = [&](std::string_view outcome) -> asio::awaitable<void> {
    if (settle(outcome)) co_await record(outcome);
  };

  // A non-streaming request the engine took but did not answer in time is not tried again
  // elsewhere (it may still be running there; closing the connection cancels it) and is charged
  // nothing. A stream whose head did not come in time is (below): its engine is hung.
  const auto answer_timeout = call.parsed.stream ? options_.stream_head_timeout
                                                 : options_.upstream_response_timeout;
  const auto answer_timeout_s =
      std::chrono::duration_cast<std::chrono::seconds>(answer_timeout).count();
  auto timed_out = [&]() -> asio::awaitable<bool> {
    const auto seconds = answer_timeout_s;
    spdlog::warn("{}: endpoint {} gave no answer within {} s", call.request_id, endpoint.id,
                 seconds);
    fleet_.ReportFailure(ep, "no answer within " + std::to_string(seconds) + " s");
    usage.reported = true;  // nothing was delivered.
    co_await finish("upstream_timeout");
    const std::string message =
        "the inference endpoint gave no answer within " + std::to_string(seconds) + " s";
    co_await Fail(responder, call.request_id, http::status::gateway_timeout, message,
                  "server_error", "upstream_timeout");
    co_return true;
  };

  // Send the request and read the response header; a pooled connection the engine had closed
  // gets one retry on a fresh connection before the endpoint is blamed.
  std::unique_ptr<net::UpstreamConnection> conn;
  ResponseHead head;
  std::string failure;
  bool client_left = false, answer_late = false;  // after the request was sent whole.
  // The engine's socket is used directly, under one deadline for the whole exchange, rather than
  // through tcp_stream, which arms and cancels a timer around every read and write. The
  // deadline is the connection's own (kept while it is pooled): null while there is none.
  net::SocketDeadline* deadline = nullptr;
  const auto failure_of = [&](const beast::error_code& ec) {
    return deadline->expired() ? beast::error_code(beast::error::timeout).message() : ec.message();
  };
  for (int fresh = 0; fresh < 2; ++fresh) {
    // A pooled connection is taken without a coroutine call; only a new one is awaited.
    if (fresh == 0) conn = net::TakePooled(addr.host, addr.port);
    if (!conn) {
      auto c = co_await net::Connect(addr.host, addr.port, options_.connect_timeout, false);
      if (!c) {
        failure = c.error();
        break;
      }
      conn = std::move(*c);
    }
    deadline = &conn->Deadline(kDeadlineGranularity);
    // The stop's cut closes the exchange within the granularity, whatever the engine does: an
    // engine this process did not start is not stopped with it.
    deadline->WatchStop(&cutting_);
    // Nothing goes to the client before the engine's head (nor, for a non-streaming answer,
    // until it is whole): whether the client is still there is asked at each of the deadline's
    // wakes, and its leaving ends the exchange (which cancels the work at the engine). A
    // stream's watch ends with its head (below): from then on its writes tell.
    deadline->WatchPeer([&responder] { return responder.ClientLeft(); });
    // Sent at once where the socket takes it (net/write_now.h); only a rest waits.
    beast::error_code wec;
    const std::size_t sent = net::SendNow(conn->stream.socket(), up_request, wec);
    if (!wec && sent < asio::buffer_size(up_request)) {
      beast::buffers_suffix<std::array<asio::const_buffer, 2>> rest(up_request);
      rest.consume(sent);
      deadline->Arm(options_.connect_timeout);
      auto [rest_ec, rest_n] = co_await asio::async_write(conn->stream.socket(), rest, kUseTuple);
      wec = rest_ec;
    }
    if (!wec) {
      // The response head, parsed here (chunked.h) from the connection's buffer: no parser or
      // field objects per request.
      deadline->Arm(answer_timeout);
      std::ptrdiff_t head_bytes = 0;
      beast::error_code rec;
      for (;;) {
        const auto data = conn->buffer.data();
        head_bytes = ParseResponseHead(
            std::string_view(static_cast<const char*>(data.data()), data.size()), &head);
        if (head_bytes != 0) break;
        auto [read_ec, n] = co_await conn->stream.socket().async_read_some(
            net::DrainingBuffer(conn->stream.socket(), conn->buffer.prepare(kReadBytes)),
            kUseTuple);
        if (read_ec) {
          rec = read_ec;
          break;
        }
        conn->buffer.commit(n);
      }
      if (head_bytes > 0) {
        conn->buffer.consume(static_cast<std::size_t>(head_bytes));
        failure.clear();
        if (call.parsed.stream) deadline->Disarm();  // and the watch with it.
        break;
      }
      failure = rec ? failure_of(rec) : std::string("malformed response header");
      client_left = deadline->peer_left();
      answer_late = !client_left && deadline->expired();
    } else {
      failure = failure_of(wec);
      client_left = deadline->peer_left();
    }
    const bool was_reused = conn->reused;
    deadline = nullptr;
    conn.reset();
    if (!was_reused || client_left || answer_late || cutting()) break;
  }
  if (!conn) {
    if (client_left) {
      co_await finish("client_cancelled");
      co_return true;
    }
    if (answer_late && !call.parsed.stream) co_return co_await timed_out();
    if (answer_late) {
      // A stream's head comes as soon as an engine takes the request: this one is hung. Closing
      // the connection cancelled the request there; the next best endpoint gets it.
      failure = "no response head within " + std::to_string(answer_timeout_s) + " s";
    }
    if (cutting()) co_return false;  // cut by the stop: not the endpoint's failure.
    spdlog::warn("{}: endpoint {} failed: {}", call.request_id, endpoint.id, failure);
    net::DropPooled(addr.host, addr.port);
    // Our own lack of descriptors is not the endpoint's fault: do not take it out.
    if (failure.find("Too many open files") == std::string::npos) fleet_.ReportFailure(ep, failure);
    co_return false;
  }

  const int status = head.status;
  // The body is read as raw socket bytes and decoded here: one read may carry many chunks.
  BodyDecoder decoder = head.chunked          ? BodyDecoder::Chunked()
                        : head.content_length ? BodyDecoder::Length(*head.content_length)
                                              : BodyDecoder::UntilClose();
  bool reusable = head.keep_alive && (head.chunked || head.content_length);
  // The head's read may have left the socket waiting for epoll (DrainingBuffer); a body that
  // ends at the FIN is read the plain way, trying first, or a FIN that came with the head would
  // wait for the deadline's next wake.
  if (decoder.until_close()) net::ReadFirstAgain(conn->stream.socket());
  std::string decoded;
  // Decodes what the connection's buffer holds (bytes that came with the header, or the last
  // read) into `decoded`. The buffer lives with the pooled connection: no per-request 16 KiB.
  auto feed_buffered = [&](std::string* into) {
    const auto data = conn->buffer.data();
    const std::string_view bytes(static_cast<const char*>(data.data()), data.size());
    if (decoder.Feed(bytes, into) < bytes.size()) reusable = false;
    conn->buffer.consume(bytes.size());
  };
  // One read of body bytes into `decoded`. False when the connection broke or the body is
  // malformed.
  auto pump = [&]() -> asio::awaitable<bool> {
    if (conn->buffer.size() == 0) {
      // A body that ends at the engine's FIN is read as Asio reads; a framed one waits for
      // epoll after a short read (net/read_drained.h).
      beast::error_code ec;
      std::size_t n = 0;
      if (decoder.until_close()) {
        std::tie(ec, n) = co_await conn->stream.socket().async_read_some(
            conn->buffer.prepare(kReadBytes), kUseTuple);
      } else {
        std::tie(ec, n) = co_await conn->stream.socket().async_read_some(
            net::DrainingBuffer(conn->stream.socket(), conn->buffer.prepare(kReadBytes)),
            kUseTuple);
      }
      if (ec == asio::error::eof) {
        decoder.OnClose();
        reusable = false;
        co_return decoder.done();
      }
      if (ec) co_return false;
      conn->buffer.commit(n);
    }
    feed_buffered(&decoded);
    co_return !decoder.failed();
  };
  auto read_all = [&]() -> asio::awaitable<bool> {
    while (!decoder.done()) {
      if (!co_await pump() || decoded.size() > kMaxUpstreamBody) co_return false;
    }
    co_return true;
  };
  auto release_if_reusable = [&] {
    if (reusable && decoder.done()) {
      deadline = nullptr;  // disarmed by Release: a pooled connection is no request's to close.
      net::Release(std::move(conn));
    }
  };

  if (status != 200) {
    deadline->Arm(options_.upstream_header_timeout);
    if (co_await read_all()) release_if_reusable();
    if (status >= 500 || status == 429) {
      spdlog::warn("{}: endpoint {} answered {}", call.request_id, endpoint.id, status);
      // 429 and 503 say "overloaded" (the router sees its load); any other 5xx is a failure.
      if (status != 503 && status != 429) {
        fleet_.ReportFailure(ep, "answered " + std::to_string(status));
      }
      co_return false;  // overloaded or broken: try the next best endpoint.
    }
    usage.reported = true;  // nothing was generated.
    const std::string outcome = "upstream_status_" + std::to_string(status);
    co_await finish(outcome);
    auto res = net::MakeResponse(static_cast<http::status>(status),
                                 NormalizeError(decoded, status), "application/json");
    SetPlacementHeaders(res, call.request_id, site.id, endpoint.id);
    metrics_.RecordRequest(site.id, status);
    co_await responder.Send(std::move(res));
    co_return true;
  }

  if (!call.parsed.stream) {
    deadline->Arm(answer_timeout);
    if (!co_await read_all()) {
      if (deadline->peer_left()) {
        co_await finish("client_cancelled");
        co_return true;
      }
      if (deadline->expired()) co_return co_await timed_out();
      if (cutting()) co_return false;  // cut by the stop: answered 503 gateway_stopping.
      fleet_.ReportFailure(ep, "response broken");
      co_return false;  // nothing was sent yet: the call may go elsewhere.
    }
    release_if_reusable();
    usage.reported = ReadUsage(decoded, &usage.prompt_tokens, &usage.completion_tokens);
    net::Response res{http::status::ok, 11};
    res.set(http::field::content_type, "application/json");
    SetPlacementHeaders(res, call.request_id, site.id, endpoint.id);
    res.body() = std::move(decoded);
    ttft_s = since_start();
    co_await finish("ok");
    co_await responder.Send(std::move(res));
    co_return true;
  }

  std::string fields = StreamHeaderFields(call.request_id, site.id, endpoint.id);
  if (!responder.BeginStream(std::move(fields))) {
    co_await finish("client_cancelled");
    co_return true;
  }

  Scratch events_storage, out_storage;
  SseSplitter splitter(std::move(events_storage.text));
  std::string& out = out_storage.text;
  StreamInspector inspector;
  std::int64_t content_events = 0;
  bool done_seen = false, error_seen = false, broken = false, client_gone = false;
  const bool until_close = decoder.until_close();
  while (!decoder.done()) {
    // Bytes that came with the header first, then one socket read per turn, read here rather
    // than through pump(): a coroutine call per read costs a frame.
    if (conn->buffer.size() == 0) {
      // Each read may take the idle timeout; the time spent writing to the client does not
      // count against the engine.
      deadline->Arm(options_.upstream_header_timeout);
      beast::error_code ec;
      std::size_t n = 0;
      if (until_close) {
        std::tie(ec, n) = co_await conn->stream.socket().async_read_some(
            conn->buffer.prepare(kReadBytes), kUseTuple);
      } else {  // after a short read, wait for epoll (net/read_drained.h).
        std::tie(ec, n) = co_await conn->stream.socket().async_read_some(
            net::DrainingBuffer(conn->stream.socket(), conn->buffer.prepare(kReadBytes)),
            kUseTuple);
      }
      if (ec == asio::error::eof) {
        decoder.OnClose();
        reusable = false;
        if (!decoder.done()) {
          broken = true;
          break;
        }
      } else if (ec) {
        broken = true;
        break;
      }
      deadline->Disarm();
      conn->buffer.commit(n);
    }
    // Decoded straight into the splitter's buffer: no copy in between.
    feed_buffered(splitter.AppendTarget());
    if (decoder.failed()) {
      broken = true;
      break;
    }
    // What goes to the client is taken from the splitter's buffer as spans: one that starts
    // where the last ended extends it, so a read's events are one append, or one per event
    // when `,"usage":null` is cut out of each (events lie one after another and stay put until
    // the next feed: SseSplitter::Next).
    const char* span_begin = nullptr;
    const char* span_end = nullptr;
    // append(pointer, size), not append(first, last): the iterator form goes through
    // _M_replace, about 1,300 instructions a request more once GCC stopped inlining it here.
    const auto take = [&](std::string_view piece) {
      if (piece.data() != span_end) {
        if (span_begin != span_end) out.append(span_begin, std::size_t(span_end - span_begin));
        span_begin = piece.data();
      }
      span_end = piece.data() + piece.size();
    };
    std::string_view event;
    while (splitter.Next(&event)) {
      const EventInfo info = inspector.Inspect(event);
      if (info.has_usage) {
        usage.reported = true;
        usage.prompt_tokens = info.prompt_tokens;
        usage.completion_tokens = info.completion_tokens;
      }
      if (!call.parsed.include_usage) {
        if (info.usage_only) continue;  // the client did not ask for usage.
        // Without include_usage, OpenAI's chunks carry no "usage" member at all.
        if (const auto at = info.usage_null_at; at != std::string_view::npos) {
          take(event.substr(0, at));
          event.remove_prefix(at + 13);
        }
      }
      if (info.content) {
        if (ttft_s < 0) ttft_s = since_start();
        ++content_events;
      }
      if (info.done) done_seen = true;
      if (info.error) error_seen = true;
      take(event);
    }
    if (span_begin != span_end) out.append(span_begin, std::size_t(span_end - span_begin));
    if (decoder.done()) break;  // the last bytes go out with the end of the stream.
    if (!out.empty()) {
      // Written at once where the socket takes it (no coroutine call); only a rest waits.
      if (!responder.WriteChunkNow(out)) co_await responder.FinishWrite();
      if (responder.ClientGone()) {
        client_gone = true;
        break;
      }
      out.clear();
    }
  }
  const bool cut = broken && !done_seen && cutting();
  if (cut) {
    // The stop's grace is over and the engines are being stopped: say so, and blame no engine.
    spdlog::info("{}: stream from {} cut by the stop after {} tokens", call.request_id,
                 endpoint.id, content_events);
    out += "data: " +
           net::ErrorBody("the gateway is shutting down; the answer was cut", "server_error",
                          "gateway_stopping") +
           "\n\ndata: [DONE]\n\n";
  } else if (broken && !done_seen) {
    // The engine died mid-stream: end the stream the way OpenAI clients understand.
    spdlog::warn("{}: stream from {} broke after {} tokens", call.request_id, endpoint.id,
                 content_events);
    fleet_.ReportFailure(ep, "stream broke");
    out += "data: " +
           net::ErrorBody("the inference endpoint failed mid-stream", "server_error",
                          "upstream_stream_broken") +
           "\n\ndata: [DONE]\n\n";
  }
  const bool engine_error = !broken && !client_gone && error_seen;
  if (engine_error) {
    // The engine ended the stream with an error event of its own (e.g. it was stopped): a
    // failure of the endpoint; the client gets [DONE] after it whether the engine sent one.
    spdlog::warn("{}: stream from {} ended with an error after {} tokens", call.request_id,
                 endpoint.id, content_events);
    fleet_.ReportFailure(ep, "stream ended with an error");
    if (!done_seen) out += "data: [DONE]\n\n";
  }
  if (!usage.reported) usage.completion_tokens = content_events;
  // The ledger records what was delivered, durably, before the stream's last bytes go out.
  std::string_view outcome = "ok";
  if (client_gone) {
    outcome = "client_cancelled";
  } else if (cut) {
    outcome = "gateway_stopping";
  } else if (broken && !done_seen) {
    outcome = "stream_broken";
  } else if (engine_error) {
    outcome = "upstream_error";
  }
  if (settle(outcome)) co_await record(outcome);
  if (!client_gone && !responder.EndStreamNow(out)) co_await responder.FinishWrite();
  // A finished upstream response on a kept-alive connection goes back to the pool; a client
  // that left closes the upstream connection, which cancels the work at the engine.
  if (!broken && !client_gone) release_if_reusable();
  events_storage.text = splitter.TakeBuffer();
  co_return true;
}

}  // namespace powerplane::gateway
