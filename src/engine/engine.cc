#include "engine/engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <cassert>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <expected>
#include <mutex>
#include <random>
#include <unordered_map>

#include "engine/batch_scheduler.h"
#include "engine/engine_metrics.h"
#include "engine/openai_format.h"
#include "net/http_server.h"

namespace powerplane::engine {
namespace {

namespace asio = boost::asio;
namespace http = net::http;
using Clock = std::chrono::steady_clock;
constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);

// The state of one generation request while it is in the scheduler.
struct Pending {
  explicit Pending(asio::any_io_executor ex) : wake(ex, Clock::time_point::max()) {}
  asio::steady_timer wake;  // cancelled by the scheduler loop when there is news.
  int prompt_tokens = 0;
  double arrival_s = 0;   // virtual.
  int tokens_ready = 0;   // tokens the scheduler has produced.
  bool finished = false;
  bool notified = false;  // in State::touched.
};

std::int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Hex(std::uint64_t value) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(value));
  return buf;
}

net::Response ApiErrorResponse(const ApiError& e, unsigned version) {
  auto res = net::MakeResponse(static_cast<http::status>(e.status),
                               net::ErrorBody(e.message, e.type, e.code, e.param),
                               "application/json", version);
  if (e.status == 503) res.set(http::field::retry_after, "1");
  return res;
}

}  // namespace

struct Engine::State : std::enable_shared_from_this<Engine::State>, SchedulerSink {
  State(asio::any_io_executor ex, net::tcp::endpoint listen, EngineOptions o)
      : executor(ex),
        options(std::move(o)),
        scheduler(options.gpu, SchedulerOptions{options.max_batch, options.kv_token_capacity}),
        metrics(options.model),
        loop_timer(ex),
        start(Clock::now()),
        created(UnixSeconds()),
        id_salt(std::random_device{}() | (std::uint64_t{std::random_device{}()} << 32)),
        server_endpoint(listen) {}

  // Creates the server; needs shared_from_this, so it cannot be in the constructor.
  void Init() {
    std::weak_ptr<State> weak = shared_from_this();
    server = std::make_unique<net::HttpServer>(
        std::vector<asio::any_io_executor>{executor}, server_endpoint,
        [weak](net::ServerRequest& req, net::Responder& res) -> asio::awaitable<void> {
          auto self = weak.lock();
          if (!self) {
            co_await res.Send(net::ErrorResponse(http::status::service_unavailable,
                                                 "engine stopped", "server_error"));
            co_return;
          }
          co_await self->Handle(req, res);
        });
  }

  double VirtualNow() const {
    return std::chrono::duration<double>(Clock::now() - start).count() * options.speed;
  }

  // Runs the scheduler to now, wakes the requests that have news and publishes the numbers.
  void Sync() {
    scheduler.Advance(VirtualNow(), *this);
    for (Pending* p : touched) {
      p->notified = false;
      p->wake.cancel();
    }
    touched.clear();
    Publish();
  }

  void OnToken(SequenceId id, int index, double time_s) override {
    ++generation_total;
    auto it = pending.find(id);
    if (it == pending.end()) return;
    Pending& p = *it->second;
    if (index == 0) {
      prompt_total += p.prompt_tokens;
      metrics.ObserveTimeToFirstToken(time_s - p.arrival_s);
    }
    p.tokens_ready = index + 1;
    if (!p.notified) {
      p.notified = true;
      touched.push_back(&p);
    }
  }

  void OnFinished(SequenceId id, double /*time_s*/) override {
    auto it = pending.find(id);
    if (it == pending.end()) return;
    Pending& p = *it->second;
    p.finished = true;
    if (!p.notified) {
      p.notified = true;
      touched.push_back(&p);
    }
  }

