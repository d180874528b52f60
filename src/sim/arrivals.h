#pragma once
// Arrivals for the twin: when requests come and how large they are. Either the trace's own
// inter-arrival times (time-compressed by the rate scale, looped when the run is longer than the
// trace), or a non-homogeneous Poisson process following a rate curve with sizes drawn from the
// trace. Pure and seeded: the same inputs and seed give the same sequence.

#include <cstdint>
#include <vector>

#include "sim/trace.h"

namespace powerplane::sim {

// A small, fast, portable generator (SplitMix64): the same numbers on every platform.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t Next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1).
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  std::uint64_t state_;
};

struct Arrival {
  std::uint64_t id = 0;  // 0, 1, 2, ... in arrival order.
  double t_s = 0;        // seconds after the run's start.
  int prompt_tokens = 0;
  int output_tokens = 1;
  std::uint32_t tenant = 0;
};

struct ArrivalOptions {
  double duration_s = 3600;  // arrivals in [0, duration_s).
  // Replay: arrival times are divided by it. Curve: the curve's rate is multiplied by it.
  double rate_scale = 1.0;
  std::uint64_t seed = 1;
  std::vector<double> tenant_weights{1.0};  // normalised; one per tenant.
};

class ArrivalStream {
 public:
  // `trace` (and `curve` when not null) must outlive the stream.
  ArrivalStream(const Trace& trace, const RateCurve* curve, ArrivalOptions options);

  // The next arrival; false once arrivals pass the duration.
  bool Next(Arrival* out);

  // Mean arrival rate of this stream's process over the run, requests per second.
  static double MeanRateRps(const Trace& trace, const RateCurve* curve, double rate_scale,
                            double duration_s);

 private:
  std::uint32_t DrawTenant();

  const Trace& trace_;
  const RateCurve* curve_;
  ArrivalOptions options_;
  Rng rng_;
  std::vector<double> cumulative_weights_;
  std::uint64_t next_id_ = 0;
  // Replay state.
  std::size_t index_ = 0;
  double cycle_offset_s_ = 0;
  // Curve state.
  double t_s_ = 0;
};

}  // namespace powerplane::sim
