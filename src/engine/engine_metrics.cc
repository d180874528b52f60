#include "engine/engine_metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <sstream>

namespace powerplane::engine {

EngineMetrics::EngineMetrics(std::string model_name)
    : model_name_(std::move(model_name)), registry_(std::make_shared<prometheus::Registry>()) {
  const prometheus::Labels labels{{"model_name", model_name_}};
  auto gauge = [&](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Register(*registry_).Add(labels);
  };
  auto counter = [&](const char* name, const char* help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Register(*registry_).Add(labels);
  };
  running_ = gauge("vllm:num_requests_running", "Number of requests in the decode batch.");
  waiting_ = gauge("vllm:num_requests_waiting", "Number of requests waiting to be admitted.");
  kv_usage_ = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.");
  watts_ = gauge("powerplane_gpu_power_watts", "Emulated GPU power now, in watts.");
  joules_ = counter("powerplane_gpu_energy_joules_total", "Emulated GPU energy, in joules.");
  prompt_tokens_ = counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.");
  generation_tokens_ =
      counter("vllm:generation_tokens_total", "Number of generation tokens processed.");
  // vLLM's buckets for time to first token.
  ttft_ = &prometheus::BuildHistogram()
               .Name("vllm:time_to_first_token_seconds")
               .Help("Histogram of time to first token in seconds.")
               .Register(*registry_)
               .Add(labels, prometheus::Histogram::BucketBoundaries{
                                0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0});
  auto& success = prometheus::BuildCounter()
                      .Name("vllm:request_success_total")
                      .Help("Count of successfully processed requests.")
                      .Register(*registry_);
  success_stop_ = &success.Add({{"model_name", model_name_}, {"finished_reason", "stop"}});
  success_length_ = &success.Add({{"model_name", model_name_}, {"finished_reason", "length"}});
}

EngineMetrics::~EngineMetrics() = default;

void EngineMetrics::SetLoad(int running, int waiting, double kv_usage_fraction, double watts) {
  running_->Set(running);
  waiting_->Set(waiting);
  kv_usage_->Set(kv_usage_fraction);
  watts_->Set(watts);
}

void EngineMetrics::AddJoules(double joules) {
  if (joules > 0) joules_->Increment(joules);
}
void EngineMetrics::AddPromptTokens(std::int64_t tokens) {
  if (tokens > 0) prompt_tokens_->Increment(static_cast<double>(tokens));
}
void EngineMetrics::AddGenerationTokens(std::int64_t tokens) {
  if (tokens > 0) generation_tokens_->Increment(static_cast<double>(tokens));
}
void EngineMetrics::ObserveTimeToFirstToken(double seconds) { ttft_->Observe(seconds); }

void EngineMetrics::RequestSucceeded(std::string_view finished_reason) {
  (finished_reason == "length" ? success_length_ : success_stop_)->Increment();
}

std::string EngineMetrics::Serialize() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return std::move(out).str();
}

}  // namespace powerplane::engine
