#include "core/fleet_usage.h"

#include <gtest/gtest.h>

#include <vector>

namespace powerplane::core {
namespace {

// This member started at t=100 (its clock); rows are written at t=1000 (the store's).
constexpr std::int64_t kStarted = 100, kNow = 1000;
// How old a heartbeat a live peer may have: the gateway's look-back (gateway/tenancy.cc).
constexpr std::int64_t kLiveMs = 10'000;

MemberUsage Row(std::string member, std::string domain, std::string tenant, double requests,
                double tokens = 0, std::int64_t started = 0, std::int64_t updated = kNow) {
  return {std::move(member), std::move(domain), std::move(tenant), {requests, tokens}, started,
          updated};
}
MemberUsage Heartbeat(std::string member, std::string domain, std::int64_t started = 0,
                      std::int64_t updated = kNow) {
  return Row(std::move(member), std::move(domain), "", 0, 0, started, updated);
}

TEST(FleetUsageTest, PublishesWhatChangedUntilTheStoreHasItAndAlwaysAHeartbeat) {
  FleetUsage me("m1", "d1", kStarted);
  me.Took("acme", 1, 40);
  me.Took("beta", 2, 0);
  auto first = me.ToPublish();
  ASSERT_EQ(first.size(), 3u);
  EXPECT_TRUE(first[0].tenant.empty());
  EXPECT_EQ(first[0].started_ms, kStarted);
  EXPECT_EQ(me.ToPublish().size(), 3u);  // not written yet: offered again.
  me.Published(first);
  me.Took("acme", 0, -15);  // a reservation given back.
  auto second = me.ToPublish();
  ASSERT_EQ(second.size(), 2u);
  EXPECT_EQ(second[1].tenant, "acme");
  EXPECT_EQ(second[1].totals.requests, 1);
  EXPECT_EQ(second[1].totals.tokens, 25);
  me.Published(second);
  EXPECT_EQ(me.ToPublish().size(), 1u);  // nothing new: the heartbeat alone.
  me.PublishAllAgain();                  // after a failed write.
  EXPECT_EQ(me.ToPublish().size(), 3u);
}

TEST(FleetUsageTest, ChargesWhatOthersTookSinceTheLastLookNotBeforeTheFirst) {
  FleetUsage me("m1", "d1", kStarted);
  // At the first look, m2 had taken 10 requests: before this member looked, not its to charge.
  std::vector<MemberUsage> rows{Heartbeat("m2", "d2"), Row("m2", "d2", "acme", 10, 100)};
  EXPECT_EQ(me.peers(kLiveMs), 0u);
  EXPECT_TRUE(me.Absorb(rows).empty());
  EXPECT_EQ(me.peers(kLiveMs), 1u);  // m2, known from now on.
  rows = {Heartbeat("m2", "d2"), Row("m2", "d2", "acme", 13, 130)};
  auto charge = me.Absorb(rows);
  EXPECT_EQ(charge["acme"].requests, 3);
  EXPECT_EQ(charge["acme"].tokens, 30);
  // The same totals read again charge nothing; tokens given back are refunded.
  rows = {Heartbeat("m2", "d2"), Row("m2", "d2", "acme", 13, 110)};
  charge = me.Absorb(rows);
  EXPECT_EQ(charge["acme"].requests, 0);
  EXPECT_EQ(charge["acme"].tokens, -20);
  // A tenant m2 began to serve since the first look counts from zero.
  rows = {Heartbeat("m2", "d2"), Row("m2", "d2", "beta", 2)};
  EXPECT_EQ(me.Absorb(rows)["beta"].requests, 2);
}

TEST(FleetUsageTest, AMemberFirstSeenLaterIsAStartingPoint) {
  FleetUsage me("m1", "d1", kStarted);
  me.Absorb({});
  // Whether m3 started since or is back from a partition, what it took before it was seen is
  // not charged (were it charged, a gateway back after a while would bring everything at once).
  std::vector<MemberUsage> rows{Heartbeat("m3", "d3", kStarted + 5),
                                Row("m3", "d3", "acme", 500, 0, kStarted + 5)};
  EXPECT_TRUE(me.Absorb(rows).empty());
  rows.back().totals.requests = 504;
  EXPECT_EQ(me.Absorb(rows)["acme"].requests, 4);
}

TEST(FleetUsageTest, AMemberBackAfterAMinuteAwayStartsAfresh) {
  FleetUsage me("m1", "d1", kStarted);
  std::vector<MemberUsage> rows{Heartbeat("m2", "d2"), Row("m2", "d2", "acme", 4)};
  me.Absorb(rows);
  for (int i = 0; i <= FleetUsage::kFreshAfterLooks; ++i) me.Absorb({});
  rows.back().totals.requests = 400;  // what it took while cut off: not charged at once.
  EXPECT_TRUE(me.Absorb(rows).empty());
  rows.back().totals.requests = 401;
  EXPECT_EQ(me.Absorb(rows).at("acme").requests, 1);
}

TEST(FleetUsageTest, AfterAMinuteWithoutALookEveryoneStartsAfresh) {
  FleetUsage me("m1", "d1", kStarted);
  std::vector<MemberUsage> rows{Heartbeat("m2", "d2"), Row("m2", "d2", "acme", 4)};
  me.Absorb(rows);
  // This member's reads failed for over a minute (the store's clock moved on by 61 s).
  rows = {Heartbeat("m2", "d2", 0, kNow + 61'000),
          Row("m2", "d2", "acme", 90, 0, 0, kNow + 61'000)};
  EXPECT_TRUE(me.Absorb(rows).empty());
  rows.back().totals.requests = 93;
  EXPECT_EQ(me.Absorb(rows).at("acme").requests, 3);
}

TEST(FleetUsageTest, OwnRowsAndTheDomainsMatesAreNotCharged) {
  FleetUsage me("m1", "host-a", kStarted);
  std::vector<MemberUsage> rows{Heartbeat("m1", "host-a"), Heartbeat("m2", "host-a")};
  me.Absorb(rows);
  rows = {Heartbeat("m1", "host-a"), Row("m1", "host-a", "acme", 5),
          Heartbeat("m2", "host-a"), Row("m2", "host-a", "acme", 7)};
  EXPECT_TRUE(me.Absorb(rows).empty());
}

TEST(FleetUsageTest, ADomainsLiveMembersShareWhatAnotherDomainTook) {
  // m1 and m2 share one table on host a: each charges half of what host b took, so the table is
  // charged once.
  FleetUsage m1("m1", "host-a", kStarted), m2("m2", "host-a", kStarted);
  std::vector<MemberUsage> rows{Heartbeat("m1", "host-a"), Heartbeat("m2", "host-a"),
                                Heartbeat("b1", "host-b"), Row("b1", "host-b", "acme", 0)};
  m1.Absorb(rows);
  m2.Absorb(rows);
  rows.back() = Row("b1", "host-b", "acme", 8, 80);
  const auto c1 = m1.Absorb(rows), c2 = m2.Absorb(rows);
  EXPECT_EQ(c1.at("acme").requests + c2.at("acme").requests, 8);
  EXPECT_EQ(c1.at("acme").tokens, 40);
  // m2's heartbeat is older than kMateLiveMs (it stopped): m1 alone takes all of the next.
  rows = {Heartbeat("m1", "host-a"), Heartbeat("m2", "host-a", 0, kNow - 5000),
          Heartbeat("b1", "host-b"), Row("b1", "host-b", "acme", 10)};
  EXPECT_EQ(m1.Absorb(rows).at("acme").requests, 2);
}

// /metrics counted every member not yet forgotten, gateways stopped up to ten minutes before.
TEST(FleetUsageTest, PeersAreTheMembersOfOtherDomainsWithARecentHeartbeat) {
  FleetUsage me("m1", "d1", kStarted);
  // The first look reads every row: m3 stopped five minutes ago and its rows are still there;
  // m1b shares this member's buckets.
  constexpr std::int64_t kLongAgo = kNow - 300'000;
  std::vector<MemberUsage> rows{Heartbeat("m1", "d1"),
                                Heartbeat("m1b", "d1"),
                                Heartbeat("m2", "d2"),
                                Row("m2", "d2", "acme", 4),
                                Heartbeat("m3", "d3", 0, kLongAgo),
                                Row("m3", "d3", "acme", 9, 0, 0, kLongAgo)};
  me.Absorb(rows);
  EXPECT_EQ(me.peers(kLiveMs), 1u);  // m2.
  // m2 stops: it is live until its last heartbeat is kLiveMs older than the newest row read
  // (this member's own, each look), by the store's clock.
  std::int64_t now = kNow;
  for (; now <= kNow + kLiveMs; now += 1000) {
    me.Absorb(std::vector{Heartbeat("m1", "d1", 0, now)});
    EXPECT_EQ(me.peers(kLiveMs), 1u) << now;
  }
  me.Absorb(std::vector{Heartbeat("m1", "d1", 0, now)});
  EXPECT_EQ(me.peers(kLiveMs), 0u);
  // Back, with m4 new: both live.
  now += 1000;
  me.Absorb(std::vector{Heartbeat("m1", "d1", 0, now), Heartbeat("m2", "d2", 0, now),
                        Heartbeat("m4", "d4", 0, now - 2000)});
  EXPECT_EQ(me.peers(kLiveMs), 2u);
}

TEST(FleetUsageTest, AMemberLongAbsentIsForgotten) {
  FleetUsage me("m1", "d1", kStarted);
  std::vector<MemberUsage> rows{Heartbeat("m2", "d2"), Row("m2", "d2", "acme", 4)};
  me.Absorb(rows);
  for (int i = 0; i < FleetUsage::kFreshAfterLooks; ++i) me.Absorb({});
  rows = {Heartbeat("m2", "d2"), Row("m2", "d2", "acme", 5)};
  EXPECT_EQ(me.Absorb(rows).at("acme").requests, 1);  // away briefly: still counted, 4 -> 5.
  for (int i = 0; i <= FleetUsage::kForgetAfterLooks; ++i) me.Absorb({});
  // Forgotten; back: a starting point again, then counted on.
  EXPECT_TRUE(me.Absorb(rows).empty());
  rows.back().totals.requests = 7;
  EXPECT_EQ(me.Absorb(rows).at("acme").requests, 2);
}

}  // namespace
}  // namespace powerplane::core
