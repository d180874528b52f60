#include "sim/arrivals.h"

#include <algorithm>
#include <cmath>

namespace powerplane::sim {

ArrivalStream::ArrivalStream(const Trace& trace, const RateCurve* curve, ArrivalOptions options)
    : trace_(trace), curve_(curve), options_(std::move(options)), rng_(options_.seed) {
  double sum = 0;
  for (double w : options_.tenant_weights) {
    sum += w;
    cumulative_weights_.push_back(sum);
  }
  if (cumulative_weights_.empty() || sum <= 0) cumulative_weights_ = {1.0};
  for (double& w : cumulative_weights_) w /= cumulative_weights_.back();
  if (options_.rate_scale <= 0) options_.rate_scale = 1;
}

std::uint32_t ArrivalStream::DrawTenant() {
  if (cumulative_weights_.size() == 1) return 0;
  const double u = rng_.Uniform();
  const auto it = std::upper_bound(cumulative_weights_.begin(), cumulative_weights_.end(), u);
  return static_cast<std::uint32_t>(
      std::min<std::ptrdiff_t>(it - cumulative_weights_.begin(),
                               static_cast<std::ptrdiff_t>(cumulative_weights_.size()) - 1));
}

bool ArrivalStream::Next(Arrival* out) {
  if (trace_.requests.empty()) return false;
  const TraceRequest* r = nullptr;
  double t = 0;
  if (curve_ == nullptr) {
    if (index_ == trace_.requests.size()) {
      // Loop: the next cycle starts one mean gap after the trace's last request.
      const double gap = trace_.requests.size() > 1
                             ? trace_.span_s / static_cast<double>(trace_.requests.size() - 1)
                             : 1.0;
      cycle_offset_s_ += trace_.span_s + gap;
      index_ = 0;
    }
    r = &trace_.requests[index_++];
    t = (cycle_offset_s_ + r->offset_s) / options_.rate_scale;
  } else {
    // Piecewise-constant intensity: spend an Exp(1) amount of integrated rate window by window.
    double need = -std::log(1.0 - rng_.Uniform());
    t = t_s_;
    for (;;) {
      if (t >= options_.duration_s) return false;
      const double w = std::fmod(t, curve_->span_s);
      const std::size_t i = curve_->IndexAt(w);
      const double end_w = i + 1 < curve_->start_s.size() ? curve_->start_s[i + 1] : curve_->span_s;
      const double len = std::max(end_w - w, 1e-9);
      const double rate = curve_->rate_rps[i] * options_.rate_scale;
      if (rate * len >= need) {
        t += need / rate;
        break;
      }
      need -= rate * len;
      t += len;
    }
    t_s_ = t;
    const std::size_t pick = static_cast<std::size_t>(
        rng_.Uniform() * static_cast<double>(trace_.requests.size()));
    r = &trace_.requests[std::min(pick, trace_.requests.size() - 1)];
  }
  if (t >= options_.duration_s) return false;
  out->id = next_id_++;
  out->t_s = t;
  out->prompt_tokens = r->prompt_tokens;
  out->output_tokens = r->output_tokens;
  out->tenant = DrawTenant();
  return true;
}

double ArrivalStream::MeanRateRps(const Trace& trace, const RateCurve* curve, double rate_scale,
                                  double duration_s) {
  if (curve != nullptr) return rate_scale * curve->MeanRate(0, duration_s);
  return rate_scale * trace.MeanRateRps();
}

}  // namespace powerplane::sim
