#pragma once
// The engine emulator's Prometheus metrics, named as vLLM names them (so the gateway reads an
// emulated engine and a real vLLM alike), plus the emulated GPU's power and energy. Values are in
// the emulated GPU's virtual terms. Thread-safe (prometheus-cpp metrics are atomic).

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
}  // namespace prometheus

namespace powerplane::engine {

class EngineMetrics {
 public:
  // Every series carries the label model_name=`model_name`.
  explicit EngineMetrics(std::string model_name);
  ~EngineMetrics();
  EngineMetrics(const EngineMetrics&) = delete;
  EngineMetrics& operator=(const EngineMetrics&) = delete;

  // vllm:num_requests_running, vllm:num_requests_waiting, vllm:kv_cache_usage_perc (0-1),
  // powerplane_gpu_power_watts.
  void SetLoad(int running, int waiting, double kv_usage_fraction, double watts);
  // powerplane_gpu_energy_joules_total; `joules` >= 0.
  void AddJoules(double joules);
  void AddPromptTokens(std::int64_t tokens);      // vllm:prompt_tokens_total
  void AddGenerationTokens(std::int64_t tokens);  // vllm:generation_tokens_total
  void ObserveTimeToFirstToken(double seconds);   // vllm:time_to_first_token_seconds
  // vllm:request_success_total{finished_reason="stop"|"length"}.
  void RequestSucceeded(std::string_view finished_reason);

  // The Prometheus text exposition format (version 0.0.4).
  std::string Serialize() const;

 private:
  std::string model_name_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Gauge* running_;
  prometheus::Gauge* waiting_;
  prometheus::Gauge* kv_usage_;
  prometheus::Gauge* watts_;
  prometheus::Counter* joules_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generation_tokens_;
  prometheus::Histogram* ttft_;
  prometheus::Counter* success_stop_;
  prometheus::Counter* success_length_;
};

}  // namespace powerplane::engine
