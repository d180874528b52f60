#include "core/gpu_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
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
  inverse_batch_.resize(kTableSize + 1);
  for (int b = 1; b <= kTableSize; ++b) inverse_batch_[b] = 1.0 / b;
  inverse_batch_[0] = 1.0;
  step_ref_[0] = step_ref_[1];
  for (int b = 2; b <= kTableSize; ++b) {
    if (step_ref_[b] / b > step_ref_[b - 1] / (b - 1)) step_per_sequence_falls_ = false;
    if (watts_ref_[b] < watts_ref_[b - 1]) watts_rise_with_batch_ = false;
  }
  // Beyond the table the step extends linearly: its step per sequence falls when the line's
  // intercept is not negative, i.e. when doubling the batch at most doubles the step.
  if (StepBeyondTable(2 * kTableSize) > 2 * step_ref_[kTableSize]) step_per_sequence_falls_ = false;
  step_floor_.resize(kTableSize + 1);
  double least = step_ref_[kTableSize];
  for (int b = kTableSize; b >= 0; --b) {
    least = std::min(least, step_ref_[b]);
    step_floor_[b] = 0.5 * least;
  }
  watts_ref_[0] = profile_.idle_watts;
  prefill_s_per_token_ =
      profile_.prefill_tokens_per_s > 0 ? 1.0 / profile_.prefill_tokens_per_s : 0;
  joules_per_prompt_token_ =
      profile_.prefill_tokens_per_s > 0 ? profile_.prefill_watts / profile_.prefill_tokens_per_s
                                        : 0;
}

int GpuModel::LargestBatchWithin(double limit_s, double extra_s_per_member) const {
  const auto fits = [&](int b) { return step_floor_[b] + b * extra_s_per_member <= limit_s; };
  if (fits(kTableSize)) return std::numeric_limits<int>::max();
  if (!fits(1)) return 0;
  int lo = 1, hi = kTableSize;  // fits(lo), !fits(hi).
  while (hi - lo > 1) {
    const int mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  return lo;
}

double GpuModel::StepBeyondTable(int batch) const {
  return Interpolate(profile_.decode, batch, [](const DecodePoint& p) { return p.step_s; }, true);
}

}  // namespace powerplane::core
