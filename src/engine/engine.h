#pragma once

#include <atomic>
// The engine emulator: an OpenAI-compatible inference server that runs no model. Requests are
// batched by a BatchScheduler whose step times and power follow a measured GPU profile; tokens are
// filler words, produced when the emulated GPU would have produced them (wall time x `speed`).
// Serves GET /v1/models, POST /v1/chat/completions, POST /v1/completions, GET /metrics (vLLM
// names), GET /health. See src/engine/README.md.

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <memory>
#include <string>

#include "core/gpu_model.h"

namespace powerplane::engine {

struct EngineOptions {
  std::string model = "llama-3.1-8b";          // the only model served (/v1/models, "model").
  std::shared_ptr<const core::GpuModel> gpu;   // must not be null.
  int max_batch = 256;                         // sequences decoded together.
  std::int64_t kv_token_capacity = 900000;     // KV-cache tokens.
  int max_waiting = 4096;                      // beyond this many waiting, answer 503.
  int max_model_len = 32768;                   // prompt + max_tokens limit, in tokens.
  double speed = 1.0;                          // virtual seconds per wall second.
  std::uint64_t seed = 1;                      // for output lengths and filler text.
  std::string name;                            // for logs.
};

// A consistent snapshot of the engine, in the emulated GPU's (virtual) terms.
struct EngineStats {
  int running = 0;
  int waiting = 0;
  double kv_usage = 0;     // 0-1.
  double watts = 0;        // power of the phase under way.
  double joules_total = 0;
  std::int64_t prompt_tokens_total = 0;      // prompt tokens prefilled.
  std::int64_t generation_tokens_total = 0;  // output tokens produced.
  std::int64_t requests_total = 0;           // generation requests accepted.
  double virtual_time_s = 0;                 // since Start.
};

class Engine {
 public:
  // Binds `listen` (port 0 = OS-chosen) at once. `executor` must be a single-threaded
  // io_context's: the HTTP sessions, the scheduler and every request's coroutine run on it, so the
  // engine needs no locks. The io_context may outlive the Engine (state is shared with the
  // coroutines still on it).
  Engine(boost::asio::any_io_executor executor, boost::asio::ip::tcp::endpoint listen,
         EngineOptions options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Starts accepting and the virtual clock (virtual time 0 = now). Call once, from any thread.
  void Start();
  // Stops accepting; requests in flight end (a stream with an error event, others with 503).
  // Thread-safe; idempotent.
  void Stop();
  // Stops accepting and closes idle connections; requests in flight go on (a graceful stop's
  // first step: Stop once open_connections() is 0, or the wait is over). Thread-safe.
  void Drain();
  // Ends the requests in flight as Stop does (a stream with an error event, others with 503),
  // but keeps their connections open for those answers to go out. Thread-safe.
  void EndRequests();
  std::size_t open_connections() const;
  unsigned short port() const;
  // Thread-safe; refreshed whenever the scheduler runs (at least once per scheduled event).
  EngineStats Stats() const;
  // Caps the emulated GPU's power (0 = none), see BatchScheduler::SetPowerCapWatts.
  // Thread-safe (applied on the engine's executor).
  void SetPowerCapWatts(double watts);

 private:
  struct State;
  std::shared_ptr<State> state_;
  std::atomic<bool> stop_requested_{false};
};

}  // namespace powerplane::engine
