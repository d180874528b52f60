#include "openadr/events.h"

#include <gtest/gtest.h>

#include <string>

namespace powerplane::openadr {
namespace {

constexpr std::int64_t kNow = 1'724'025'600;  // 2024-08-19T00:00:00Z
constexpr std::int64_t k18h = kNow + 18 * 3600;

ParseOptions Options() {
  ParseOptions o;
  o.now_s = kNow;
  o.default_ramp_s = 60;
  return o;
}

ParsedEvents MustParse(const std::string& json) {
  auto r = ParseEvents(json, Options());
  EXPECT_TRUE(r.has_value()) << r.error();
  return r.value_or(ParsedEvents{});
}

// An event with one capacity-limited interval; `targets` and `period` are JSON text.
std::string Event(const std::string& id, const std::string& targets, const std::string& period,
                  const std::string& intervals) {
  return R"({"id":")" + id + R"(","programID":"prog-1","objectType":"EVENT","targets":)" + targets +
         R"(,"intervalPeriod":)" + period + R"(,"intervals":)" + intervals + "}";
}

const std::string kOneLimit =
    R"([{"id":0,"payloads":[{"type":"IMPORT_CAPACITY_LIMIT","values":[5000]}]}])";
const std::string k18hOneHour = R"({"start":"2024-08-19T18:00:00Z","duration":"PT1H"})";

TEST(IsoDuration, ParsesTheForms) {
  EXPECT_EQ(ParseIsoDuration("PT1H").value(), 3600);
  EXPECT_EQ(ParseIsoDuration("PT30M").value(), 1800);
  EXPECT_EQ(ParseIsoDuration("P1D").value(), 86400);
  EXPECT_EQ(ParseIsoDuration("PT1H30M").value(), 5400);
  EXPECT_EQ(ParseIsoDuration("P1DT2H3M4S").value(), 86400 + 7200 + 180 + 4);
  EXPECT_EQ(ParseIsoDuration("P2W").value(), 14 * 86400);
  EXPECT_EQ(ParseIsoDuration("PT0S").value(), 0);
  EXPECT_EQ(ParseIsoDuration("PT0.5S").value(), 0);
  EXPECT_EQ(ParseIsoDuration("PT90.9S").value(), 90);
  EXPECT_EQ(ParseIsoDuration("-PT5M").value(), -300);
  EXPECT_EQ(ParseIsoDuration("P1Y").value(), 365 * 86400);
  EXPECT_EQ(ParseIsoDuration("P1M").value(), 30 * 86400);
  EXPECT_GE(ParseIsoDuration("P9999Y").value(), kInfiniteDurationS);
}

TEST(IsoDuration, ErrorsSayWhatIsWrong) {
  auto expect_error = [](std::string_view text, std::string_view words) {
    auto r = ParseIsoDuration(text);
    ASSERT_FALSE(r.has_value()) << text;
    EXPECT_NE(r.error().find(words), std::string::npos) << text << ": " << r.error();
  };
  expect_error("", "empty");
  expect_error("1H", "starts with 'P'");
  expect_error("P", "at least one component");
  expect_error("PT", "'T' with no");
  expect_error("P1H", "time needs 'T'");
  expect_error("PT1D", "time designators");
  expect_error("PT1M1H", "out of order");
  expect_error("PT1H1H", "out of order");
  expect_error("PT1", "no designator");
  expect_error("PT1.5H", "only seconds");
  expect_error("PT1.S", "decimal point");
  expect_error("PTH", "expected a number");
  expect_error("P99999999999999999999Y", "too large");
  expect_error("P10001Y", "too large");
  expect_error("pt1h", "starts with 'P'");
  expect_error("PT1H ", "unexpected");
  expect_error("PT1HT1M", "second 'T'");
}

TEST(IsoDuration, FormatsAndRoundTrips) {
  EXPECT_EQ(FormatIsoDuration(0), "PT0S");
  EXPECT_EQ(FormatIsoDuration(5400), "PT1H30M");
  EXPECT_EQ(FormatIsoDuration(90000), "P1DT1H");
  EXPECT_EQ(FormatIsoDuration(86400), "P1D");
  EXPECT_EQ(FormatIsoDuration(-61), "-PT1M1S");
  for (std::int64_t s : {0LL, 1LL, 59LL, 3600LL, 86399LL, 86400LL * 400 + 7}) {
    EXPECT_EQ(ParseIsoDuration(FormatIsoDuration(s)).value(), s);
  }
}

TEST(ParseEvents, MapsCapacityLimitTo31StringTarget) {
  auto p = MustParse("[" + Event("evt-1", R"(["west-tx-wind"])", k18hOneHour, kOneLimit) + "]");
  ASSERT_EQ(p.grid_events.size(), 1u);
  const core::GridEvent& g = p.grid_events[0];
  EXPECT_EQ(g.id, "evt-1/0");
  EXPECT_EQ(g.site, "west-tx-wind");
  EXPECT_DOUBLE_EQ(g.target_kw, 5000);
  EXPECT_EQ(g.start_s, k18h);
  EXPECT_EQ(g.duration_s, 3600);
  EXPECT_EQ(g.ramp_s, 60);
  EXPECT_EQ(g.source, "openadr");
  ASSERT_EQ(p.events.size(), 1u);
  EXPECT_EQ(p.events[0].id, "evt-1");
  EXPECT_EQ(p.events[0].program_id, "prog-1");
  EXPECT_EQ(p.events[0].first_grid_event, 0u);
  EXPECT_EQ(p.events[0].grid_event_count, 1u);
  EXPECT_EQ(p.bad_events, 0);
}

TEST(ParseEvents, Accepts30TargetObjects) {
  const std::string targets =
      R"([{"type":"RESOURCE_NAME","values":["granbury-tx","west-tx-wind"]},)"
      R"({"type":"GROUP","values":["group-1"]},{"type":"VEN_NAME","values":["granbury-tx","c"]}])";
  auto p = MustParse("[" + Event("evt-2", targets, k18hOneHour, kOneLimit) + "]");
  ASSERT_EQ(p.grid_events.size(), 3u);  // duplicates dropped, GROUP is not a site.
  EXPECT_EQ(p.grid_events[0].site, "granbury-tx");
  EXPECT_EQ(p.grid_events[0].id, "evt-2/0@granbury-tx");
  EXPECT_EQ(p.grid_events[1].site, "west-tx-wind");
  EXPECT_EQ(p.grid_events[2].site, "c");
  EXPECT_EQ(p.events[0].sites, (std::vector<std::string>{"granbury-tx", "west-tx-wind", "c"}));
}

TEST(ParseEvents, IntervalsFollowEachOtherAndOverride) {
  const std::string intervals = R"([
    {"id":0,"payloads":[{"type":"IMPORT_CAPACITY_LIMIT","values":[100]}]},
    {"id":5,"payloads":[{"type":"IMPORT_CAPACITY_LIMIT","values":[90]}]},
    {"id":2,"intervalPeriod":{"duration":"PT15M"},
     "payloads":[{"type":"IMPORT_CAPACITY_LIMIT","values":[80]}]},
    {"id":3,"payloads":[{"type":"PRICE","values":[0.3]}]},
    {"id":4,"intervalPeriod":{"start":"2024-08-20T00:00:00+02:00","duration":"P1D"},
     "payloads":[{"type":"IMPORT_CAPACITY_LIMIT","values":[70]}]},
    {"id":6,"payloads":[{"type":"IMPORT_CAPACITY_LIMIT","values":[60]}]}])";
  auto p = MustParse(
      "[" +
      Event("e", R"(["a"])", R"({"start":"2024-08-19T18:00:00Z","duration":"PT30M"})", intervals) +
      "]");
  ASSERT_EQ(p.grid_events.size(), 5u);
  const auto& g = p.grid_events;
  EXPECT_EQ(g[0].id, "e/0");
  EXPECT_EQ(g[0].start_s, k18h);
  EXPECT_EQ(g[0].duration_s, 1800);
  EXPECT_EQ(g[1].id, "e/5");  // ids are labels, the order is the array's.
  EXPECT_EQ(g[1].start_s, k18h + 1800);
  EXPECT_EQ(g[2].start_s, k18h + 3600);
  EXPECT_EQ(g[2].duration_s, 900);
  // Interval 3 (a PRICE) still takes its 30 minutes: interval 4 has its own start anyway.
  EXPECT_EQ(g[3].start_s, kNow + 22 * 3600);  // 00:00+02:00 = 22:00Z the day before.
  EXPECT_EQ(g[3].duration_s, 86400);
  EXPECT_EQ(g[4].id, "e/6");
  EXPECT_EQ(g[4].start_s, kNow + 22 * 3600 + 86400);  // follows interval 4.
  EXPECT_EQ(g[4].duration_s, 1800);                   // the event's default.
}

