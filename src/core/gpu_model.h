#pragma once
// The GPU model: decode step time, power and energy per token as functions of batch size and
// context, interpolated from measured points. One implementation serves the router's cost model,
// the engine emulator and the simulator.

#include <string>
#include <vector>

namespace powerplane::core {

// One measured decode operating point at the profile's reference context.
struct DecodePoint {
  double batch = 1;       // sequences decoded together.
  double step_s = 0;      // seconds per decode step (one token for each sequence).
  double watts = 0;       // average GPU power while decoding.
};

// Measurements of one GPU running one model. Where they come from is the loader's business
// (see src/fleet/gpu_profiles.cc and data/README.md).
struct GpuProfile {
  std::string name;                    // e.g. "h200-llama-3.1-8b".
  std::vector<DecodePoint> decode;     // at reference_context_tokens, batch ascending.
  double reference_context_tokens = 1024;
  // Extra step time per cached token: step(b, c) = step_ref(b) + k * b * (c - c_ref).
  double step_s_per_context_token = 0;
  double prefill_tokens_per_s = 0;
  double prefill_watts = 0;
  double idle_watts = 0;
  double max_watts = 700;              // the board power limit.
  std::string source;                  // provenance, for reports and docs.
};

// Fast evaluation of a GpuProfile. Immutable after construction; safe to share across threads.
class GpuModel {
 public:
  explicit GpuModel(GpuProfile profile);

  const GpuProfile& profile() const { return profile_; }

  // Seconds per decode step with `batch` sequences of mean context `context_tokens`.
  double StepSeconds(int batch, double context_tokens) const {
    if (batch <= 0) return 0;
    const double ref = StepRef(batch);
    if (context_tokens <= 0) return ref;
    const double extra = profile_.step_s_per_context_token * batch *
                         (context_tokens - profile_.reference_context_tokens);
    // Shorter contexts than the reference save at most half the step (weights still stream).
    return ref + extra > 0.5 * ref ? ref + extra : 0.5 * ref;
  }
  // Average GPU watts while decoding at that batch and context.
  double DecodeWatts(int batch, double context_tokens) const {
    if (batch <= 0) return profile_.idle_watts;
    const double at_batch = WattsRef(batch);
    if (context_tokens <= profile_.reference_context_tokens) return at_batch;
    // A longer context loads the GPU like a larger batch at the reference context; the measured
    // points (context 4,096 and 8,192) sit between the two, so take their mean.
    const double effective_batch = batch * context_tokens / profile_.reference_context_tokens;
    const double w = 0.5 * (at_batch + WattsRef(effective_batch));
    return w < profile_.max_watts ? w : profile_.max_watts;
  }
  // Joules per output token at that batch and context (watts x step / batch).
  double JoulesPerOutputToken(int batch, double context_tokens) const {
    if (batch <= 0) return 0;
    return DecodeWatts(batch, context_tokens) * StepSeconds(batch, context_tokens) / batch;
  }
  // Seconds to prefill `prompt_tokens` tokens.
  double PrefillSeconds(double prompt_tokens) const { return prompt_tokens * prefill_s_per_token_; }
  // Joules per prompt token during prefill.
  double JoulesPerPromptToken() const { return joules_per_prompt_token_; }
  double IdleWatts() const { return profile_.idle_watts; }
  // 1 / batch, from a table for the batches the router sees (avoids a division per candidate).
  double InverseBatch(int batch) const {
    return batch <= kTableSize && batch >= 1 ? inverse_batch_[batch] : 1.0 / batch;
  }
  // The largest batch b for which a step time per token of at most `limit_s` is possible at
  // any context, counting `extra_s_per_member` more per sequence in the batch: the largest b
  // with min over contexts of StepSeconds(b, .) + b * extra <= limit. 0 when not even b = 1
  // fits; INT_MAX when every batch in the table fits. A cheap, exact pre-filter for the router.
  int LargestBatchWithin(double limit_s, double extra_s_per_member) const;
  // Whether the reference step per sequence (step / batch) never rises with the batch in the
  // table: then so does StepSeconds(b, c) / b for any fixed context c, which the router's bound
  // relies on.
  bool StepPerSequenceFalls() const { return step_per_sequence_falls_; }
  // Whether decode power never falls as the batch grows (at the reference context).
  bool WattsRiseWithBatch() const { return watts_rise_with_batch_; }

 private:
  static constexpr int kTableSize = 1024;
  double StepRef(int batch) const {
    return batch <= kTableSize ? step_ref_[batch < 1 ? 1 : batch] : StepBeyondTable(batch);
  }
  double WattsRef(double batch) const {
    if (batch >= kTableSize) return watts_ref_[kTableSize];
    const int b = static_cast<int>(batch + 0.5);
    return watts_ref_[b < 1 ? 1 : b];
  }
  double StepBeyondTable(int batch) const;

  GpuProfile profile_;
  std::vector<double> step_ref_;   // index = batch, 1..kTableSize.
  std::vector<double> watts_ref_;  // index = batch.
  std::vector<double> inverse_batch_;
  // Half the least reference step at this batch or above: StepSeconds(b, c) >= it for any c,
  // and it does not fall as b grows (so LargestBatchWithin can search it).
  std::vector<double> step_floor_;
  bool step_per_sequence_falls_ = true;
  bool watts_rise_with_batch_ = true;
  double joules_per_prompt_token_ = 0;
  double prefill_s_per_token_ = 0;
};

}  // namespace powerplane::core
