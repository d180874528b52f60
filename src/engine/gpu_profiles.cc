#include "engine/gpu_profiles.h"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace powerplane::engine {
namespace {

constexpr std::string_view kH200Llama8BFile = "energy/h200-llama-3.1-8b-shape-decode-prefill.json";
constexpr std::string_view kH200Qwen32BFile = "energy/h200-qwen2.5-32b-shape-decode-prefill.json";
constexpr std::string_view kMlEnergyV3File = "energy/mlenergy-v3-llm-configs.csv";

// Assumptions for the H100, whose ML.ENERGY rows measure decode only (see README.md):
// HBM bandwidth of the H200 (4.8 TB/s) over the H100 SXM's (3.35 TB/s). Reading the KV cache is
// bandwidth-bound, so the per-context-token step cost scales by this ratio.
constexpr double kH200OverH100Bandwidth = 4.8 / 3.35;
// Idle power of an H100 SXM with a model loaded: not in the data; a typical figure (the H200 here
// measured 126 W).
constexpr double kH100IdleWatts = 100.0;
// Both boards are 700 W parts.
constexpr double kBoardLimitWatts = 700.0;
// The context the H200 decode reference points were measured at.
constexpr double kReferenceContext = 1024.0;

std::expected<std::string, std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::unexpected("cannot open " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return std::unexpected("cannot read " + path.string());
  return std::move(text).str();
}

// Least-squares k in step(b, c) = step_ref(b) + k * b * (c - c_ref) through the origin, from the
// points measured at contexts other than the reference.
double FitContextSlope(const std::vector<core::DecodePoint>& reference,
                       const std::vector<std::pair<core::DecodePoint, double>>& other_context) {
  core::GpuProfile ref_only;
  ref_only.decode = reference;
  ref_only.reference_context_tokens = kReferenceContext;
  const core::GpuModel model(ref_only);  // k = 0: StepSeconds is the interpolated step_ref.
  double sum_xy = 0;
  double sum_xx = 0;
  for (const auto& [point, context] : other_context) {
    const int batch = static_cast<int>(std::lround(point.batch));
    const double x = point.batch * (context - kReferenceContext);
    const double y = point.step_s - model.StepSeconds(batch, kReferenceContext);
    sum_xy += x * y;
    sum_xx += x * x;
  }
  return sum_xx > 0 ? sum_xy / sum_xx : 0.0;
}

std::expected<core::GpuProfile, std::string> LoadH200(std::string_view file, std::string_view name,
                                                      const std::filesystem::path& data_dir) {
  const auto path = data_dir / file;
  auto text = ReadFile(path);
  if (!text) return std::unexpected(text.error());
  return ParseH200Measurement(*text, name, path.string());
}

// Splits one CSV line on commas (the ML.ENERGY file has no quoted fields).
std::vector<std::string_view> SplitCsv(std::string_view line) {
  std::vector<std::string_view> fields;
  std::size_t start = 0;
  for (;;) {
    const auto comma = line.find(',', start);
    fields.push_back(line.substr(start, comma - start));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return fields;
}

bool ParseDouble(std::string_view text, double* out) {
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && p == text.data() + text.size();
}

std::expected<core::GpuProfile, std::string> LoadH100(const std::filesystem::path& data_dir) {
  auto h200 = LoadH200(kH200Llama8BFile, "h200-llama-3.1-8b", data_dir);
  if (!h200) return std::unexpected(h200.error());
  const auto path = data_dir / kMlEnergyV3File;
  auto text = ReadFile(path);
  if (!text) return std::unexpected(text.error());

  std::istringstream lines(*text);
  std::string line;
  int line_number = 0;
  std::vector<std::string_view> header;
  std::string header_line;
  const char* kColumns[] = {"task",           "model_id",        "gpu_model",    "num_gpus",
                            "avg_batch_size", "avg_power_watts", "median_itl_ms"};
  std::vector<std::size_t> col;
  core::GpuProfile profile;
  while (std::getline(lines, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (header.empty()) {
      header_line = line;
      header = SplitCsv(header_line);
      for (const char* name : kColumns) {
        auto it = std::find(header.begin(), header.end(), name);
        if (it == header.end()) {
          return std::unexpected(path.string() + ":" + std::to_string(line_number) +
                                 ": missing column " + name);
        }
        col.push_back(static_cast<std::size_t>(it - header.begin()));
      }
      continue;
    }
    const auto fields = SplitCsv(line);
    if (fields.size() != header.size()) {
      return std::unexpected(path.string() + ":" + std::to_string(line_number) + ": " +
                             std::to_string(fields.size()) + " fields, header has " +
                             std::to_string(header.size()));
    }
    if (fields[col[0]] != "lm-arena-chat" || fields[col[1]] != "meta-llama/Llama-3.1-8B-Instruct" ||
        fields[col[2]] != "H100" || fields[col[3]] != "1") {
      continue;
    }
    core::DecodePoint point;
    double itl_ms = 0;
    if (!ParseDouble(fields[col[4]], &point.batch) || !ParseDouble(fields[col[5]], &point.watts) ||
        !ParseDouble(fields[col[6]], &itl_ms) || point.batch <= 0 || itl_ms <= 0) {
      return std::unexpected(path.string() + ":" + std::to_string(line_number) +
                             ": bad avg_batch_size, avg_power_watts or median_itl_ms");
    }
    point.step_s = itl_ms / 1000.0;
    profile.decode.push_back(point);
  }
  if (profile.decode.empty()) {
    return std::unexpected(path.string() +
                           ": no lm-arena-chat rows for Llama-3.1-8B-Instruct on one H100");
  }
  std::sort(profile.decode.begin(), profile.decode.end(),
            [](const auto& a, const auto& b) { return a.batch < b.batch; });
  profile.name = "h100-llama-3.1-8b";
  profile.reference_context_tokens = kReferenceContext;
  profile.step_s_per_context_token = h200->step_s_per_context_token * kH200OverH100Bandwidth;
  profile.prefill_tokens_per_s = h200->prefill_tokens_per_s;
  profile.prefill_watts = std::min(h200->prefill_watts, kBoardLimitWatts);
  profile.idle_watts = kH100IdleWatts;
  profile.max_watts = kBoardLimitWatts;
  profile.source = std::string(kMlEnergyV3File) +
                   " (ML.ENERGY v3, lm-arena-chat, Llama-3.1-8B-Instruct, 1x H100: decode by "
                   "avg batch, median ITL, avg W); context slope = H200 fit x 4.8/3.35, prefill = "
                   "H200's, idle 100 W: assumptions";
  return profile;
}

}  // namespace

std::vector<std::string> KnownGpus() { return {"h100", "h200", "h200-qwen2.5-32b"}; }

std::expected<core::GpuProfile, std::string> ParseH200Measurement(std::string_view json_text,
                                                                  std::string_view name,
                                                                  std::string_view file_label) {
  const std::string where(file_label);
  try {
    const auto doc = nlohmann::json::parse(json_text);
    core::GpuProfile profile;
    profile.name = std::string(name);
    profile.reference_context_tokens = kReferenceContext;
    std::vector<std::pair<core::DecodePoint, double>> other_context;
    for (const auto& row : doc.at("decode")) {
      core::DecodePoint point{row.at("batch").get<double>(),
                              row.at("step_ms").get<double>() / 1000.0,
                              row.at("avg_w").get<double>()};
      if (point.batch <= 0 || point.step_s <= 0) {
        return std::unexpected(where + ": decode point with batch or step_ms <= 0");
      }
      const double context = row.at("ctx").get<double>();
      if (context == kReferenceContext) {
        profile.decode.push_back(point);
      } else {
        other_context.emplace_back(point, context);
      }
    }
    if (profile.decode.empty()) {
      return std::unexpected(where + ": no decode points at context 1024");
    }
    std::sort(profile.decode.begin(), profile.decode.end(),
              [](const auto& a, const auto& b) { return a.batch < b.batch; });
    profile.step_s_per_context_token = FitContextSlope(profile.decode, other_context);

    const auto& prefill = doc.at("prefill");
    if (!prefill.is_array() || prefill.empty()) {
      return std::unexpected(where + ": no prefill rows");
    }
    double tokens_per_s = 0;
    double watts = 0;
    for (const auto& row : prefill) {
      tokens_per_s += row.at("tok_per_s").get<double>();
      watts += row.at("avg_w").get<double>();
    }
    profile.prefill_tokens_per_s = tokens_per_s / static_cast<double>(prefill.size());
    profile.prefill_watts = watts / static_cast<double>(prefill.size());
    profile.idle_watts = doc.at("idle_w").get<double>();
    profile.max_watts = doc.at("info").at("power_limit_w").get<double>();
    profile.source = where + " (H200 measurement: decode at context 1024, context slope fitted "
                             "from the other contexts, prefill = mean of the prefill rows)";
    return profile;
  } catch (const nlohmann::json::exception& e) {
    return std::unexpected(where + ": " + e.what());
  }
}

std::expected<core::GpuProfile, std::string> LoadGpuProfile(std::string_view gpu,
                                                            const std::filesystem::path& data_dir) {
  if (gpu == "h200") return LoadH200(kH200Llama8BFile, "h200-llama-3.1-8b", data_dir);
  if (gpu == "h200-qwen2.5-32b") return LoadH200(kH200Qwen32BFile, "h200-qwen2.5-32b", data_dir);
  if (gpu == "h100") return LoadH100(data_dir);
  std::string known;
  for (const auto& name : KnownGpus()) known += (known.empty() ? "" : ", ") + name;
  return std::unexpected("unknown GPU '" + std::string(gpu) + "' (known: " + known + ")");
}

}  // namespace powerplane::engine