TEST(ParseEvents, NowInfinityUnitsAndRamp) {
  const std::string event =
      R"({"id":"e","programID":"p","targets":["a"],)"
      R"("payloadDescriptors":[{"objectType":"EVENT_PAYLOAD_DESCRIPTOR",)"
      R"("payloadType":"IMPORT_CAPACITY_LIMIT","units":"MW"}],)"
      R"("intervalPeriod":{"start":"0001-01-01","duration":"P9999Y","randomizeStart":"PT5M"},)"
      R"("intervals":[{"id":0,"payloads":[{"type":"IMPORT_CAPACITY_LIMIT","values":[2.5]}]},)"
      R"({"id":1,"intervalPeriod":{"start":"2024-08-19T01:00:00Z","duration":"PT30S"},)"
      R"("payloads":[{"type":"IMPORT_CAPACITY_LIMIT","values":[3]}]}]})";
  auto p = MustParse("[" + event + "]");
  ASSERT_EQ(p.grid_events.size(), 2u);
  EXPECT_EQ(p.grid_events[0].start_s, kNow);
  EXPECT_EQ(p.grid_events[0].duration_s, 0);  // until cancelled.
  EXPECT_DOUBLE_EQ(p.grid_events[0].target_kw, 2500);
  EXPECT_EQ(p.grid_events[0].ramp_s, 60);
  EXPECT_EQ(p.grid_events[1].duration_s, 30);
  EXPECT_EQ(p.grid_events[1].ramp_s, 30);  // cut to the interval.
}

