#pragma once
// Continuous batching of sequences on one emulated GPU, in virtual time. Pure: no I/O, no clocks,
// no threads; the caller passes the time in. Not thread-safe (the engine drives it from one
// thread).
//
// The schedule is a sequence of phases. At each phase boundary waiting requests are admitted
// (first come, first served) while the batch has room and the KV cache would hold them; if any
// were admitted the next phase prefills them all together, after which each has its first token.
// Otherwise the next phase is one decode step of every running sequence, each getting one token;
// sequences that reach their output length leave at the end of that step. With nothing to run
// the GPU idles. Power: prefill watts during prefill, GpuModel::DecodeWatts during decode, idle
// watts otherwise; energy integrates power over virtual time.

#include <cstdint>
#include <deque>
#include <memory>
#include <unordered_set>
#include <vector>

#include "core/gpu_model.h"

namespace powerplane::engine {

using SequenceId = std::uint64_t;

// Receives what a schedule produced. Called from inside BatchScheduler::Advance; must not call
// back into the scheduler.
class SchedulerSink {
 public:
  virtual ~SchedulerSink() = default;
  // Token `index` (0-based; index 0 is the first token, at the end of prefill) of sequence `id`
  // was produced at virtual time `time_s`.
  virtual void OnToken(SequenceId id, int index, double time_s) = 0;
  // Sequence `id` produced its last token at `time_s` and left the batch.
  virtual void OnFinished(SequenceId id, double time_s) = 0;
};

struct SchedulerOptions {
  int max_batch = 256;                      // sequences decoded together.
  std::int64_t kv_token_capacity = 900000;  // tokens the KV cache holds; must be > 0.
};

class BatchScheduler {
 public:
  // `gpu` must not be null.
  BatchScheduler(std::shared_ptr<const core::GpuModel> gpu, SchedulerOptions options);

  // Queues a request at the current virtual time. False (nothing queued) when the id is already
  // known, a size is out of range (prompt < 0, output < 1), or prompt + output exceeds the whole
  // KV capacity (it could never be admitted).
  bool AddRequest(SequenceId id, int prompt_tokens, int output_tokens);

  // Runs the schedule up to virtual time `until_s`, reporting tokens and finished sequences to
  // `sink` in time order. A time before virtual_now() is ignored. Cost is proportional to the
  // tokens produced, so many steps per call are cheap.
  void Advance(double until_s, SchedulerSink& sink);

  // Removes a waiting or running sequence (the client went away); its KV space is freed at once.
  // A phase already under way keeps its duration. False when the id is unknown.
  bool Cancel(SequenceId id);

  // Caps the emulated GPU's power, as a board power limit would; 0 removes the cap. A phase whose
  // power would exceed the cap runs at the cap and slower by the DVFS rule of thumb "about 7% of
  // throughput lost for 25% less power": throughput x (1 - 0.28 (1 - cap/watts)), at least x0.5.
  // Takes effect from the next phase.
  void SetPowerCapWatts(double watts) { power_cap_watts_ = watts > 0 ? watts : 0; }
  double power_cap_watts() const { return power_cap_watts_; }

  int running() const { return static_cast<int>(running_.size()); }
  int waiting() const { return static_cast<int>(waiting_.size()); }
  // Tokens in the KV cache: prompt plus tokens generated so far, over running sequences.
  std::int64_t kv_tokens_used() const { return kv_tokens_used_; }
  // kv_tokens_used over capacity, at most 1 (admission does not reserve the growth of sequences
  // already running, so the sum may briefly pass capacity; nothing is preempted).
  double kv_usage_fraction() const;
  // Mean context (prompt + generated) of the running sequences; 0 when none.
  double mean_context_tokens() const;
  // Power of the phase under way at virtual_now() (idle watts when idle).
  double watts_now() const;
  // Energy from time 0 to virtual_now().
  double joules_total() const { return joules_total_; }
  double virtual_now() const { return now_s_; }
  // When the phase under way ends; virtual_now() when work is queued but no phase has started
  // yet (the next Advance starts it); +infinity when idle with nothing admissible.
  double NextEventTime() const;
  const core::GpuModel& gpu() const { return *gpu_; }

  // Throughput factor and capped power for a phase of `watts` under `cap_watts` (see
  // SetPowerCapWatts). Exposed for tests and the flex controller.
  static double CapThroughputFactor(double watts, double cap_watts);

 private:
  struct Sequence {
    SequenceId id = 0;
    int prompt_tokens = 0;
    int output_tokens = 0;
    int generated = 0;        // tokens produced so far.
    bool prefilling = false;  // admitted in the prefill phase under way.
  };
  enum class Phase { kIdle, kPrefill, kDecode };

  bool CanAdmitFront() const;
  // Starts the next phase at now_s_ (admitting first); leaves kIdle when there is nothing to do.
  void StartPhase();
  // Ends the phase under way at now_s_, reporting its tokens.
  void FinishPhase(SchedulerSink& sink);
  void SetPhasePower(double watts, double seconds);

  std::shared_ptr<const core::GpuModel> gpu_;
  SchedulerOptions options_;
  std::deque<Sequence> waiting_;
  std::vector<Sequence> running_;
  std::unordered_set<SequenceId> ids_;  // waiting or running.
  std::int64_t kv_tokens_used_ = 0;
  Phase phase_ = Phase::kIdle;
  double phase_end_s_ = 0;
  double phase_watts_ = 0;
  double power_cap_watts_ = 0;
  double now_s_ = 0;
  double joules_total_ = 0;
};

}  // namespace powerplane::engine
