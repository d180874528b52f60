#include "sim/analytic_engine.h"

#include <algorithm>
#include <cmath>

#include "engine/batch_scheduler.h"

namespace powerplane::sim {

std::size_t EnergyLedger::BucketOf(double t_s) const {
  const double b = std::floor((t_s + offset_s_) / bucket_s_);
  return b <= 0 ? 0 : static_cast<std::size_t>(b);
}

void EnergyLedger::Add(double t0_s, double t1_s, double watts) {
  if (t1_s <= t0_s) return;
  total_ += watts * (t1_s - t0_s);
  std::size_t b = BucketOf(t0_s);
  const std::size_t last = BucketOf(t1_s);
  if (joules_.size() <= last) joules_.resize(last + 1, 0.0);
  double t = t0_s;
  while (b < last) {
    const double edge = static_cast<double>(b + 1) * bucket_s_ - offset_s_;
    joules_[b] += watts * (edge - t);
    t = edge;
    ++b;
  }
  joules_[last] += watts * (t1_s - t);
}

AnalyticEngine::AnalyticEngine(const core::GpuModel* gpu, int max_batch,
                               std::int64_t kv_token_capacity, EnergyLedger* ledger)
    : gpu_(gpu),
      max_batch_(std::max(1, max_batch)),
      kv_capacity_(kv_token_capacity > 0 ? kv_token_capacity : INT64_MAX / 4),
      ledger_(ledger) {}

std::uint32_t AnalyticEngine::NewSlot() {
  if (!free_slots_.empty()) {
    const std::uint32_t s = free_slots_.back();
    free_slots_.pop_back();
    return s;
  }
  slots_.emplace_back();
  return static_cast<std::uint32_t>(slots_.size() - 1);
}

bool AnalyticEngine::Add(std::uint64_t id, std::uint32_t tenant, int prompt_tokens,
                         int output_tokens) {
  if (output_tokens < 1 || prompt_tokens < 0 ||
      static_cast<std::int64_t>(prompt_tokens) + output_tokens > kv_capacity_) {
    return false;
  }
  const std::uint32_t slot = NewSlot();
  slots_[slot] = Seq{id, tenant, prompt_tokens, output_tokens, now_s_, 0, 0};
  waiting_.push_back(slot);
  if (phase_ == Phase::kDecode && run_steps_ > 1) {
    // The scheduler admits at the next phase boundary: cut the run after the step under way.
    const std::int64_t done = StepsCompleted(now_s_ - phase_start_s_);
    const std::int64_t cut = std::min(run_steps_, done + 1);
    if (cut < run_steps_) {
      run_steps_ = cut;
      phase_end_s_ = phase_start_s_ + RunSeconds(cut);
      phase_watts_ = gpu_->DecodeWatts(static_cast<int>(run_batch_),
                                       run_c0_ + 0.5 * static_cast<double>(cut - 1));
      if (power_cap_watts_ > 0) phase_watts_ = std::min(phase_watts_, power_cap_watts_);
    }
  }
  return true;
}

double AnalyticEngine::RunSeconds(std::int64_t k) const {
  const double kd = static_cast<double>(k);
  return kd * run_s0_ + run_d_ * kd * (kd - 1) * 0.5;
}

std::int64_t AnalyticEngine::StepsCompleted(double elapsed_s) const {
  if (elapsed_s <= 0) return 0;
  double j = 0;
  if (run_d_ <= run_s0_ * 1e-12) {
    j = std::floor(elapsed_s / run_s0_);
  } else {
    const double b = run_s0_ - 0.5 * run_d_;
    j = std::floor((-b + std::sqrt(b * b + 2 * run_d_ * elapsed_s)) / run_d_);
  }
  auto k = static_cast<std::int64_t>(std::max(0.0, j));
  while (k > 0 && RunSeconds(k) > elapsed_s) --k;
  while (RunSeconds(k + 1) <= elapsed_s) ++k;
  return std::min(k, run_steps_);
}

std::int64_t AnalyticEngine::KvUsed(std::int64_t steps) const {
  return prefill_prompt_sum_ + running_base_ + static_cast<std::int64_t>(heap_.size()) * steps;
}

void AnalyticEngine::Book(double t0, double t1, double watts) {
  if (t1 <= t0) return;
  joules_total_ += watts * (t1 - t0);
  if (ledger_ != nullptr) ledger_->Add(t0, t1, watts);
}

double AnalyticEngine::CapFactor() {
  const double factor = engine::BatchScheduler::CapThroughputFactor(phase_watts_, power_cap_watts_);
  if (factor < 1.0) phase_watts_ = power_cap_watts_;
  return factor;
}

void AnalyticEngine::StartPhase() {
  std::int64_t prompt_sum = 0;
  int running = static_cast<int>(heap_.size() + prefilling_.size());
  std::int64_t kv = KvUsed(steps_done_);
  while (!waiting_.empty() && running < max_batch_) {
    const Seq& s = slots_[waiting_.front()];
    if (kv + s.prompt + s.output > kv_capacity_) break;
    kv += s.prompt;
    prompt_sum += s.prompt;
    prefilling_.push_back(waiting_.front());
    waiting_.pop_front();
    ++running;
  }
  phase_start_s_ = now_s_;
  if (!prefilling_.empty()) {
    phase_ = Phase::kPrefill;
    prefill_prompt_sum_ += prompt_sum;
    phase_watts_ = gpu_->profile().prefill_watts;
    const double factor = CapFactor();
    phase_end_s_ = now_s_ + gpu_->PrefillSeconds(static_cast<double>(prompt_sum)) / factor;
  } else if (!heap_.empty()) {
    phase_ = Phase::kDecode;
    const int n = static_cast<int>(heap_.size());
    run_batch_ = n;
    run_c0_ = static_cast<double>(KvUsed(steps_done_)) / n;
    run_steps_ = std::max<std::int64_t>(1, heap_.top().first - steps_done_);
    run_s0_ = gpu_->StepSeconds(n, run_c0_);
    const double last = gpu_->StepSeconds(n, run_c0_ + static_cast<double>(run_steps_ - 1));
    run_d_ = run_steps_ > 1 ? (last - run_s0_) / static_cast<double>(run_steps_ - 1) : 0.0;
    if (run_d_ < 0) run_d_ = 0;
    phase_watts_ = gpu_->DecodeWatts(n, run_c0_ + 0.5 * static_cast<double>(run_steps_ - 1));
    const double factor = CapFactor();
    run_s0_ /= factor;
    run_d_ /= factor;
    phase_end_s_ = now_s_ + RunSeconds(run_steps_);
  } else {
    phase_ = Phase::kIdle;
  }
}

void AnalyticEngine::FinishPhase(FinishSink& sink) {
  Book(booked_until_s_, phase_start_s_, gpu_->IdleWatts());
  Book(phase_start_s_, phase_end_s_, phase_watts_);
  booked_until_s_ = phase_end_s_;
  FinishedRequest done;
  if (phase_ == Phase::kPrefill) {
    for (const std::uint32_t slot : prefilling_) {
      Seq& s = slots_[slot];
      s.first_token_s = now_s_;
      if (s.output == 1) {
        done = {s.id, s.tenant, s.arrival_s, now_s_, now_s_, s.prompt, s.output};
        sink.OnFinished(done);
        free_slots_.push_back(slot);
        continue;
      }
      s.join_step = steps_done_;
      running_base_ += s.prompt + 1 - s.join_step;
      heap_.push({steps_done_ + s.output - 1, slot});
    }
    prefilling_.clear();
    prefill_prompt_sum_ = 0;
  } else if (phase_ == Phase::kDecode) {
    steps_done_ += run_steps_;
    while (!heap_.empty() && heap_.top().first <= steps_done_) {
      const std::uint32_t slot = heap_.top().second;
      heap_.pop();
      const Seq& s = slots_[slot];
      running_base_ -= s.prompt + 1 - s.join_step;
      done = {s.id, s.tenant, s.arrival_s, s.first_token_s, now_s_, s.prompt, s.output};
      sink.OnFinished(done);
      free_slots_.push_back(slot);
    }
  }
  phase_ = Phase::kIdle;
}

void AnalyticEngine::Advance(double until_s, FinishSink& sink) {
  if (until_s < now_s_) return;
  for (;;) {
    if (phase_ == Phase::kIdle) {
      StartPhase();
      if (phase_ == Phase::kIdle) {
        now_s_ = until_s;
        return;
      }
    }
    if (phase_end_s_ > until_s) {
      now_s_ = until_s;
      return;
    }
    now_s_ = phase_end_s_;
    FinishPhase(sink);
  }
}

double AnalyticEngine::Drain(FinishSink& sink) {
  for (;;) {
    if (phase_ == Phase::kIdle) {
      StartPhase();
      if (phase_ == Phase::kIdle) return now_s_;
    }
    now_s_ = phase_end_s_;
    FinishPhase(sink);
  }
}

void AnalyticEngine::CloseBooks(double t_s) {
  if (t_s > booked_until_s_) {
    Book(booked_until_s_, t_s, gpu_->IdleWatts());
    booked_until_s_ = t_s;
  }
}

double AnalyticEngine::joules_at_now() const {
  const double idle = gpu_->IdleWatts();
  if (phase_ == Phase::kIdle) return joules_total_ + idle * std::max(0.0, now_s_ - booked_until_s_);
  return joules_total_ + idle * std::max(0.0, phase_start_s_ - booked_until_s_) +
         phase_watts_ * std::max(0.0, now_s_ - phase_start_s_);
}

core::EndpointLoad AnalyticEngine::Load() const {
  core::EndpointLoad l;
  l.running = static_cast<int>(heap_.size() + prefilling_.size());
  l.waiting = static_cast<int>(waiting_.size());
  std::int64_t steps = steps_done_;
  if (phase_ == Phase::kDecode && run_s0_ > 0) {
    steps += std::min<std::int64_t>(
        run_steps_, static_cast<std::int64_t>((now_s_ - phase_start_s_) / run_s0_));
  }
  l.kv_tokens_used = KvUsed(steps);
  l.mean_context_tokens =
      l.running > 0 ? static_cast<double>(l.kv_tokens_used) / l.running : 0.0;
  return l;
}

}  // namespace powerplane::sim