TEST(ParseEvents, MissingDurationIsUntilCancelled) {
  auto p = MustParse(
      "[" + Event("e", R"(["a"])", R"({"start":"2024-08-19T18:00:00Z"})", kOneLimit) + "]");
  ASSERT_EQ(p.grid_events.size(), 1u);
  EXPECT_EQ(p.grid_events[0].duration_s, 0);
}

TEST(ParseEvents, IgnoresEventsThatAreNotOurs) {
  const std::string price = R"([{"id":0,"payloads":[{"type":"PRICE","values":[0.2]}]}])";
  auto p = MustParse(
      "[" + Event("untargeted", "null", k18hOneHour, kOneLimit) + "," +
      Event("empty-targets", "[]", k18hOneHour, kOneLimit) + "," +
      Event("group-only", R"([{"type":"GROUP","values":["g"]}])", k18hOneHour, kOneLimit) + "," +
      Event("price", R"(["a"])", k18hOneHour, price) + "," +
      R"({"id":"no-intervals","programID":"p","targets":["a"]})" + "]");
  EXPECT_TRUE(p.grid_events.empty());
  EXPECT_EQ(p.ignored_events, 5);
  EXPECT_EQ(p.bad_events, 0);
}

TEST(ParseEvents, WholeDocumentErrors) {
  for (const char* doc : {"", "<html>", "[{\"id\":", "{\"events\":[]}", "5", "null"}) {
    auto r = ParseEvents(doc, Options());
    ASSERT_FALSE(r.has_value()) << doc;
    EXPECT_FALSE(r.error().empty());
  }
  EXPECT_NE(ParseEvents("{}", Options()).error().find("not a JSON array"), std::string::npos);
  EXPECT_NE(ParseEvents("[", Options()).error().find("not JSON"), std::string::npos);
  auto empty = ParseEvents("[]", Options());
  ASSERT_TRUE(empty.has_value());
  EXPECT_TRUE(empty->grid_events.empty());
}

