#include "core/route_index.h"

#include <gtest/gtest.h>

#include <limits>
#include <vector>

#include "testing/gpu_profiles.h"

namespace powerplane::core {
namespace {

// Two sites, two models: endpoints 0-2 serve model 0 at site 0, 3 serves model 1 at site 0,
// 4-5 serve model 0 at site 1.
struct Fixture {
  std::vector<Endpoint> endpoints;
  std::vector<EndpointLoad> loads;
  Fixture() {
    auto gpu = testing::H200Llama8B();
    const std::uint32_t site[] = {0, 0, 0, 0, 1, 1};
    const std::uint32_t model[] = {0, 0, 0, 1, 0, 0};
    for (int i = 0; i < 6; ++i) {
      Endpoint e;
      e.id = "e" + std::to_string(i);
      e.site_index = site[i];
      e.model_index = model[i];
      e.gpu = gpu;
      e.max_batch = 64;
      e.hardware_usd_per_hour = 1.0 + i;
      endpoints.push_back(e);
      loads.push_back({});
    }
  }
};

int CountIn(const RouteIndex& index, const RouteIndex::Group& g, int bucket) {
  int n = 0;
  for (auto i = g.head[bucket]; i >= 0; i = index.next(static_cast<std::uint32_t>(i))) ++n;
  return n;
}

TEST(RouteIndexTest, GroupsBySiteAndModel) {
  Fixture f;
  const RouteIndex index(f.endpoints, f.loads);
  ASSERT_EQ(index.groups().size(), 3u);
  const auto& g0 = index.groups()[0];
  EXPECT_EQ(g0.site, 0u);
  EXPECT_EQ(g0.model, 0u);
  EXPECT_EQ(g0.size, 3);
  EXPECT_EQ(g0.least_hardware_usd_per_hour, 1.0);
  EXPECT_EQ(g0.count[0], 3);  // idle: a new request would join batch 1.
  EXPECT_EQ(CountIn(index, g0, 0), 3);
  EXPECT_EQ(index.groups()[2].size, 2);
  ASSERT_EQ(index.members(0).size(), 3u);
  EXPECT_EQ(index.members(0)[2], 2u);
  ASSERT_EQ(index.members(2).size(), 2u);
  EXPECT_EQ(index.members(2)[0], 4u);
  EXPECT_EQ(index.most_max_batch(), 64);
}

TEST(RouteIndexTest, UpdateRefilesByTheBatchANewRequestWouldJoin) {
  Fixture f;
  RouteIndex index(f.endpoints, f.loads);
  f.loads[1].running = 40;  // joins batch 41: bucket 2.
  index.Update(1, f.endpoints[1], f.loads[1]);
  const auto& g0 = index.groups()[0];
  EXPECT_EQ(g0.count[0], 2);
  EXPECT_EQ(g0.count[2], 1);
  EXPECT_EQ(CountIn(index, g0, 0), 2);
  EXPECT_EQ(g0.head[2], 1);
  f.loads[1].running = 64;  // full: capped at max_batch 64, bucket 4.
  f.loads[1].waiting = 30;
  index.Update(1, f.endpoints[1], f.loads[1]);
  EXPECT_EQ(g0.count[2], 0);
  EXPECT_EQ(g0.head[2], -1);
  EXPECT_EQ(g0.count[4], 1);
  // Unlinking from the middle of a list keeps the rest.
  for (std::uint32_t i : {0u, 2u}) {
    f.loads[i].running = 20;
    index.Update(i, f.endpoints[i], f.loads[i]);
  }
  EXPECT_EQ(CountIn(index, g0, 1), 2);
  f.loads[2].running = 0;
  index.Update(2, f.endpoints[2], f.loads[2]);
  EXPECT_EQ(CountIn(index, g0, 1), 1);
  EXPECT_EQ(g0.head[1], 0);
  EXPECT_EQ(CountIn(index, g0, 0), 1);
}

TEST(RouteIndexTest, TracksTheLeastKnownContextAsItRisesAndFalls) {
  Fixture f;
  RouteIndex index(f.endpoints, f.loads);
  const auto& g0 = index.groups()[0];
  EXPECT_EQ(g0.least_context_tokens, std::numeric_limits<double>::infinity());
  EXPECT_EQ(g0.unknown_context, 3);
  const double contexts[] = {900, 300, 2000};
  for (std::uint32_t i = 0; i < 3; ++i) {
    f.loads[i].mean_context_tokens = contexts[i];
    index.Update(i, f.endpoints[i], f.loads[i]);
  }
  EXPECT_EQ(g0.least_context_tokens, 300);
  EXPECT_EQ(g0.unknown_context, 0);
  f.loads[1].mean_context_tokens = 5000;  // the least rises: the next least takes over.
  index.Update(1, f.endpoints[1], f.loads[1]);
  EXPECT_EQ(g0.least_context_tokens, 900);
  f.loads[0].mean_context_tokens = 0;  // unknown again.
  index.Update(0, f.endpoints[0], f.loads[0]);
  EXPECT_EQ(g0.least_context_tokens, 2000);
  EXPECT_EQ(g0.unknown_context, 1);
}

}  // namespace
}  // namespace powerplane::core