  void Publish() {
    const double joules = scheduler.joules_total();
    metrics.SetLoad(scheduler.running(), scheduler.waiting(), scheduler.kv_usage_fraction(),
                    scheduler.watts_now());
    metrics.AddJoules(joules - joules_published);
    metrics.AddPromptTokens(prompt_total - prompt_published);
    metrics.AddGenerationTokens(generation_total - generation_published);
    joules_published = joules;
    prompt_published = prompt_total;
    generation_published = generation_total;
    std::lock_guard lock(stats_mutex);
    stats = EngineStats{scheduler.running(),   scheduler.waiting(), scheduler.kv_usage_fraction(),
                        scheduler.watts_now(), joules,              prompt_total,
                        generation_total,      requests_total,      scheduler.virtual_now()};
  }

  asio::awaitable<void> Loop() {
    auto self = shared_from_this();
    while (!stopped) {
      Sync();
      const double next = scheduler.NextEventTime();
      const auto earliest = Clock::now() + std::chrono::milliseconds(1);
      auto wake_at = Clock::time_point::max();
      if (std::isfinite(next)) {
        wake_at = start + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double>(next / options.speed));
        wake_at = std::max(wake_at, earliest);
      }
      loop_timer.expires_at(wake_at);
      co_await loop_timer.async_wait(kUseTuple);  // cancelled when a request arrives.
    }
  }

  void DoStop() {
    if (stopped) return;
    stopped = true;
    loop_timer.cancel();
    for (auto& [id, p] : pending) p->wake.cancel();
  }

  asio::awaitable<void> Handle(net::ServerRequest& req, net::Responder& res) {
    auto self = shared_from_this();
    std::string_view target = req.target();
    target = target.substr(0, target.find('?'));
    const bool get = req.method() == http::verb::get;
    const bool post = req.method() == http::verb::post;
    if (target == "/v1/chat/completions" && post) {
      co_await Generate(ApiKind::kChat, req, res);
    } else if (target == "/v1/completions" && post) {
      co_await Generate(ApiKind::kCompletion, req, res);
    } else if (target == "/v1/models" && get) {
      co_await res.Send(net::MakeResponse(http::status::ok, ModelList(options.model, created),
                                          "application/json", req.version()));
    } else if (target == "/metrics" && get) {
      Sync();
      co_await res.Send(net::MakeResponse(http::status::ok, metrics.Serialize(),
                                          "text/plain; version=0.0.4", req.version()));
    } else if (target == "/health" && get) {
      co_await res.Send(net::MakeResponse(stopped ? http::status::service_unavailable
                                                  : http::status::ok,
                                          "", "text/plain", req.version()));
    } else {
      co_await res.Send(net::ErrorResponse(http::status::not_found,
                                           "no route " + std::string(req.method_string()) + " " +
                                               std::string(target),
                                           "invalid_request_error", "not_found", req.version()));
    }
  }

  // Validates, sizes the output, or says why not.
  std::expected<int, ApiError> OutputTokens(const GenerationRequest& g) const {
    const char* prompt_param = g.kind == ApiKind::kChat ? "messages" : "prompt";
    if (g.model != options.model) {
      return std::unexpected(ApiError{404, "The model `" + g.model + "` does not exist.",
                                      "invalid_request_error", "model_not_found", "model"});
    }
    if (g.prompt_tokens > options.max_model_len ||
        (g.max_tokens > 0 &&
         static_cast<std::int64_t>(g.prompt_tokens) + g.max_tokens > options.max_model_len)) {
      return std::unexpected(ApiError{
          400,
          "This model's maximum context length is " + std::to_string(options.max_model_len) +
              " tokens. However, you requested " + std::to_string(g.prompt_tokens) +
              " prompt tokens and " + std::to_string(g.max_tokens) + " output tokens.",
          "invalid_request_error", "context_length_exceeded",
          g.prompt_tokens > options.max_model_len ? prompt_param : "max_tokens"});
    }
    if (stopped) return std::unexpected(ApiError{503, "engine is stopping", "server_error", {}, {}});
    if (scheduler.waiting() >= options.max_waiting) {
      return std::unexpected(ApiError{503,
                                      "engine queue is full (" +
                                          std::to_string(scheduler.waiting()) + " waiting)",
                                      "server_error", "engine_overloaded", {}});
    }
    if (g.max_tokens > 0) return g.max_tokens;
    return std::max(1, std::min(DefaultOutputTokens(g.prompt_hash, options.seed),
                                options.max_model_len - g.prompt_tokens));
  }

  asio::awaitable<void> Generate(ApiKind kind, net::ServerRequest& req, net::Responder& res) {
    auto self = shared_from_this();  // outlives `erase` below.
    const unsigned version = req.version();
    auto parsed = ParseGenerationRequest(kind, req.body());
    if (!parsed) {
      co_await res.Send(ApiErrorResponse(parsed.error(), version));
      co_return;
    }
    const GenerationRequest& g = *parsed;
    auto output = OutputTokens(g);
    if (!output) {
      co_await res.Send(ApiErrorResponse(output.error(), version));
      co_return;
    }
    Sync();
    const SequenceId id = next_id++;
    if (!scheduler.AddRequest(id, g.prompt_tokens, *output)) {
      co_await res.Send(ApiErrorResponse(
          ApiError{400, "prompt and output exceed the KV cache", "invalid_request_error",
                   "context_length_exceeded", "max_tokens"},
          version));
      co_return;
    }
    ++requests_total;
    auto p = std::make_shared<Pending>(executor);
    p->prompt_tokens = g.prompt_tokens;
    p->arrival_s = scheduler.virtual_now();
    pending.emplace(id, p);
    struct Erase {
      State* s;
      SequenceId id;
      ~Erase() {
        s->scheduler.Cancel(id);  // no-op when it finished.
        s->pending.erase(id);
      }
    } erase{this, id};
    loop_timer.cancel();  // the loop replans with the new request.

    const std::string_view finish_reason = g.max_tokens > 0 ? "length" : "stop";
    const std::string request_id = req.has("x-request-id")
                                       ? std::string(req["x-request-id"])
                                       : "req-" + Hex(MixHash(options.seed ^ id ^ id_salt));
    ResponseWriter writer(kind, (kind == ApiKind::kChat ? "chatcmpl-" : "cmpl-") + Hex(
                                    MixHash((id * 31 + options.seed) ^ id_salt)),
                          UnixSeconds(), g.model);
    if (g.stream) {
      http::response<http::empty_body> header{http::status::ok, version};
      header.set(http::field::content_type, "text/event-stream");
      header.set(http::field::cache_control, "no-cache");
      header.set("x-request-id", request_id);
      // The header goes out now, as vLLM's does, not with the first token: a client (the
      // gateway, which gives up on an engine whose header does not come in 10 s) learns at once
      // that the request was taken, however long the queue and the prefill.
      if (!co_await res.StartStream(std::move(header)) || !co_await res.SendHead()) co_return;
    }
    std::string text;
    std::string events;
    int sent = 0;
    for (;;) {
      while (!p->finished && p->tokens_ready == sent && !stopped) {
        p->wake.expires_at(Clock::time_point::max());
        co_await p->wake.async_wait(kUseTuple);
      }
      // A non-streaming answer writes nothing until it is whole: a client that left is noticed
      // at the next tokens instead, and its generation cancelled (Erase), as vLLM aborts one.
      if (!g.stream && !p->finished && res.ClientLeft()) co_return;
      if (stopped && !p->finished) {
        if (g.stream) {
          // An error event, then [DONE], as a stream that fails is ended (OpenAI clients stop
          // at the error; others wait for [DONE]).
          const std::string stopped_event = "data: " +
                                            net::ErrorBody("engine stopped", "server_error") +
                                            "\n\ndata: [DONE]\n\n";
          co_await res.WriteChunk(stopped_event);
          co_await res.EndStream();
        } else {
          // Made before the co_await: g++ 12 mishandles temporaries in a co_await's operand
          // (this one was freed twice).
          const ApiError stopped_error{503, "engine stopped", "server_error", {}, {}};
          auto stopped_response = ApiErrorResponse(stopped_error, version);
          co_await res.Send(std::move(stopped_response));
        }
        co_return;
      }
      const int ready = p->tokens_ready;
      events.clear();
      for (; sent < ready; ++sent) {
        auto word = FillerToken(options.seed, id, sent);
        if (g.stream) {
          writer.AppendTokenEvent(&events, word, sent == 0, g.include_usage);
        } else {
          text.append(word);
        }
      }
      if (p->finished) break;
      if (g.stream && !co_await res.WriteChunk(events)) co_return;  // client gone: Erase cancels.
    }
    metrics.RequestSucceeded(finish_reason);
    const Usage usage{g.prompt_tokens, sent};
    if (!g.stream) {
      auto response = net::MakeResponse(http::status::ok, writer.Complete(text, finish_reason, usage),
                                        "application/json", version);
      response.set("x-request-id", request_id);
      co_await res.Send(std::move(response));
      co_return;
    }
    writer.AppendFinishEvent(&events, finish_reason, g.include_usage);
    if (g.include_usage) writer.AppendUsageEvent(&events, usage);
    events.append("data: [DONE]\n\n");
    co_await res.EndStream(events);  // the last events and the end in one write.
  }

  asio::any_io_executor executor;
  EngineOptions options;
  BatchScheduler scheduler;
  EngineMetrics metrics;
  asio::steady_timer loop_timer;
  Clock::time_point start;
  std::int64_t created;
  // Mixed into response and request ids: a restarted engine (or another with the same seed)
  // gives ids no earlier answer had. The filler text stays seeded.
  std::uint64_t id_salt;
  net::tcp::endpoint server_endpoint;
  std::unique_ptr<net::HttpServer> server;
  std::unordered_map<SequenceId, std::shared_ptr<Pending>> pending;
  std::vector<Pending*> touched;  // requests with news since the last Sync.
  SequenceId next_id = 1;
  bool stopped = false;  // on the executor.
  std::int64_t requests_total = 0;
  std::int64_t prompt_total = 0;
  std::int64_t generation_total = 0;
  double joules_published = 0;
  std::int64_t prompt_published = 0;
  std::int64_t generation_published = 0;
  mutable std::mutex stats_mutex;
  EngineStats stats;
};

