#include "gateway/admin_parse.h"

#include <gtest/gtest.h>

namespace powerplane::gateway {
namespace {

constexpr std::int64_t kNow = 1'790'000'000;

std::expected<core::GridEvent, std::string> Event(std::string_view body) {
  return GridEventFromJson(body, [](std::string_view site) { return site == "west-texas"; }, kNow);
}

// Every query parameter must be one the path takes; one that is not is named with the ones
// it takes.
TEST(AdminParseTest, NamesAnUnknownQueryParameter) {
  static constexpr std::string_view kKnown[] = {"from", "tenant"};
  EXPECT_FALSE(UnknownQueryParam("/admin/ledger", kKnown));
  EXPECT_FALSE(UnknownQueryParam("/admin/ledger?", kKnown));
  EXPECT_FALSE(UnknownQueryParam("/admin/ledger?tenant=a&from=1&&tenant", kKnown));
  const auto unknown = UnknownQueryParam("/admin/ledger?tenant=a&tennant=b", kKnown);
  ASSERT_TRUE(unknown);
  EXPECT_EQ(*unknown, "unknown query parameter 'tennant' (it takes from, tenant)");
  EXPECT_TRUE(UnknownQueryParam("/admin/ledger?from", std::span<const std::string_view>()));
}

// A tenant with every field set.
const store::TenantRecord kAcme{.id = "acme",
                                .jurisdictions = {"US", "EU"},
                                .priority_class = "batch",
                                .latency_target_ms = 1500,
                                .rpm = 60,
                                .tpm = 1000,
                                .budget_usd = 2.5,
                                .budget_period = "month"};

TEST(AdminParseTest, ReadsATenant) {
  const auto t = TenantFromJson(
      R"({"id":"acme","jurisdictions":["US","EU"],"class":"interactive","latency_target_ms":2000,)"
      R"("rpm":600,"tpm":100000.0,"budget_usd":50.5,"budget_period":"day"})");
  ASSERT_TRUE(t) << t.error();
  EXPECT_EQ(t->id, "acme");
  EXPECT_EQ(t->jurisdictions, (std::vector<std::string>{"US", "EU"}));
  EXPECT_EQ(t->priority_class, "interactive");
  EXPECT_EQ(t->latency_target_ms, 2000);
  EXPECT_EQ(t->rpm, 600);
  EXPECT_EQ(t->tpm, 100000);  // a whole number written as a float is taken.
  EXPECT_DOUBLE_EQ(t->budget_usd, 50.5);
  EXPECT_EQ(t->budget_period, "day");
}

// A field the API does not know is refused by name, not dropped (a misspelt limit would leave the
// tenant unlimited); what the API shows of a tenant reads back as the same tenant.
TEST(AdminParseTest, RefusesAnUnknownTenantField) {
  const auto t = TenantFromJson(R"({"id":"zz","rpmm":5})");
  ASSERT_FALSE(t);
  EXPECT_NE(t.error().find("'rpmm'"), std::string::npos) << t.error();
  EXPECT_FALSE(TenantFromJson(R"({"id":"zz","rpm":5,"extra":null})"));
  const auto shown = TenantFromJson(TenantToJson(kAcme));
  ASSERT_TRUE(shown) << shown.error();
  EXPECT_EQ(*shown, kAcme);
}

// A key given twice is refused by name, at any depth, rather than read as its last value.
TEST(AdminParseTest, RefusesAKeyGivenTwice) {
  auto t = TenantFromJson(R"({"id":"a","rpm":5,"id":"b"})");
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error(), "'id' is given twice");
  EXPECT_TRUE(TenantFromJson(R"({"id":"a","rpm":5})"));
  const auto e = HashpriceFromJson(R"({"usd_per_ph_day":1,"usd_per_ph_day":2})");
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().find("twice"), std::string::npos);
}

// A body read over a stored tenant changes only the fields it names; a list it names replaces
// the stored one whole.
TEST(AdminParseTest, ATenantBodyOverAStoredOneChangesOnlyWhatItNames) {
  const store::TenantRecord& stored = kAcme;
  auto t = TenantFromJson(R"({"id":"acme","rpm":90})", &stored);
  ASSERT_TRUE(t) << t.error();
  store::TenantRecord want = stored;
  want.rpm = 90;
  EXPECT_EQ(*t, want);
  t = TenantFromJson(R"({"id":"acme","jurisdictions":["EU"],"budget_usd":0})", &stored);
  ASSERT_TRUE(t) << t.error();
  EXPECT_EQ(t->jurisdictions, std::vector<std::string>{"EU"});
  EXPECT_EQ(t->budget_usd, 0.0);
  EXPECT_EQ(t->rpm, 60);
  EXPECT_EQ(t->budget_period, "month");
  // Without a stored tenant, what the body leaves out is the default.
  t = TenantFromJson(R"({"id":"acme","rpm":90})");
  ASSERT_TRUE(t) << t.error();
  EXPECT_TRUE(t->jurisdictions.empty());
  EXPECT_EQ(t->budget_period, "none");
}

