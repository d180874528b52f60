#include "core/gpu_model.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace powerplane::core {
namespace {

// Linear interpolation over the decode points by batch; `field` picks step_s or watts.
// Below the first point the first value holds; above the last, step time extends with the last
// segment's slope (time grows with batch) and power stays at the last value.
template <typename Field>
double Interpolate(const std::vector<DecodePoint>& points, double batch, Field field,
                   bool extrapolate) {
  if (points.empty()) return 0;
  if (batch <= points.front().batch) return field(points.front());
  for (std::size_t i = 1; i < points.size(); ++i) {
    if (batch <= points[i].batch) {
      const auto& a = points[i - 1];
      const auto& b = points[i];
      double t = (batch - a.batch) / (b.batch - a.batch);
      return field(a) + t * (field(b) - field(a));
    }
  }
  const auto& last = points.back();
  if (!extrapolate || points.size() < 2) return field(last);
  const auto& prev = points[points.size() - 2];
  double slope = (field(last) - field(prev)) / (last.batch - prev.batch);
  return field(last) + slope * (batch - last.batch);
}

}  // namespace

GpuModel::GpuModel(GpuProfile profile) : profile_(std::move(profile)) {
  std::sort(profile_.decode.begin(), profile_.decode.end(),
            [](const DecodePoint& a, const DecodePoint& b) { return a.batch < b.batch; });
  step_ref_.resize(kTableSize + 1);
  watts_ref_.resize(kTableSize + 1);
  for (int b = 1; b <= kTableSize; ++b) {
    step_ref_[b] = Interpolate(profile_.decode, b, [](const DecodePoint& p) { return p.step_s; },
                               /*extrapolate=*/true);
    watts_ref_[b] = std::min(
        profile_.max_watts,
        Interpolate(profile_.decode, b, [](const DecodePoint& p) { return p.watts; }, false));
  }
  step_ref_[0] = step_ref_[1];
  watts_ref_[0] = profile_.idle_watts;
  joules_per_prompt_token_ =
      profile_.prefill_tokens_per_s > 0 ? profile_.prefill_watts / profile_.prefill_tokens_per_s
                                        : 0;
}

double GpuModel::StepRef(int batch) const {
  if (batch <= kTableSize) return step_ref_[std::max(batch, 1)];
  return Interpolate(profile_.decode, batch, [](const DecodePoint& p) { return p.step_s; }, true);
}

double GpuModel::WattsRef(double batch) const {
  if (batch <= kTableSize) return watts_ref_[std::max(1, static_cast<int>(std::lround(batch)))];
  return watts_ref_[kTableSize];
}

double GpuModel::StepSeconds(int batch, double context_tokens) const {
  if (batch <= 0) return 0;
  double ref = StepRef(batch);
  if (context_tokens <= 0) return ref;
  double extra = profile_.step_s_per_context_token * batch *
                 (context_tokens - profile_.reference_context_tokens);
  // Shorter contexts than the reference save at most half the step (weights still stream).
  return std::max(ref + extra, 0.5 * ref);
}

double GpuModel::DecodeWatts(int batch, double context_tokens) const {
  if (batch <= 0) return profile_.idle_watts;
  double at_batch = WattsRef(batch);
  if (context_tokens <= profile_.reference_context_tokens) return at_batch;
  // A longer context loads the GPU like a larger batch at the reference context; the measured
  // points (context 4,096 and 8,192) sit between the two, so take their mean.
  double effective_batch = batch * context_tokens / profile_.reference_context_tokens;
  return std::min(profile_.max_watts, 0.5 * (at_batch + WattsRef(effective_batch)));
}

double GpuModel::JoulesPerOutputToken(int batch, double context_tokens) const {
  if (batch <= 0) return 0;
  return DecodeWatts(batch, context_tokens) * StepSeconds(batch, context_tokens) / batch;
}

double GpuModel::PrefillSeconds(double prompt_tokens) const {
  if (profile_.prefill_tokens_per_s <= 0) return 0;
  return prompt_tokens / profile_.prefill_tokens_per_s;
}

}  // namespace powerplane::core
