#pragma once
// How long a tenant's completions run, learned from the requests that finished, so the router
// plans with it (prefill stalls per output token, KV need, TTFT behind others) when a request
// sets no max_tokens. A fleet-wide default (256) misjudged a code tenant averaging 28 tokens by 9x
// (docs/evaluation.md). Pure.

#include <algorithm>
#include <cmath>

namespace powerplane::core {

class OutputLengthEstimate {
 public:
  // `prior`: the planning default until requests have finished. `weight`: of each new sample in
  // the exponentially weighted mean (1/64: about the last hundred requests).
  explicit OutputLengthEstimate(double prior = 256, double weight = 1.0 / 64)
      : mean_(prior), weight_(weight) {}

  void Observe(int output_tokens) {
    if (output_tokens <= 0) return;
    // The first samples count fully (a running mean), then the weight takes over.
    ++samples_;
    const double w = std::max(weight_, 1.0 / samples_);
    mean_ += w * (output_tokens - mean_);
  }
  // Output tokens to plan for (at least 1).
  int Expected() const { return std::max(1, static_cast<int>(std::lround(mean_))); }
  long samples() const { return samples_; }

 private:
  double mean_;
  double weight_;
  long samples_ = 0;
};

}  // namespace powerplane::core
