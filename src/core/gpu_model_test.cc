#include "core/gpu_model.h"

#include <gtest/gtest.h>

#include "testing/gpu_profiles.h"

namespace powerplane::core {
namespace {

TEST(GpuModelTest, ReproducesMeasuredJoulesPerTokenAtReferenceContext) {
  GpuModel m(testing::H200Llama8BProfile());
  EXPECT_NEAR(m.JoulesPerOutputToken(1, 1024), 2.21, 0.02);
  EXPECT_NEAR(m.JoulesPerOutputToken(8, 1024), 0.312, 0.005);
  EXPECT_NEAR(m.JoulesPerOutputToken(64, 1024), 0.0774, 0.001);
  EXPECT_NEAR(m.JoulesPerOutputToken(256, 1024), 0.0470, 0.001);
}

TEST(GpuModelTest, InterpolatesBetweenPointsMonotonically) {
  GpuModel m(testing::H200Llama8BProfile());
  for (int b = 2; b <= 512; ++b) {
    EXPECT_GE(m.StepSeconds(b, 1024), m.StepSeconds(b - 1, 1024)) << b;
    EXPECT_LE(m.JoulesPerOutputToken(b, 1024), m.JoulesPerOutputToken(b - 1, 1024)) << b;
  }
}

TEST(GpuModelTest, LongerContextSlowsStepsAsMeasured) {
  GpuModel m(testing::H200Llama8BProfile());
  // Measured: batch 64 at context 4,096: 13.2 ms; batch 32 at 8,192: 12.9 ms; 16 at 4,096: 7.07.
  EXPECT_NEAR(m.StepSeconds(64, 4096), 0.0132, 0.0013);
  EXPECT_NEAR(m.StepSeconds(32, 8192), 0.0129, 0.0013);
  EXPECT_NEAR(m.StepSeconds(16, 4096), 0.00707, 0.0007);
  // Measured power at those points: 695, 685, 605 W.
  EXPECT_NEAR(m.DecodeWatts(64, 4096), 695, 35);
  EXPECT_NEAR(m.DecodeWatts(32, 8192), 685, 70);
  EXPECT_NEAR(m.DecodeWatts(16, 4096), 605, 60);
}

TEST(GpuModelTest, PrefillAndIdle) {
  GpuModel m(testing::H200Llama8BProfile());
  EXPECT_NEAR(m.JoulesPerPromptToken(), 0.0182, 0.0005);
  EXPECT_NEAR(m.PrefillSeconds(38300), 1.0, 1e-9);
  EXPECT_DOUBLE_EQ(m.DecodeWatts(0, 1024), 125.6);
  EXPECT_LE(m.DecodeWatts(1000, 100000), 700);
}

}  // namespace
}  // namespace powerplane::core
