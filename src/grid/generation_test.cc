#include "grid/generation.h"

#include <gtest/gtest.h>

namespace powerplane::grid {
namespace {

TEST(GenerationTest, ReadsTheMerraWindProfile) {
  auto p = LoadCapacityFactorCsv(PP_SOURCE_DIR "/data/generation/ercot-wind-cf-hourly-2018-merra2.csv");
  ASSERT_TRUE(p) << p.error().ToString();
  EXPECT_EQ(p->hours(), 8760u);
  EXPECT_NEAR(p->Mean(), 0.44, 0.01);  // data/README.md
  auto t = ParseUtcTimestamp("2024-01-01T00:30:00Z");
  ASSERT_TRUE(t);
  EXPECT_NEAR(p->At(*t), 0.208291838, 1e-9);  // the first row
}

TEST(GenerationTest, ErrorsNameTheLine) {
  auto p = ParseCapacityFactorCsv("BEGIN_DATA\nyear,month,day,hour,cf\n2018,1,1,1,0.5\n2018,1,1,2,x\n",
                                  "w.csv");
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().line, 4);
  EXPECT_FALSE(LoadCapacityFactorCsv("/nonexistent.csv"));
  EXPECT_FALSE(ParseCapacityFactorCsv("BEGIN_DATA\n2018,1,1,1,1.7\n", "w.csv"));
}

}  // namespace
}  // namespace powerplane::grid
