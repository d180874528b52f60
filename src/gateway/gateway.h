#pragma once
// The OpenAI-compatible gateway: authenticates the tenant, validates the request, asks the
// fleet (and through it the core Router) where the token is cheapest within the tenant's
// latency targets and jurisdictions, and relays the engine's answer chunk by chunk, metering
// tokens and energy. Also serves /v1/models, /metrics, /healthz and the admin API.

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "fleet/fleet.h"
#include "fleet/grid_state.h"
#include "gateway/metrics.h"
#include "gateway/openai_request.h"
#include "gateway/tenancy.h"
#include "gateway/tenants.h"
#include "net/http_server.h"

#include <boost/asio/thread_pool.hpp>

namespace powerplane::gateway {

struct GatewayOptions {
  std::string admin_key_sha256;  // empty = admin API disabled.
  int default_output_tokens = 256;
  bool latency_breaker = true;  // report each answer's TTFT to the fleet's latency breaker.
  std::chrono::milliseconds connect_timeout{1000};
  // How long a streaming request waits for the engine's response head. Engines (vLLM, SGLang,
  // the emulator) send it as soon as they take the request, so one that has not in this time is
  // hung: the attempt is abandoned (closing its connection cancels it there), counts as the
  // endpoint's failure, and the request goes to the next best endpoint.
  std::chrono::milliseconds stream_head_timeout{10000};
  // How long a stream waits between reads once its head came.
  std::chrono::milliseconds upstream_header_timeout{60000};
  // How long a non-streaming request waits for the engine's whole answer (the engine sends it
  // only when generation ends): the OpenAI SDKs' own default timeout. A request the engine took
  // and did not answer in time is answered 504 upstream_timeout, not tried elsewhere.
  std::chrono::milliseconds upstream_response_timeout{600000};
  // How long a request may wait for a slot when every allowed endpoint is full, before 429.
  std::chrono::milliseconds capacity_wait{2000};
  int max_attempts = 3;  // endpoints tried before the first byte reaches the client.
  // The output a request may produce when it sets no max_tokens, for its worst-case token and
  // budget reservations.
  int worst_case_output_tokens = 4096;
  // The market time shown by /admin/fleet (optional).
  std::function<std::string()> market_time;
  // When set, /admin/ is served only by admin_handler() (a separate listener), never here.
  bool admin_on_separate_listener = false;
  // Grid events, hashprice and flex plans (optional: without it /admin/grid-events is 404).
  fleet::GridState* grid = nullptr;
};

// One API call on its way through the gateway.
struct Call {
  std::string request_id;
  std::shared_ptr<const Tenant> tenant;
  std::string key_id;
  OpenAiRequest parsed;
  std::int64_t worst_tokens = 0;  // taken from the tenant's per-minute token bucket.
  double worst_usd = 0;           // reserved from the tenant's budget.
  std::int64_t start_unix_ms = 0;
  core::Request routed;
  std::string target;
  std::string upstream_body;
  std::chrono::steady_clock::time_point start;
};

class Gateway {
 public:
  // Tenants from the fleet file only (no store, no ledger).
  Gateway(fleet::Fleet& fleet, TenantDirectory tenants, GatewayOptions options);
  Gateway(fleet::Fleet& fleet, std::shared_ptr<Tenancy> tenancy, GatewayOptions options);
  Tenancy& tenancy() { return *tenancy_; }

  // The net::Handler for every request. Never throws. Not a coroutine itself: an inference
  // request's coroutine is handed back as it is, so the hot path has one frame fewer.
  net::asio::awaitable<void> Handle(net::ServerRequest& request, net::Responder& responder,
                                    bool admin_listener = false);
  net::Handler handler();
  // For a separate admin listener: /admin/, /metrics and /healthz only.
  net::Handler admin_handler();
  // Waits for admin work in progress to finish. Its completions go to the I/O threads' pool, so
  // this runs before that pool is destroyed (runtime.cc).
  void JoinAdminThread() { admin_pool_.join(); }
  // The stop is cutting the requests still under way (Runtime::Stop, after its grace): an
  // engine that fails from now on is being stopped, not failing. A stream then ends with the
  // error `gateway_stopping`, and a request not yet answered is not tried elsewhere but
  // answered 503 `gateway_stopping` (Retry-After: 1), so clients retry at another gateway.
  void BeginCut() { cutting_.store(true, std::memory_order_relaxed); }
  bool cutting() const { return cutting_.load(std::memory_order_relaxed); }

 private:
  // The caller's tenant by its API key (Tenancy::Identify; a key not known here is looked for
  // in the store first).
  net::asio::awaitable<Identity> IdentifyCaller(const net::ServerRequest& request);
  net::asio::awaitable<void> HandleInference(ApiKind kind, net::ServerRequest& request,
                                             net::Responder& responder);
  // Every path but inference's (Handle's coroutine for those).
  net::asio::awaitable<void> HandleOther(std::string_view path, net::ServerRequest& request,
                                         net::Responder& responder, bool admin_listener);
  net::asio::awaitable<void> HandleAdmin(net::ServerRequest& request, net::Responder& responder);
  net::asio::awaitable<void> HandleAdminListener(net::ServerRequest& request,
                                                 net::Responder& responder);
  // Places the call and relays the engine's answer (proxy.cc).
  net::asio::awaitable<void> Proxy(Call& call, net::Responder& responder);
  // Answers a request whose spend was not admitted (over budget, budget leased elsewhere or out
  // of reach, ledger behind).
  net::asio::awaitable<void> RefuseSpend(net::Responder& responder, const Call& call,
                                         const Admission& spend);
  // Relays one attempt at the chosen endpoint. Returns false when nothing reached the client
  // and the call may be retried elsewhere.
  net::asio::awaitable<bool> Relay(Call& call, const core::Decision& decision,
                                   net::Responder& responder);
  // Answers with an OpenAI error and counts it.
  net::asio::awaitable<void> Fail(net::Responder& responder, const std::string& request_id,
                                  net::http::status status, std::string_view message,
                                  std::string_view type, std::string_view code,
                                  int retry_after_s = 0, std::string_view allow = {});
  std::string FleetJson() const;
  // The jurisdictions of this fleet's sites, each once, in the fleet file's order.
  std::vector<std::string> FleetJurisdictions() const;
  // /admin/tenants, /admin/keys, /admin/usage, /admin/ledger, /admin/audit (tenancy_admin.cc).
  // Returns false when the path is not one of them.
  net::asio::awaitable<bool> HandleTenancyAdmin(net::ServerRequest& request,
                                                net::Responder& responder);
  // /admin/grid-events and /admin/hashprice (grid_admin.cc). Returns false when the path is not
  // one of them.
  net::asio::awaitable<bool> HandleGridAdmin(net::ServerRequest& request,
                                             net::Responder& responder);

  fleet::Fleet& fleet_;
  std::shared_ptr<Tenancy> tenancy_;
  GatewayOptions options_;
  GatewayMetrics metrics_;
  // The tenancy admin API's store work (queries, exports, waiting for the ledger to flush) runs
  // here, not on an I/O thread, whose other requests would wait for it. Declared last: joined
  // first.
  net::asio::thread_pool admin_pool_{1};
  std::atomic<bool> cutting_{false};
};

// A new request id: "req_" and 32 hex digits, the first twelve the Unix time in milliseconds, so
// that later ids sort after earlier ones.
std::string NewRequestId();

}  // namespace powerplane::gateway
