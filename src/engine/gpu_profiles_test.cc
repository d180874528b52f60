#include "engine/gpu_profiles.h"

#include <gtest/gtest.h>

namespace powerplane::engine {
namespace {

const std::filesystem::path kData = PP_SOURCE_DIR "/data";

TEST(GpuProfiles, H200FromTheMeasurement) {
  auto p = LoadGpuProfile("h200", kData);
  ASSERT_TRUE(p) << p.error();
  EXPECT_EQ(p->name, "h200-llama-3.1-8b");
  ASSERT_EQ(p->decode.size(), 6u);
  EXPECT_EQ(p->decode.front().batch, 1);
  EXPECT_NEAR(p->decode.front().step_s, 0.005234, 1e-6);
  EXPECT_NEAR(p->step_s_per_context_token, 3.0e-8, 0.2e-8);
  EXPECT_NEAR(p->prefill_tokens_per_s, 38300, 200);
  EXPECT_NEAR(p->prefill_watts, 698, 2);
  EXPECT_NEAR(p->idle_watts, 125.6, 0.1);
  EXPECT_EQ(p->max_watts, 700);
  EXPECT_NE(p->source.find("h200-llama-3.1-8b-shape-decode-prefill.json"), std::string::npos);
  core::GpuModel model(*p);
  EXPECT_NEAR(model.JoulesPerOutputToken(64, 1024), 0.077, 0.001);
  // The fitted slope reproduces the long-context points within ~15%.
  EXPECT_NEAR(model.StepSeconds(64, 4096), 0.013205, 0.15 * 0.013205);
  EXPECT_NEAR(model.StepSeconds(32, 8192), 0.012908, 0.15 * 0.012908);
}

TEST(GpuProfiles, Qwen32BOnH200) {
  auto p = LoadGpuProfile("h200-qwen2.5-32b", kData);
  ASSERT_TRUE(p) << p.error();
  EXPECT_EQ(p->decode.size(), 5u);
  EXPECT_NEAR(p->decode.front().step_s, 0.01832, 1e-4);
  EXPECT_GT(p->step_s_per_context_token, 3.0e-8);
  EXPECT_NEAR(p->prefill_tokens_per_s, 9200, 300);
  EXPECT_NEAR(p->idle_watts, 116.0, 0.1);
}

TEST(GpuProfiles, H100FromMlEnergy) {
  auto p = LoadGpuProfile("h100", kData);
  ASSERT_TRUE(p) << p.error();
  EXPECT_EQ(p->name, "h100-llama-3.1-8b");
  ASSERT_GE(p->decode.size(), 8u);
  EXPECT_NEAR(p->decode.front().batch, 7.98, 0.01);
  EXPECT_NEAR(p->decode.front().step_s, 0.007316, 1e-6);
  EXPECT_NEAR(p->decode.front().watts, 486.4, 0.1);
  for (std::size_t i = 1; i < p->decode.size(); ++i) {
    EXPECT_GT(p->decode[i].batch, p->decode[i - 1].batch);
  }
  auto h200 = LoadGpuProfile("h200", kData);
  ASSERT_TRUE(h200);
  EXPECT_NEAR(p->step_s_per_context_token, h200->step_s_per_context_token * 4.8 / 3.35, 1e-12);
  EXPECT_EQ(p->prefill_tokens_per_s, h200->prefill_tokens_per_s);
  EXPECT_EQ(p->idle_watts, 100);
  EXPECT_EQ(p->max_watts, 700);
  // The H100 (less bandwidth) spends more per token than the H200 at the same batch.
  EXPECT_GT(core::GpuModel(*p).JoulesPerOutputToken(64, 1024),
            core::GpuModel(*h200).JoulesPerOutputToken(64, 1024));
}

TEST(GpuProfiles, ErrorsNameTheFileOrTheKnownGpus) {
  auto unknown = LoadGpuProfile("a100", kData);
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().find("h100, h200, h200-qwen2.5-32b"), std::string::npos);
  auto missing = LoadGpuProfile("h200", "/nonexistent");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().find("/nonexistent/energy/h200-llama-3.1-8b"), std::string::npos);
  auto bad = ParseH200Measurement(R"({"decode": [{"batch": 1}]})", "x", "file.json");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().rfind("file.json: ", 0), 0u) << bad.error();
  EXPECT_FALSE(ParseH200Measurement("not json", "x", "file.json"));
}

}  // namespace
}  // namespace powerplane::engine
