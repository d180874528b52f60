#include "core/fleet_usage.h"

#include <gtest/gtest.h>

#include <vector>

namespace powerplane::core {
namespace {

MemberUsage Row(std::string member, std::string domain, std::string tenant, double requests,
                double tokens = 0) {
  return {std::move(member), std::move(domain), std::move(tenant), {requests, tokens}};
}
MemberUsage Heartbeat(std::string member, std::string domain) {
  return {std::move(member), std::move(domain), "", {}};
}

TEST(FleetUsageTest, PublishesOnlyWhatChangedAndAlwaysAHeartbeat) {
  FleetUsage me("m1", "d1");
  me.Took("acme", 1, 40);
  me.Took("beta", 2, 0);
  auto first = me.ToPublish();
  ASSERT_EQ(first.size(), 3u);
  EXPECT_TRUE(first[0].tenant.empty());
  me.Took("acme", 0, -15);  // a reservation given back.
  auto second = me.ToPublish();
  ASSERT_EQ(second.size(), 2u);
  EXPECT_EQ(second[1].tenant, "acme");
  EXPECT_EQ(second[1].totals.requests, 1);
  EXPECT_EQ(second[1].totals.tokens, 25);
  EXPECT_EQ(me.ToPublish().size(), 1u);  // nothing new: the heartbeat alone.
}

TEST(FleetUsageTest, ChargesWhatOthersTookSinceTheLastLookNotBeforeTheFirst) {
  FleetUsage me("m1", "d1");
  // At the first look, m2 had taken 10 requests: before this member started, not its to charge.
  std::vector<MemberUsage> rows{Heartbeat("m2", "d2"), Row("m2", "d2", "acme", 10, 100)};
  EXPECT_TRUE(me.Absorb(rows).empty());
  rows = {Heartbeat("m2", "d2"), Row("m2", "d2", "acme", 13, 130)};
  auto charge = me.Absorb(rows);
  EXPECT_EQ(charge["acme"].requests, 3);
  EXPECT_EQ(charge["acme"].tokens, 30);
  // A row not read again (not updated) charges nothing; one that gave back refunds.
  rows = {Heartbeat("m2", "d2"), Row("m2", "d2", "acme", 13, 110)};
  charge = me.Absorb(rows);
  EXPECT_EQ(charge["acme"].requests, 0);
  EXPECT_EQ(charge["acme"].tokens, -20);
  // A member that appears later counts from zero: everything it took came after the first look.
  rows = {Heartbeat("m3", "d3"), Row("m3", "d3", "acme", 2)};
  EXPECT_EQ(me.Absorb(rows)["acme"].requests, 2);
}

TEST(FleetUsageTest, OwnRowsAndTheDomainsMatesAreNotCharged) {
  FleetUsage me("m1", "host-a");
  std::vector<MemberUsage> rows{Heartbeat("m1", "host-a"), Heartbeat("m2", "host-a")};
  me.Absorb(rows);
  rows = {Heartbeat("m1", "host-a"), Row("m1", "host-a", "acme", 5),
          Heartbeat("m2", "host-a"), Row("m2", "host-a", "acme", 7)};
  EXPECT_TRUE(me.Absorb(rows).empty());
}

TEST(FleetUsageTest, ADomainsLiveMembersShareWhatAnotherDomainTook) {
  // m1 and m2 share one table on host a: each charges half of what host b took, so the table is
  // charged once.
  FleetUsage m1("m1", "host-a"), m2("m2", "host-a");
  std::vector<MemberUsage> rows{Heartbeat("m1", "host-a"), Heartbeat("m2", "host-a"),
                                Heartbeat("b1", "host-b"), Row("b1", "host-b", "acme", 0)};
  m1.Absorb(rows);
  m2.Absorb(rows);
  rows.back() = Row("b1", "host-b", "acme", 8, 80);
  const auto c1 = m1.Absorb(rows), c2 = m2.Absorb(rows);
  EXPECT_EQ(c1.at("acme").requests + c2.at("acme").requests, 8);
  EXPECT_EQ(c1.at("acme").tokens, 40);
  // m2's heartbeat gone: m1 alone takes all of the next.
  rows = {Heartbeat("m1", "host-a"), Heartbeat("b1", "host-b"), Row("b1", "host-b", "acme", 10)};
  EXPECT_EQ(m1.Absorb(rows).at("acme").requests, 2);
}

TEST(FleetUsageTest, AMemberLongAbsentIsForgotten) {
  FleetUsage me("m1", "d1");
  std::vector<MemberUsage> rows{Heartbeat("m2", "d2"), Row("m2", "d2", "acme", 4)};
  me.Absorb(rows);
  for (int i = 0; i < FleetUsage::kForgetAfterLooks; ++i) me.Absorb({});
  rows = {Heartbeat("m2", "d2"), Row("m2", "d2", "acme", 5)};
  EXPECT_EQ(me.Absorb(rows).at("acme").requests, 1);  // still known: 4 -> 5.
  for (int i = 0; i <= FleetUsage::kForgetAfterLooks; ++i) me.Absorb({});
  EXPECT_EQ(me.Absorb(rows).at("acme").requests, 5);  // forgotten: counted from zero.
}

}  // namespace
}  // namespace powerplane::core
