#include "engine/batch_scheduler.h"

#include <algorithm>
#include <limits>
#include <utility>

namespace powerplane::engine {

BatchScheduler::BatchScheduler(std::shared_ptr<const core::GpuModel> gpu, SchedulerOptions options)
    : gpu_(std::move(gpu)), options_(options) {
  options_.max_batch = std::max(options_.max_batch, 1);
  options_.kv_token_capacity = std::max<std::int64_t>(options_.kv_token_capacity, 1);
}

bool BatchScheduler::AddRequest(SequenceId id, int prompt_tokens, int output_tokens) {
  if (prompt_tokens < 0 || output_tokens < 1) return false;
  if (static_cast<std::int64_t>(prompt_tokens) + output_tokens > options_.kv_token_capacity) {
    return false;
  }
  if (!ids_.insert(id).second) return false;
  waiting_.push_back(Sequence{id, prompt_tokens, output_tokens, 0, false});
  return true;
}

bool BatchScheduler::CanAdmitFront() const {
  if (waiting_.empty() || static_cast<int>(running_.size()) >= options_.max_batch) return false;
  const auto& next = waiting_.front();
  return kv_tokens_used_ + next.prompt_tokens + next.output_tokens <= options_.kv_token_capacity;
}

double BatchScheduler::CapThroughputFactor(double watts, double cap_watts) {
  if (cap_watts <= 0 || watts <= cap_watts) return 1.0;
  return std::max(0.5, 1.0 - 0.28 * (1.0 - cap_watts / watts));
}

void BatchScheduler::SetPhasePower(double watts, double seconds) {
  if (power_cap_watts_ > 0 && watts > power_cap_watts_) {
    seconds /= CapThroughputFactor(watts, power_cap_watts_);
    watts = power_cap_watts_;
  }
  phase_watts_ = watts;
  phase_end_s_ = now_s_ + seconds;
}

void BatchScheduler::StartPhase() {
  double prompt_sum = 0;
  bool admitted = false;
  while (CanAdmitFront()) {
    Sequence seq = waiting_.front();
    waiting_.pop_front();
    seq.prefilling = true;
    kv_tokens_used_ += seq.prompt_tokens;
    prompt_sum += seq.prompt_tokens;
    running_.push_back(seq);
    admitted = true;
  }
  if (admitted) {
    phase_ = Phase::kPrefill;
    SetPhasePower(gpu_->profile().prefill_watts, gpu_->PrefillSeconds(prompt_sum));
  } else if (!running_.empty()) {
    phase_ = Phase::kDecode;
    const int batch = static_cast<int>(running_.size());
    const double context = mean_context_tokens();
    SetPhasePower(gpu_->DecodeWatts(batch, context), gpu_->StepSeconds(batch, context));
  } else {
    phase_ = Phase::kIdle;
  }
}

void BatchScheduler::FinishPhase(SchedulerSink& sink) {
  const bool prefill = phase_ == Phase::kPrefill;
  phase_ = Phase::kIdle;
  std::size_t kept = 0;
  for (std::size_t i = 0; i < running_.size(); ++i) {
    Sequence& seq = running_[i];
    if (prefill && !seq.prefilling) {  // decoding sequences wait out another's prefill.
      running_[kept++] = seq;
      continue;
    }
    seq.prefilling = false;
    sink.OnToken(seq.id, seq.generated, now_s_);
    ++seq.generated;
    ++kv_tokens_used_;
    if (seq.generated >= seq.output_tokens) {
      sink.OnFinished(seq.id, now_s_);
      kv_tokens_used_ -= seq.prompt_tokens + seq.generated;
      ids_.erase(seq.id);
      continue;
    }
    running_[kept++] = seq;
  }
  running_.resize(kept);
}

void BatchScheduler::Advance(double until_s, SchedulerSink& sink) {
  until_s = std::max(until_s, now_s_);
  for (;;) {
    if (phase_ == Phase::kIdle) {
      StartPhase();
      if (phase_ == Phase::kIdle) {
        joules_total_ += gpu_->IdleWatts() * (until_s - now_s_);
        now_s_ = until_s;
        return;
      }
    }
    if (phase_end_s_ > until_s) {
      joules_total_ += phase_watts_ * (until_s - now_s_);
      now_s_ = until_s;
      return;
    }
    joules_total_ += phase_watts_ * (phase_end_s_ - now_s_);
    now_s_ = phase_end_s_;
    FinishPhase(sink);
  }
}

bool BatchScheduler::Cancel(SequenceId id) {
  if (ids_.erase(id) == 0) return false;
  auto running = std::find_if(running_.begin(), running_.end(),
                              [id](const Sequence& s) { return s.id == id; });
  if (running != running_.end()) {
    kv_tokens_used_ -= running->prompt_tokens + running->generated;
    running_.erase(running);
    return true;
  }
  auto waiting = std::find_if(waiting_.begin(), waiting_.end(),
                              [id](const Sequence& s) { return s.id == id; });
  if (waiting != waiting_.end()) waiting_.erase(waiting);
  return true;
}

double BatchScheduler::kv_usage_fraction() const {
  return std::min(1.0, static_cast<double>(kv_tokens_used_) /
                           static_cast<double>(options_.kv_token_capacity));
}

double BatchScheduler::mean_context_tokens() const {
  if (running_.empty()) return 0;
  return static_cast<double>(kv_tokens_used_) / static_cast<double>(running_.size());
}

double BatchScheduler::watts_now() const {
  return phase_ == Phase::kIdle ? gpu_->IdleWatts() : phase_watts_;
}

double BatchScheduler::NextEventTime() const {
  if (phase_ != Phase::kIdle) return phase_end_s_;
  if (CanAdmitFront() || !running_.empty()) return now_s_;
  return std::numeric_limits<double>::infinity();
}

}  // namespace powerplane::engine