Engine::Engine(asio::any_io_executor executor, net::tcp::endpoint listen, EngineOptions options) {
  assert(options.gpu != nullptr);
  if (options.speed <= 0) options.speed = 1.0;
  state_ = std::make_shared<State>(executor, listen, std::move(options));
  state_->Init();
}

Engine::~Engine() { Stop(); }

void Engine::Start() {
  if (!state_->options.name.empty()) {
    spdlog::info("engine {} serving {} on port {} (speed x{})", state_->options.name,
                 state_->options.model, port(), state_->options.speed);
  }
  asio::post(state_->executor, [s = state_] {
    s->start = Clock::now();
    asio::co_spawn(s->executor, s->Loop(), asio::detached);
  });
  state_->server->Start();
}

void Engine::Stop() {
  if (stop_requested_.exchange(true)) return;
  state_->server->Stop();
  asio::post(state_->executor, [s = state_] { s->DoStop(); });
}

void Engine::Drain() { state_->server->Drain(); }
void Engine::EndRequests() {
  asio::post(state_->executor, [s = state_] { s->DoStop(); });
}
std::size_t Engine::open_connections() const { return state_->server->open_connections(); }

unsigned short Engine::port() const { return state_->server->port(); }

EngineStats Engine::Stats() const {
  std::lock_guard lock(state_->stats_mutex);
  return state_->stats;
}

void Engine::SetPowerCapWatts(double watts) {
  asio::post(state_->executor, [s = state_, watts] {
    s->Sync();
    s->scheduler.SetPowerCapWatts(watts);
  });
}

}  // namespace powerplane::engine
