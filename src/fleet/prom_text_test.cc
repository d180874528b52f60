#include "fleet/prom_text.h"

#include <gtest/gtest.h>

namespace powerplane::fleet {
namespace {

TEST(PromTextTest, ReadsVllmLoad) {
  const char* text = R"(# HELP vllm:num_requests_running Number of requests running.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="llama"} 12
vllm:num_requests_waiting{model_name="llama"} 3
vllm:num_requests_waiting_total{model_name="llama"} 99
vllm:kv_cache_usage_perc{model_name="llama"} 0.25
powerplane_gpu_power_watts 512.5
)";
  auto s = ReadEngineLoad(text);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->running, 12);
  EXPECT_EQ(s->waiting, 3);
  EXPECT_DOUBLE_EQ(s->kv_usage_fraction, 0.25);
  EXPECT_DOUBLE_EQ(s->watts, 512.5);
  EXPECT_DOUBLE_EQ(s->joules_total, -1);
}

TEST(PromTextTest, FallsBackToOtherEngines) {
  auto s = ReadEngineLoad("sglang:num_running_reqs 5\nsglang:num_queue_reqs 2\n");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->running, 5);
  EXPECT_EQ(s->waiting, 2);
  EXPECT_FALSE(ReadEngineLoad("something_else 1\n"));
}

TEST(PromTextTest, SurvivesGarbage) {
  EXPECT_FALSE(FindSample("x{a=\"}\" 1", "x"));
  EXPECT_FALSE(FindSample("x NaN", "x"));
  EXPECT_FALSE(FindSample("x", "x"));
  EXPECT_EQ(FindSample("x{a=\"\\\"}\"} 7", "x"), 7);
  EXPECT_EQ(FindSample("xy 1\nx 2", "x"), 2);
}

}  // namespace
}  // namespace powerplane::fleet
