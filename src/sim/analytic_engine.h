#pragma once
// One endpoint's continuous batching, integrated per batch phase instead of per decode step. It
// follows engine::BatchScheduler's rules exactly (FCFS admission at phase boundaries within
// max_batch and the KV cache; all admitted prompts prefilled together; then decode steps of the
// whole batch; a sequence leaves at the end of the step that produces its last token) and uses
// the same core::GpuModel, but jumps over the decode steps between two events (an admission, a
// departure) in one go: a run of k steps at batch n lasts sum_j step(n, c0 + j), computed as a
// trapezoid (exact while the step is linear in context), at the power of its middle step. An
// arrival during a run cuts the run at the end of the step under way, as in the scheduler.
// Cost per request is O(log batch), independent of its token count. sim_test.cc compares it with
// BatchScheduler: finish times, TTFT and energy agree within 0.5%.
//
// Pure; not thread-safe; time is virtual seconds passed in by the caller.

#include <cstdint>
#include <deque>
#include <queue>
#include <vector>

#include "core/gpu_model.h"
#include "core/types.h"

namespace powerplane::sim {

// Energy per time bucket: bucket b covers [b * bucket_s - offset_s, (b + 1) * bucket_s - offset_s).
class EnergyLedger {
 public:
  EnergyLedger(double bucket_s, double offset_s) : bucket_s_(bucket_s), offset_s_(offset_s) {}
  // Adds `watts` held over [t0_s, t1_s).
  void Add(double t0_s, double t1_s, double watts);
  const std::vector<double>& joules() const { return joules_; }
  double total_joules() const { return total_; }
  double bucket_s() const { return bucket_s_; }
  double offset_s() const { return offset_s_; }
  std::size_t BucketOf(double t_s) const;

 private:
  double bucket_s_;
  double offset_s_;
  std::vector<double> joules_;
  double total_ = 0;
};

struct FinishedRequest {
  std::uint64_t id = 0;
  std::uint32_t tenant = 0;
  double arrival_s = 0;
  double first_token_s = 0;
  double finish_s = 0;
  int prompt_tokens = 0;
  int output_tokens = 0;
};

class FinishSink {
 public:
  virtual ~FinishSink() = default;
  virtual void OnFinished(const FinishedRequest& r) = 0;
};

class AnalyticEngine {
 public:
  // `gpu` and `ledger` (may be null) must outlive the engine.
  AnalyticEngine(const core::GpuModel* gpu, int max_batch, std::int64_t kv_token_capacity,
                 EnergyLedger* ledger);

  // Queues a request at virtual_now() (call Advance(arrival) first). `output_tokens` >= 1.
  // False when it can never fit the KV cache.
  bool Add(std::uint64_t id, std::uint32_t tenant, int prompt_tokens, int output_tokens);
  // Runs the schedule up to `until_s`, reporting finished requests.
  void Advance(double until_s, FinishSink& sink);
  // Runs until nothing is left; returns the time it went idle.
  double Drain(FinishSink& sink);
  // Books idle power up to `t_s` (call once at the end, after Drain).
  void CloseBooks(double t_s);
  // Caps the GPU's power as engine::BatchScheduler::SetPowerCapWatts does (0 removes the cap): a
  // phase whose power would exceed the cap runs at the cap and slower by
  // BatchScheduler::CapThroughputFactor. Like the scheduler, a new cap applies from the next phase.
  void SetPowerCapWatts(double watts) { power_cap_watts_ = watts > 0 ? watts : 0; }
  double power_cap_watts() const { return power_cap_watts_; }
  // The GPU's power at virtual_now(): the phase under way, or idle.
  double watts_now() const { return phase_ == Phase::kIdle ? gpu_->IdleWatts() : phase_watts_; }

  // The load as the router sees it at virtual_now().
  core::EndpointLoad Load() const;
  int occupied() const { return static_cast<int>(waiting_.size() + prefilling_.size() + heap_.size()); }
  double virtual_now() const { return now_s_; }
  double joules_total() const { return joules_total_; }
  // GPU joules used from time 0 to virtual_now(), the phase under way included (a power meter).
  double joules_at_now() const;

 private:
  struct Seq {
    std::uint64_t id = 0;
    std::uint32_t tenant = 0;
    int prompt = 0;
    int output = 0;
    double arrival_s = 0;
    double first_token_s = 0;
    std::int64_t join_step = 0;
  };
  enum class Phase { kIdle, kPrefill, kDecode };
  using HeapItem = std::pair<std::int64_t, std::uint32_t>;  // finish step, slot.

  void StartPhase();
  // Applies the power cap to the phase just planned (phase_watts_): returns the throughput factor.
  double CapFactor();
  void FinishPhase(FinishSink& sink);
  void Book(double t0, double t1, double watts);
  double RunSeconds(std::int64_t steps) const;
  std::int64_t StepsCompleted(double elapsed_s) const;
  std::int64_t KvUsed(std::int64_t steps) const;
  std::uint32_t NewSlot();

  const core::GpuModel* gpu_;
  int max_batch_;
  std::int64_t kv_capacity_;
  EnergyLedger* ledger_;

  std::vector<Seq> slots_;
  std::vector<std::uint32_t> free_slots_;
  std::deque<std::uint32_t> waiting_;
  std::vector<std::uint32_t> prefilling_;
  std::priority_queue<HeapItem, std::vector<HeapItem>, std::greater<>> heap_;
  std::int64_t steps_done_ = 0;
  std::int64_t prefill_prompt_sum_ = 0;
  std::int64_t running_base_ = 0;  // sum over decoding seqs of prompt + 1 - join_step.

  Phase phase_ = Phase::kIdle;
  double now_s_ = 0;
  double phase_start_s_ = 0;
  double phase_end_s_ = 0;
  double phase_watts_ = 0;
  std::int64_t run_steps_ = 0;
  double run_batch_ = 0;
  double run_c0_ = 0;
  double run_s0_ = 0;  // first step's seconds.
  double run_d_ = 0;   // increase of the step per step.
  double power_cap_watts_ = 0;  // 0 = none.
  double booked_until_s_ = 0;
  double joules_total_ = 0;
};

}  // namespace powerplane::sim
