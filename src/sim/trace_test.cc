#include "sim/trace.h"

#include <gtest/gtest.h>

#include "sim/arrivals.h"

namespace powerplane::sim {
namespace {

TEST(AzureTrace, ParsesAndShiftsToFirstRequest) {
  auto t = ParseAzureTrace(
      "TIMESTAMP,ContextTokens,GeneratedTokens\n"
      "2023-11-16 18:15:46.5000000,374,44\r\n"
      "2023-11-16 18:15:48.7500000,396,109\n",
      "t.csv");
  ASSERT_TRUE(t) << t.error();
  ASSERT_EQ(t->requests.size(), 2u);
  EXPECT_DOUBLE_EQ(t->requests[1].offset_s, 2.25);
  EXPECT_EQ(t->requests[1].prompt_tokens, 396);
  EXPECT_EQ(t->requests[1].output_tokens, 109);
  EXPECT_DOUBLE_EQ(t->mean_output_tokens, (44 + 109) / 2.0);
}

TEST(AzureTrace, ErrorsNameFileAndLine) {
  auto t = ParseAzureTrace(
      "TIMESTAMP,ContextTokens,GeneratedTokens\n"
      "2023-11-16 18:15:46.5,374,44\n"
      "\n"
      "2023-11-16 18:15:47,x,44\n",
      "bad.csv");
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().rfind("bad.csv:4:", 0), 0u) << t.error();
  auto h = ParseAzureTrace("a,b\n", "h.csv");
  ASSERT_FALSE(h);
  EXPECT_EQ(h.error().rfind("h.csv:1:", 0), 0u) << h.error();
  auto z = ParseAzureTrace("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:47,1,0\n",
                           "z.csv");
  ASSERT_FALSE(z);
  EXPECT_NE(z.error().find("z.csv:2:"), std::string::npos);
}

TEST(AzureTrace, LoadsTheRealFiles) {
  auto conv = LoadAzureTrace(PP_SOURCE_DIR "/data/traces/azure-llm-2023-conv.csv");
  ASSERT_TRUE(conv) << conv.error();
  EXPECT_EQ(conv->requests.size(), 19366u);
  EXPECT_NEAR(conv->mean_prompt_tokens, 1154.7, 0.1);
  auto missing = LoadAzureTrace("/nonexistent.csv");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().find("/nonexistent.csv"), std::string::npos);
}

TEST(RateCurve, ParsesWrapsAndAverages) {
  auto c = ParseRateCurve("timestamp_s,total_rate_rps,active_clients\n100,10,1\n700,20,1\n",
                          "c.csv");
  ASSERT_TRUE(c) << c.error();
  EXPECT_DOUBLE_EQ(c->span_s, 1200);
  EXPECT_DOUBLE_EQ(c->RateAt(0), 10);
  EXPECT_DOUBLE_EQ(c->RateAt(650), 20);
  EXPECT_DOUBLE_EQ(c->RateAt(1250), 10);
  EXPECT_DOUBLE_EQ(c->MeanRate(0, 1200), 15);
  auto bad = ParseRateCurve("timestamp_s,total_rate_rps\n0,1\n0,2\n", "b.csv");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().rfind("b.csv:3:", 0), 0u);
}

TEST(Arrivals, ReplayLoopsAndScales) {
  Trace t;
  t.requests = {{0, 10, 2}, {1, 20, 3}, {2, 30, 4}};
  t.span_s = 2;
  ArrivalOptions o;
  o.duration_s = 4;
  o.rate_scale = 2;  // twice as fast: arrivals at 0, 0.5, 1, then the loop at 1.5, 2, 2.5, ...
  ArrivalStream s(t, nullptr, o);
  Arrival a;
  std::vector<double> times;
  while (s.Next(&a)) times.push_back(a.t_s);
  ASSERT_EQ(times.size(), 8u);
  EXPECT_DOUBLE_EQ(times[3], 1.5);
  EXPECT_DOUBLE_EQ(times[7], 3.5);
}

TEST(Arrivals, CurveFollowsTheRateAndIsSeeded) {
  Trace t;
  t.requests = {{0, 10, 2}, {1, 20, 3}};
  t.span_s = 1;
  RateCurve c;
  c.start_s = {0, 100};
  c.rate_rps = {50, 150};
  c.span_s = 200;
  ArrivalOptions o;
  o.duration_s = 200;
  o.seed = 7;
  ArrivalStream s1(t, &c, o), s2(t, &c, o);
  Arrival a, b;
  int first = 0, second = 0;
  while (s1.Next(&a)) {
    ASSERT_TRUE(s2.Next(&b));
    EXPECT_EQ(a.t_s, b.t_s);
    (a.t_s < 100 ? first : second)++;
  }
  EXPECT_NEAR(first, 5000, 300);
  EXPECT_NEAR(second, 15000, 500);
}

}  // namespace
}  // namespace powerplane::sim