// Numbers that do not fit what they become are refused by name, before any conversion (nlohmann's
// get<int64_t> of 1e300 is a float-to-integer conversion out of range: undefined behaviour).
TEST(AdminParseTest, RefusesATenantsNumbersThatDoNotFit) {
  const std::pair<std::string_view, std::string_view> cases[] = {
      {R"({"id":"a","rpm":1e300})", "rpm"},
      {R"({"id":"a","tpm":18446744073709551615})", "tpm"},
      {R"({"id":"a","rpm":-1})", "rpm"},
      {R"({"id":"a","rpm":1.5})", "rpm"},
      {R"({"id":"a","latency_target_ms":"fast"})", "latency_target_ms"},
      {R"({"id":"a","latency_target_ms":86400001})", "latency_target_ms"},
      {R"({"id":"a","budget_usd":1e400})", "1e400"},
      {R"({"id":"a","jurisdictions":["US",3]})", "jurisdictions"},
      {R"({"id":"a","class":7})", "class"},
      {R"({"id":"a","class":"gold"})", "class"},
      {R"({"id":7})", "id"},
      {R"([1])", "object"},
      {R"({"id":"a",)", "not JSON"},
  };
  for (const auto& [body, names] : cases) {
    const auto t = TenantFromJson(body);
    ASSERT_FALSE(t) << body;
    EXPECT_NE(t.error().find(names), std::string::npos) << body << ": " << t.error();
  }
}

