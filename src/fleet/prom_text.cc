#include "fleet/prom_text.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string>

namespace powerplane::fleet {
namespace {

std::optional<double> ParseValue(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  auto end = v.find_first_of(" \t\r");
  if (end != std::string_view::npos) v = v.substr(0, end);
  if (v.empty()) return std::nullopt;
  if (v == "NaN") return std::nullopt;
  if (v == "+Inf" || v == "-Inf") return std::nullopt;
  double out = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  if (ec != std::errc() || p != v.data() + v.size() || !std::isfinite(out)) return std::nullopt;
  return out;
}

}  // namespace

std::optional<double> FindSample(std::string_view text, std::string_view name) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto nl = text.find('\n', pos);
    std::string_view line = text.substr(pos, nl == std::string_view::npos ? text.npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
    if (line.empty() || line.front() == '#') continue;
    if (line.size() <= name.size() || line.substr(0, name.size()) != name) continue;
    std::string_view rest = line.substr(name.size());
    if (rest.front() == '{') {
      // Skip labels; values inside quotes may hold '}' when escaped, so track quoting.
      bool quoted = false;
      std::size_t i = 1;
      for (; i < rest.size(); ++i) {
        if (rest[i] == '\\' && quoted) {
          ++i;
        } else if (rest[i] == '"') {
          quoted = !quoted;
        } else if (rest[i] == '}' && !quoted) {
          break;
        }
      }
      if (i >= rest.size()) continue;
      rest = rest.substr(i + 1);
    } else if (rest.front() != ' ' && rest.front() != '\t') {
      continue;  // a longer name with this prefix.
    }
    if (auto v = ParseValue(rest)) return v;
  }
  return std::nullopt;
}

std::optional<ScrapedLoad> ReadEngineLoad(std::string_view text) {
  auto first = [&](std::initializer_list<std::string_view> names) -> std::optional<double> {
    for (auto n : names) {
      if (auto v = FindSample(text, n)) return v;
    }
    return std::nullopt;
  };
  auto running = first({"vllm:num_requests_running", "sglang:num_running_reqs",
                        "llamacpp:requests_processing", "tgi_batch_current_size"});
  auto waiting = first({"vllm:num_requests_waiting", "sglang:num_queue_reqs",
                        "llamacpp:requests_deferred", "tgi_queue_size"});
  if (!running && !waiting) return std::nullopt;
  ScrapedLoad s;
  s.running = static_cast<int>(running.value_or(0));
  s.waiting = static_cast<int>(waiting.value_or(0));
  s.kv_usage_fraction =
      first({"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage"})
          .value_or(0);
  s.watts = first({"powerplane_gpu_power_watts"}).value_or(-1);
  s.joules_total = first({"powerplane_gpu_energy_joules_total"}).value_or(-1);
  return s;
}

}  // namespace powerplane::fleet
