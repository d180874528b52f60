#include "engine/batch_scheduler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "testing/gpu_profiles.h"

namespace powerplane::engine {
namespace {

struct Recorder : SchedulerSink {
  void OnToken(SequenceId id, int index, double time_s) override {
    auto& seq = seqs[id];
    EXPECT_EQ(index, seq.tokens) << "tokens arrive in order";
    if (index == 0) seq.first_s = time_s;
    ++seq.tokens;
    seq.last_s = time_s;
    ++total_tokens;
  }
  void OnFinished(SequenceId id, double time_s) override {
    seqs[id].finished_s = time_s;
    ++finished;
  }
  struct Seq {
    int tokens = 0;
    double first_s = -1;
    double last_s = -1;
    double finished_s = -1;
  };
  std::map<SequenceId, Seq> seqs;
  long total_tokens = 0;
  int finished = 0;
};

class SchedulerTest : public ::testing::Test {
 protected:
  std::shared_ptr<const core::GpuModel> gpu_ = testing::H200Llama8B();
  const core::GpuProfile& profile() const { return gpu_->profile(); }
  Recorder sink_;
};

TEST_F(SchedulerTest, OneRequestFollowsTheBatchOneCurve) {
  BatchScheduler s(gpu_, {});
  ASSERT_TRUE(s.AddRequest(1, 100, 100));
  EXPECT_EQ(s.NextEventTime(), 0.0);  // queued: the next Advance starts its prefill.
  s.Advance(10.0, sink_);
  const auto& seq = sink_.seqs[1];
  const double prefill_s = 100 / profile().prefill_tokens_per_s;
  EXPECT_NEAR(seq.first_s, prefill_s, 1e-9);
  EXPECT_EQ(seq.tokens, 100);
  // 99 decode steps after the first token, at batch 1 and a context of 100-200 tokens (a little
  // under the 5.234 ms measured at context 1024).
  EXPECT_GT(seq.finished_s, prefill_s + 99 * 0.00515);
  EXPECT_LT(seq.finished_s, prefill_s + 99 * 0.005234);
  EXPECT_EQ(seq.finished_s, seq.last_s);
  EXPECT_EQ(s.running(), 0);
  EXPECT_EQ(s.kv_tokens_used(), 0);
  EXPECT_TRUE(std::isinf(s.NextEventTime()));
  EXPECT_DOUBLE_EQ(s.virtual_now(), 10.0);
  EXPECT_DOUBLE_EQ(s.watts_now(), profile().idle_watts);
}

TEST_F(SchedulerTest, EnergyIsPowerTimesTime) {
  BatchScheduler s(gpu_, {});
  ASSERT_TRUE(s.AddRequest(1, 3830, 50));
  s.Advance(2.0, sink_);
  const auto& seq = sink_.seqs[1];
  const double prefill_s = seq.first_s;
  EXPECT_NEAR(prefill_s, 0.1, 1e-6);  // 3,830 tokens at 38,300 tokens/s.
  const double decode_s = seq.finished_s - prefill_s;
  const double expected = profile().prefill_watts * prefill_s + 421.9 * decode_s +
                          profile().idle_watts * (2.0 - seq.finished_s);
  EXPECT_NEAR(s.joules_total(), expected, 0.01 * expected);
  // Idle from the start: energy only grows by idle power.
  BatchScheduler idle(gpu_, {});
  idle.Advance(3.0, sink_);
  EXPECT_NEAR(idle.joules_total(), 3.0 * profile().idle_watts, 1e-9);
}

TEST_F(SchedulerTest, AdmitsUpToMaxBatch) {
  BatchScheduler s(gpu_, {.max_batch = 4, .kv_token_capacity = 1'000'000});
  for (SequenceId id = 1; id <= 6; ++id) ASSERT_TRUE(s.AddRequest(id, 10, 1000));
  s.Advance(0.05, sink_);
  EXPECT_EQ(s.running(), 4);
  EXPECT_EQ(s.waiting(), 2);
  EXPECT_EQ(sink_.seqs.count(5), 0u);
  EXPECT_NEAR(s.watts_now(), gpu_->DecodeWatts(4, 20), 1e-9);
  s.Advance(100.0, sink_);
  EXPECT_EQ(sink_.finished, 6);
  // The last two start only when the first four leave.
  EXPECT_GE(sink_.seqs[5].first_s, sink_.seqs[1].finished_s);
}

TEST_F(SchedulerTest, KvCapacityHoldsTheRestInWaiting) {
  BatchScheduler s(gpu_, {.max_batch = 256, .kv_token_capacity = 900});
  // Admission counts running prompts (+ tokens so far) and the newcomer's prompt + output.
  for (SequenceId id = 1; id <= 3; ++id) ASSERT_TRUE(s.AddRequest(id, 300, 100));
  EXPECT_FALSE(s.AddRequest(9, 800, 101));  // could never fit.
  s.Advance(0.03, sink_);  // past the prefill of 600 tokens (16 ms).
  EXPECT_EQ(s.running(), 2);
  EXPECT_EQ(s.waiting(), 1);
  EXPECT_GT(s.kv_tokens_used(), 600);
  EXPECT_GT(s.kv_usage_fraction(), 0.6);
  EXPECT_LE(s.kv_usage_fraction(), 1.0);
  s.Advance(10.0, sink_);
  EXPECT_EQ(sink_.finished, 3);
  EXPECT_EQ(s.kv_tokens_used(), 0);
}

TEST_F(SchedulerTest, TtftIncludesPrefillOfTheAdmittedGroup) {
  BatchScheduler s(gpu_, {});
  ASSERT_TRUE(s.AddRequest(1, 1000, 10));
  ASSERT_TRUE(s.AddRequest(2, 2830, 10));
  s.Advance(1.0, sink_);
  // Admitted together, prefilled together: both first tokens after 3,830 prompt tokens.
  EXPECT_NEAR(sink_.seqs[1].first_s, 0.1, 1e-6);
  EXPECT_NEAR(sink_.seqs[2].first_s, 0.1, 1e-6);
}

TEST_F(SchedulerTest, LaterArrivalsPrefillBetweenSteps) {
  BatchScheduler s(gpu_, {});
  ASSERT_TRUE(s.AddRequest(1, 10, 1000));
  s.Advance(0.5, sink_);
  const int before = sink_.seqs[1].tokens;
  ASSERT_TRUE(s.AddRequest(2, 3830, 10));
  s.Advance(0.7, sink_);
  // Request 2 waits for the step under way, then 0.1 s of prefill during which 1 makes no progress.
  EXPECT_GT(sink_.seqs[2].first_s, 0.6);
  EXPECT_LT(sink_.seqs[2].first_s, 0.6 + 0.006);
  EXPECT_LT(sink_.seqs[1].tokens - before, static_cast<int>(0.2 / 0.0052));
}

TEST_F(SchedulerTest, CancelFreesTheSlot) {
  BatchScheduler s(gpu_, {.max_batch = 1, .kv_token_capacity = 1'000'000});
  ASSERT_TRUE(s.AddRequest(1, 100, 10000));
  ASSERT_TRUE(s.AddRequest(2, 100, 5));
  s.Advance(0.1, sink_);
  EXPECT_EQ(s.running(), 1);
  EXPECT_EQ(s.waiting(), 1);
  const int tokens_at_cancel = sink_.seqs[1].tokens;
  EXPECT_TRUE(s.Cancel(1));
  EXPECT_FALSE(s.Cancel(1));
  EXPECT_EQ(s.kv_tokens_used(), 0);
  s.Advance(1.0, sink_);
  EXPECT_EQ(sink_.seqs[1].tokens, tokens_at_cancel);
  EXPECT_EQ(sink_.seqs[2].tokens, 5);
  EXPECT_LT(sink_.seqs[2].first_s, 0.11);
  // A waiting request can be cancelled too, and its id reused afterwards.
  ASSERT_TRUE(s.AddRequest(3, 10, 10));
  EXPECT_TRUE(s.Cancel(3));
  EXPECT_EQ(s.waiting(), 0);
  EXPECT_TRUE(s.AddRequest(3, 10, 10));
}

TEST_F(SchedulerTest, PowerCapStretchesStepsAndHoldsPower) {
  auto run = [&](double cap, double* watts_mid) {
    BatchScheduler s(gpu_, {});
    s.SetPowerCapWatts(cap);
    for (SequenceId id = 1; id <= 64; ++id) EXPECT_TRUE(s.AddRequest(id, 0, 200));
    Recorder local;
    s.Advance(0.5, local);
    *watts_mid = s.watts_now();
    s.Advance(100.0, local);
    return local.seqs[1].finished_s;
  };
  double free_w = 0;
  double capped_w = 0;
  const double free_s = run(0, &free_w);
  const double capped_s = run(500, &capped_w);
  EXPECT_GT(free_w, 600);
  EXPECT_DOUBLE_EQ(capped_w, 500);
  const double factor = BatchScheduler::CapThroughputFactor(free_w, 500);
  EXPECT_NEAR(factor, 1 - 0.28 * (1 - 500 / free_w), 1e-12);
  EXPECT_NEAR(capped_s / free_s, 1 / factor, 0.02);
  EXPECT_DOUBLE_EQ(BatchScheduler::CapThroughputFactor(700, 175), 1 - 0.28 * 0.75);
  EXPECT_DOUBLE_EQ(BatchScheduler::CapThroughputFactor(700, 0), 1.0);  // no cap.
  EXPECT_DOUBLE_EQ(BatchScheduler::CapThroughputFactor(400, 500), 1.0);
}

TEST_F(SchedulerTest, ManyStepsPerAdvanceAtFullBatch) {
  BatchScheduler s(gpu_, {});
  for (SequenceId id = 1; id <= 512; ++id) ASSERT_TRUE(s.AddRequest(id, 1000, 2000));
  s.Advance(1e6, sink_);
  EXPECT_EQ(sink_.finished, 512);
  EXPECT_EQ(sink_.total_tokens, 512L * 2000);
  // Two waves of 2,000 steps at batch 256 and a context of 1,000-3,000 tokens: roughly 17-30 ms.
  const double end = sink_.seqs[512].finished_s;
  EXPECT_GT(end, 2 * 2000 * 0.017);
  EXPECT_LT(end, 2 * 2000 * 0.035);
}

TEST_F(SchedulerTest, RejectsBadRequests) {
  BatchScheduler s(gpu_, {});
  EXPECT_FALSE(s.AddRequest(1, 10, 0));
  EXPECT_FALSE(s.AddRequest(1, -1, 10));
  EXPECT_TRUE(s.AddRequest(1, 10, 10));
  EXPECT_FALSE(s.AddRequest(1, 10, 10));  // duplicate id.
}

}  // namespace
}  // namespace powerplane::engine