TEST(AdminParseTest, ReadsAGridEvent) {
  const auto e = Event(
      R"({"site":"west-texas","target_kw":500,"start":"2026-11-27T20:00:00Z","duration_s":1800,)"
      R"("ramp_s":60,"id":"ercot-eea"})");
  ASSERT_TRUE(e) << e.error();
  EXPECT_EQ(e->site, "west-texas");
  EXPECT_DOUBLE_EQ(e->target_kw, 500);
  EXPECT_EQ(e->start_s, 1'795'809'600);
  EXPECT_EQ(e->duration_s, 1800);
  EXPECT_EQ(e->ramp_s, 60);
  EXPECT_EQ(e->id, "ercot-eea");
  EXPECT_EQ(e->source, "admin");
  const auto now = Event(R"({"site":"west-texas","target_kw":0})");
  ASSERT_TRUE(now) << now.error();
  EXPECT_EQ(now->start_s, kNow);
  EXPECT_EQ(now->duration_s, 3600);
  EXPECT_EQ(now->ramp_s, 10);
}

// Before: a start of 1e300 became the most negative time, a duration of 1e300 a negative one
// (which reads as "until cancelled"), and a duration of 2^63 - 1 overflowed start + duration.
TEST(AdminParseTest, RefusesAGridEventsTimesThatDoNotFit) {
  const std::pair<std::string_view, std::string_view> cases[] = {
      {R"({"site":"west-texas","target_kw":1,"start":1e300})", "start"},
      {R"({"site":"west-texas","target_kw":1,"start":-5})", "start"},
      {R"({"site":"west-texas","target_kw":1,"start":"1969-12-31T23:59:59Z"})", "start"},
      {R"({"site":"west-texas","target_kw":1,"duration_s":1e300})", "duration_s"},
      {R"({"site":"west-texas","target_kw":1,"duration_s":9223372036854775807})", "duration_s"},
      {R"({"site":"west-texas","target_kw":1,"ramp_s":-1})", "ramp_s"},
      {R"({"site":"west-texas","target_kw":1e400})", "1e400"},
      {R"({"site":"west-texas","target_kw":-1})", "target_kw"},
      {R"({"site":"west-texas"})", "target_kw"},
      {R"({"site":"east","target_kw":1})", "unknown site"},
      {R"({"target_kw":1})", "site"},
  };
  for (const auto& [body, names] : cases) {
    const auto e = Event(body);
    ASSERT_FALSE(e) << body;
    EXPECT_NE(e.error().find(names), std::string::npos) << body << ": " << e.error();
  }
}

TEST(AdminParseTest, ReadsTheHashpriceOnlyWhenFinite) {
  EXPECT_EQ(HashpriceFromJson(R"({"usd_per_ph_day":52.5})").value_or(-1), 52.5);
  for (const std::string_view body :
       {R"({"usd_per_ph_day":1e400})", R"({"usd_per_ph_day":-1})", R"({"usd_per_ph_day":"1"})",
        R"({})", "not json"}) {
    EXPECT_FALSE(HashpriceFromJson(body)) << body;
  }
}

TEST(AdminParseTest, ReadsASitePriceWithinItsBounds) {
  EXPECT_EQ(SitePriceFromJson(R"({"usd_per_mwh":-12.5})").value_or(0), -12.5);
  for (const std::string_view body : {R"({"usd_per_mwh":100001})", R"({"usd_per_mwh":1e400})",
                                      R"({"usd_per_mwh":null})", R"({"price":1})", "[]"}) {
    EXPECT_FALSE(SitePriceFromJson(body)) << body;
  }
}

TEST(AdminParseTest, ReadsTheQuery) {
  const std::string_view target =
      "/admin/usage?tenant=acme&from=2026-11-01T00:00:00%2B00:00&to=1790000000000&x";
  EXPECT_EQ(QueryParam(target, "tenant").value_or("?"), "acme");
  EXPECT_EQ(QueryParam(target, "x").value_or("?"), "");
  EXPECT_EQ(QueryParam("/admin/usage", "tenant").value_or("?"), "");
  EXPECT_EQ(TimeParam(target, "from", 0).value_or(-1), 1'793'491'200'000);
  EXPECT_EQ(TimeParam(target, "to", 0).value_or(-1), 1'790'000'000'000);
  EXPECT_EQ(TimeParam(target, "until", 42).value_or(-1), 42);
  EXPECT_FALSE(TimeParam("/admin/usage?from=yesterday", "from", 0));
  // Unix seconds are not misread as milliseconds in 1970; 0 (the beginning) is taken.
  const auto seconds = TimeParam("/admin/usage?from=1790000000", "from", 0);
  ASSERT_FALSE(seconds);
  EXPECT_NE(seconds.error().find("multiply by 1000"), std::string::npos) << seconds.error();
  EXPECT_EQ(TimeParam("/admin/usage?from=0", "from", 5).value_or(-1), 0);
  const auto short_stamp = TimeParam("/admin/usage?from=2026-11", "from", 0);
  ASSERT_FALSE(short_stamp);
  EXPECT_NE(short_stamp.error().find("ISO 8601"), std::string::npos) << short_stamp.error();
}

// Every value is decoded as an HTML form encodes it: any "%XX" (either case) and '+' as a space.
TEST(AdminParseTest, DecodesEveryQueryValueAsAFormDoes) {
  const std::string_view target =
      "/admin/usage?tenant=b%31&group_by=%73ite&format=C%53v&q=a+b%2Bc%25%3a&from=2026-11-01+00:00";
  EXPECT_EQ(QueryParam(target, "tenant").value_or("?"), "b1");
  EXPECT_EQ(QueryParam(target, "group_by").value_or("?"), "site");
  EXPECT_EQ(QueryParam(target, "format").value_or("?"), "CSv");
  EXPECT_EQ(QueryParam(target, "q").value_or("?"), "a b+c%:");
  EXPECT_EQ(TimeParam(target, "from", 0).value_or(-1), 1'793'491'200'000);
  // The '+' of an offset sent unescaped (as curl users type it) still means '+' there.
  EXPECT_EQ(TimeParam("/admin/usage?from=2026-11-01T01:00:00+01:00", "from", 0).value_or(-1),
            1'793'491'200'000);
}

// A '%' without two hex digits after it, or an escaped control character, is refused, naming the
// parameter; other parameters are still read.
TEST(AdminParseTest, RefusesAMalformedEscape) {
  for (const std::string_view target :
       {"/admin/usage?tenant=%zz", "/admin/usage?tenant=b%4", "/admin/usage?tenant=%",
        "/admin/usage?tenant=%%41", "/admin/usage?x=1&tenant=a%g1&y=2", "/admin/usage?tenant=a%00",
        "/admin/usage?tenant=%0A"}) {
    const auto v = QueryParam(target, "tenant");
    ASSERT_FALSE(v) << target;
    EXPECT_NE(v.error().find("tenant"), std::string::npos) << v.error();
  }
  EXPECT_EQ(QueryParam("/admin/usage?x=%zz&tenant=a", "tenant").value_or("?"), "a");
  EXPECT_FALSE(TimeParam("/admin/usage?from=2026%2", "from", 0));
}

}  // namespace
}  // namespace powerplane::gateway