TEST(ParseEvents, TakesTheValidEventsAndCountsTheBadOnes) {
  const std::string good = Event("good", R"(["a"])", k18hOneHour, kOneLimit);
  struct Case {
    std::string event;
    std::string words;  // the error names this.
  };
  const std::vector<Case> cases = {
      {"7", "not an object"},
      {R"({"programID":"p"})", "id is missing"},
      {R"({"id":5,"programID":"p"})", "id is not a string"},
      {R"({"id":""})", "1 to 128"},
      {R"({"id":"x"})", "programID is missing"},
      {Event("t1", R"("a")", k18hOneHour, kOneLimit), "targets is not an array"},
      {Event("t2", R"([5])", k18hOneHour, kOneLimit), "targets[0] is neither"},
      {Event("t3", R"([{"type":"RESOURCE_NAME","values":[1]}])", k18hOneHour, kOneLimit),
       "targets[0].values[0] is not a string"},
      {Event("t4", R"([{"values":["a"]}])", k18hOneHour, kOneLimit), "targets[0].type"},
      {Event("p1", R"(["a"])", R"("PT1H")", kOneLimit), "intervalPeriod is not an object"},
      {Event("p2", R"(["a"])", R"({"start":"yesterday","duration":"PT1H"})", kOneLimit),
       "intervalPeriod.start"},
      {Event("p3", R"(["a"])", R"({"start":"2024-08-19T18:00:00Z","duration":"1H"})", kOneLimit),
       "intervalPeriod.duration: a duration starts with 'P'"},
      {Event("p4", R"(["a"])", R"({"start":"2024-08-19T18:00:00Z","duration":"-PT1H"})", kOneLimit),
       "negative"},
      {Event("p5", R"(["a"])", R"({"duration":"PT1H"})", kOneLimit), "has no start"},
      {Event("i1", R"(["a"])", k18hOneHour, R"({"id":0})"), "intervals is not an array"},
      {Event("i2", R"(["a"])", k18hOneHour, R"([{"id":"0","payloads":[]}])"),
       "intervals[0].id is not an integer"},
      {Event("i3", R"(["a"])", k18hOneHour, R"([{"id":0}])"), "payloads is missing"},
      {Event("i4", R"(["a"])", k18hOneHour,
             R"([{"id":0,"payloads":[{"type":"IMPORT_CAPACITY_LIMIT","values":["5"]}]}])"),
       "values[0] is not a number"},
      {Event("i5", R"(["a"])", k18hOneHour,
             R"([{"id":0,"payloads":[{"type":"IMPORT_CAPACITY_LIMIT","values":[-1]}]}])"),
       "non-negative"},
      {Event("i6", R"(["a"])", k18hOneHour,
             R"([{"id":0,"payloads":[{"type":"IMPORT_CAPACITY_LIMIT","values":[]}]}])"),
       "non-empty array"},
      {Event("i7", R"(["a"])", k18hOneHour,
             R"([{"id":0,"payloads":[{"type":"IMPORT_CAPACITY_LIMIT","values":[1]}]},)"
             R"({"id":0,"payloads":[{"type":"IMPORT_CAPACITY_LIMIT","values":[1]}]}])"),
       "repeated"},
      {Event("i8", R"(["a"])", k18hOneHour, R"([{"id":0,"payloads":[{"values":[1]}]}])"),
       "type is missing"},
      {R"({"id":"u","programID":"p","targets":["a"],"payloadDescriptors":[{"payloadType":)"
       R"("IMPORT_CAPACITY_LIMIT","units":"HP"}],"intervalPeriod":)" +
           k18hOneHour + R"(,"intervals":)" + kOneLimit + "}",
       "unsupported IMPORT_CAPACITY_LIMIT units"},
  };
  for (const Case& c : cases) {
    auto p = MustParse("[" + good + "," + c.event + "," + good + "]");
    EXPECT_EQ(p.grid_events.size(), 2u) << c.event;
    EXPECT_EQ(p.bad_events, 1) << c.event;
    ASSERT_EQ(p.errors.size(), 1u) << c.event;
    EXPECT_NE(p.errors[0].find(c.words), std::string::npos) << c.event << " -> " << p.errors[0];
    EXPECT_EQ(p.errors[0].rfind("event 1", 0), 0u) << p.errors[0];
  }
  // The ids of bad events that have one are reported.
  auto p = MustParse("[" + cases[5].event + "," + cases[0].event + "]");
  EXPECT_EQ(p.bad_event_ids, std::vector<std::string>{"t1"});
}

TEST(ParseEvents, KeepsOnlyTheFirstFewErrors) {
  std::string doc = "[";
  for (int i = 0; i < 100; ++i) doc += std::string(i ? "," : "") + "7";
  auto p = MustParse(doc + "]");
  EXPECT_EQ(p.bad_events, 100);
  EXPECT_EQ(p.errors.size(), 8u);
}

}  // namespace
}  // namespace powerplane::openadr
