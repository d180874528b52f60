#include "grid/price_loaders.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>

namespace powerplane::grid {
namespace {

using std::chrono::hours;

UtcTime At(std::string_view iso) { return ParseUtcTimestamp(iso).value(); }

std::string DataFile(std::string_view name) {
  return std::string(PP_SOURCE_DIR) + "/data/prices/" + std::string(name);
}

constexpr std::string_view kErcotHeader = "delivery_date,hour_ending,X_DAM,X_RTM\n";

// ---- real files ----

TEST(RealFiles, ErcotHubNorthRealTime2024) {
  const auto t0 = std::chrono::steady_clock::now();
  auto s = LoadErcotCsv(DataFile("ercot-spp-hourly-2024.csv"), "HB_NORTH_RTM");
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  // 8,615 rows; the spring-forward placeholder row has no prices and is skipped.
  EXPECT_EQ(s->size(), 8614u);
  EXPECT_NEAR(s->Mean(), 26.14, 0.01);
  const auto [lo, hi] = std::minmax_element(
      s->points().begin(), s->points().end(),
      [](const PricePoint& a, const PricePoint& b) { return a.usd_per_mwh < b.usd_per_mwh; });
  EXPECT_NEAR(lo->usd_per_mwh, -31.78, 1e-9);
  EXPECT_NEAR(hi->usd_per_mwh, 3052.6475, 1e-9);
  // HE 1 of 2024-01-01 (CST) is 06:00Z; the last hour, HE 24 of 2024-12-31, starts 05:00Z next day.
  EXPECT_EQ(s->front(), At("2024-01-01T06:00:00Z"));
  EXPECT_EQ(s->back(), At("2025-01-01T05:00:00Z"));
  EXPECT_DOUBLE_EQ(s->UsdPerMwhAt(At("2024-08-19T05:00:00Z")), 17.5025);  // HE 1, CDT
  EXPECT_DOUBLE_EQ(s->UsdPerMwhAt(At("2024-01-15T06:59:59Z")), 115.075);  // HE 1, CST
  // Fall back: HE 2 is the CDT 01:00 hour (06:00Z); the file has no repeated row, so its price
  // holds through the CST repeat (07:00Z); HE 3 is 02:00 CST = 08:00Z.
  EXPECT_DOUBLE_EQ(s->UsdPerMwhAt(At("2024-11-03T05:00:00Z")), 20.2325);
  EXPECT_DOUBLE_EQ(s->UsdPerMwhAt(At("2024-11-03T06:00:00Z")), 21.0425);
  EXPECT_DOUBLE_EQ(s->UsdPerMwhAt(At("2024-11-03T07:00:00Z")), 21.0425);
  EXPECT_DOUBLE_EQ(s->UsdPerMwhAt(At("2024-11-03T08:00:00Z")), 18.49);
  // The file is missing a week after the spring switch: HE 1 of 2024-03-10 holds across it.
  EXPECT_DOUBLE_EQ(s->UsdPerMwhAt(At("2024-03-12T00:00:00Z")), 18.0975);
  // Generous bound for Debug/sanitizer builds; a Release build takes a few milliseconds.
  EXPECT_LT(std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count(), 2000);
}

TEST(RealFiles, DeLuDayAhead2024) {
  auto s = LoadDeLuCsv(DataFile("de-lu-dayahead-hourly-2024-ct-per-kwh.csv"), 1.0);
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_EQ(s->size(), 8808u);  // 366 days x 24 + 2025-01-01
  EXPECT_EQ(s->front(), At("2023-12-31T23:00:00Z"));
  EXPECT_DOUBLE_EQ(s->UsdPerMwhAt(At("2023-12-31T23:00:00Z")), 0.1);    // 0.01 ct/kWh
  EXPECT_DOUBLE_EQ(s->UsdPerMwhAt(At("2024-06-30T22:00:00Z")), 94.88);  // 00:00 CEST
  EXPECT_NEAR(s->Mean(), 79.2461, 0.001);
  // Hourly without gaps: 8,808 consecutive hours.
  EXPECT_EQ(s->back() - s->front(), hours{8807});

  auto usd = LoadDeLuCsv(DataFile("de-lu-dayahead-hourly-2024-ct-per-kwh.csv"));
  ASSERT_TRUE(usd.has_value());
  EXPECT_NEAR(usd->Mean(), 79.2461 * kDefaultUsdPerEur, 0.001);
}

TEST(RealFiles, LoadPriceFeedDispatches) {
  PriceSource source;
  source.format = ParsePriceFormat("ercot").value();
  source.path = DataFile("ercot-spp-hourly-2024.csv");
  source.column = "LZ_WEST_DAM";
  auto s = LoadPriceFeed(source);
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_EQ(s->size(), 8614u);
  EXPECT_EQ(ParsePriceFormat("de-lu").value(), PriceSource::Format::kDeLu);
  EXPECT_EQ(ParsePriceFormat("generic").value(), PriceSource::Format::kGeneric);
  EXPECT_FALSE(ParsePriceFormat("caiso").has_value());
  EXPECT_EQ(ToString(PriceSource::Format::kDeLu), "de-lu");
}

// ---- ERCOT parsing ----

TEST(ErcotCsv, ConvertsHourEndingToUtc) {
  const std::string text = std::string(kErcotHeader) +
                           "2024-08-19,1,1,10\r\n"
                           "2024-08-19,24,2,20\r\n"
                           "01/15/2024,1,3,30";  // ERCOT's own date spelling, no final newline
  auto s = ParseErcotCsv(text, "t.csv", "X_RTM");
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  ASSERT_EQ(s->size(), 3u);
  EXPECT_EQ(s->points()[0].start, At("2024-01-15T06:00:00Z"));
  EXPECT_EQ(s->points()[1].start, At("2024-08-19T05:00:00Z"));
  EXPECT_EQ(s->points()[2].start, At("2024-08-20T04:00:00Z"));
  EXPECT_DOUBLE_EQ(s->points()[1].usd_per_mwh, 10.0);
}

TEST(ErcotCsv, DaylightSwitchDays) {
  const std::string text = std::string(kErcotHeader) +
                           "2024-03-10,1,0,1\n"
                           "2024-03-10,3,,\n"  // skipped hour: empty placeholder, skipped
                           "2024-03-10,4,0,4\n"
                           "2024-11-03,1,0,11\n"
                           "2024-11-03,2,0,12\n"
                           "2024-11-03,2,0,13\n"  // the repeated hour: second is CST
                           "2024-11-03,3,0,14\n";
  auto s = ParseErcotCsv(text, "t.csv", "X_RTM");
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  ASSERT_EQ(s->size(), 6u);
  EXPECT_EQ(s->points()[0].start, At("2024-03-10T06:00:00Z"));  // 00:00 CST
  EXPECT_EQ(s->points()[1].start, At("2024-03-10T08:00:00Z"));  // 03:00 CDT
  EXPECT_EQ(s->points()[2].start, At("2024-11-03T05:00:00Z"));  // 00:00 CDT
  EXPECT_EQ(s->points()[3].start, At("2024-11-03T06:00:00Z"));  // 01:00 CDT
  EXPECT_EQ(s->points()[4].start, At("2024-11-03T07:00:00Z"));  // 01:00 CST
  EXPECT_EQ(s->points()[5].start, At("2024-11-03T08:00:00Z"));  // 02:00 CST
  EXPECT_DOUBLE_EQ(s->points()[4].usd_per_mwh, 13.0);
}

TEST(ErcotCsv, PriceInTheSpringGapIsAnError) {
  auto s = ParseErcotCsv(std::string(kErcotHeader) + "2024-03-10,3,1,2\n", "t.csv", "X_RTM");
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().line, 2);
  EXPECT_EQ(s.error().column, 2);
  EXPECT_NE(s.error().message.find("does not exist"), std::string::npos) << s.error().message;
}

TEST(ErcotCsv, BadNumberNamesLineAndColumn) {
  const std::string text = std::string(kErcotHeader) +
                           "2024-08-19,1,1,10\n"
                           "2024-08-19,2,1,1O.5\n";
  auto s = ParseErcotCsv(text, "prices.csv", "X_RTM");
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().file, "prices.csv");
  EXPECT_EQ(s.error().line, 3);
  EXPECT_EQ(s.error().column, 4);
  EXPECT_EQ(s.error().ToString(), "prices.csv:3:4: invalid number '1O.5' in column X_RTM");
  for (std::string_view bad : {"nan", "inf", "1e999", "1,", "--1", "0x10", "1 2"}) {
    auto r = ParseErcotCsv(std::string(kErcotHeader) + "2024-08-19,1,0," + std::string(bad) + "\n",
                           "p.csv", "X_RTM");
    EXPECT_FALSE(r.has_value()) << bad;
  }
}

TEST(ErcotCsv, BadDateHourAndFieldCount) {
  auto date = ParseErcotCsv(std::string(kErcotHeader) + "2024-02-30,1,0,1\n", "p.csv", "X_RTM");
  ASSERT_FALSE(date.has_value());
  EXPECT_EQ(date.error().ToString().substr(0, 10), "p.csv:2:1:");
  auto hour = ParseErcotCsv(std::string(kErcotHeader) + "2024-02-01,25,0,1\n", "p.csv", "X_RTM");
  ASSERT_FALSE(hour.has_value());
  EXPECT_EQ(hour.error().column, 2);
  auto count = ParseErcotCsv(std::string(kErcotHeader) + "2024-02-01,1,0\n", "p.csv", "X_RTM");
  ASSERT_FALSE(count.has_value());
  EXPECT_EQ(count.error().line, 2);
  EXPECT_EQ(count.error().column, 4);
  auto dup = ParseErcotCsv(std::string(kErcotHeader) +
                               "2024-02-01,1,0,1\n2024-02-01,2,0,1\n"
                               "2024-02-01,1,0,1\n",
                           "p.csv", "X_RTM");
  ASSERT_FALSE(dup.has_value());
  EXPECT_EQ(dup.error().line, 4);
  EXPECT_NE(dup.error().message.find("also on line 2"), std::string::npos);
}

TEST(ErcotCsv, UnknownColumnListsAvailableOnes) {
  auto s = ParseErcotCsv(std::string(kErcotHeader) + "2024-08-19,1,1,10\n", "p.csv", "HB_NORTH");
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().line, 1);
  EXPECT_NE(s.error().message.find("'HB_NORTH'"), std::string::npos) << s.error().message;
  EXPECT_NE(s.error().message.find("'X_DAM', 'X_RTM'"), std::string::npos) << s.error().message;
  EXPECT_FALSE(ParseErcotCsv(std::string(kErcotHeader) + "2024-08-19,1,1,10\n", "p", "hour_ending")
                   .has_value());
}

TEST(ErcotCsv, RejectsEmptyInputs) {
  for (std::string_view text : {"", "\n\n", "delivery_date,hour_ending,X\n",
                                "delivery_date,hour_ending,X\r\n2024-08-19,1,\r\n", "a,b,c\n"}) {
    auto s = ParseErcotCsv(text, "p.csv", "X");
    EXPECT_FALSE(s.has_value()) << text;
  }
  auto s = ParseErcotCsv("delivery_date,hour_ending,X\n", "p.csv", "X");
  EXPECT_EQ(s.error().message, "no data rows");
}

// ---- DE-LU parsing ----

constexpr std::string_view kDeLuHeader =
    "time,sdate,stimestart,zone_start,stimeend,zone_end,price\r\n";

TEST(DeLuCsv, UsesZoneColumnAndConvertsUnits) {
  const std::string text = std::string(kDeLuHeader) +
                           "2024-01-01 00:00:00,01.01.2024,00:00,CET,01:00,CET,10.0\r\n"
                           "2024-10-27 02:00:00,27.10.2024,02:00,CEST,02:00,CET,1\r\n"
                           "2024-10-27 02:00:00,27.10.2024,02:00,CET,03:00,CET,2\r\n";
  auto s = ParseDeLuCsv(text, "de.csv", 1.1);
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  ASSERT_EQ(s->size(), 3u);
  EXPECT_EQ(s->points()[0].start, At("2023-12-31T23:00:00Z"));
  EXPECT_DOUBLE_EQ(s->points()[0].usd_per_mwh, 110.0);  // 10 ct/kWh = 100 EUR/MWh
  EXPECT_EQ(s->points()[1].start, At("2024-10-27T00:00:00Z"));
  EXPECT_EQ(s->points()[2].start, At("2024-10-27T01:00:00Z"));
}

TEST(DeLuCsv, Errors) {
  auto zone = ParseDeLuCsv(std::string(kDeLuHeader) + "x,01.01.2024,00:00,EST,01:00,CET,1\n", "de");
  ASSERT_FALSE(zone.has_value());
  EXPECT_EQ(zone.error().column, 4);
  auto number = ParseDeLuCsv(std::string(kDeLuHeader) +
                                 "x,01.01.2024,00:00,CET,01:00,CET,1;2\n"
                                 "x,01.01.2024,01:00,CET,02:00,CET,3\n",
                             "de");
  ASSERT_FALSE(number.has_value());
  EXPECT_EQ(number.error().ToString(), "de:2:7: invalid number '1;2'");
  auto date = ParseDeLuCsv(std::string(kDeLuHeader) + "x,2024-01-01,00:00,CET,01:00,CET,1\n", "de");
  ASSERT_FALSE(date.has_value());
  EXPECT_EQ(date.error().column, 2);
  auto clock =
      ParseDeLuCsv(std::string(kDeLuHeader) + "x,01.01.2024,24:00,CET,01:00,CET,1\n", "de");
  ASSERT_FALSE(clock.has_value());
  EXPECT_EQ(clock.error().column, 3);
  EXPECT_FALSE(ParseDeLuCsv("time,price\n1,2\n", "de").has_value());
  EXPECT_FALSE(ParseDeLuCsv(std::string(kDeLuHeader), "de").has_value());
  EXPECT_FALSE(
      ParseDeLuCsv(std::string(kDeLuHeader) + "x,01.01.2024,00:00,CET,01:00,CET,1\n", "de", 0.0)
          .has_value());
}

// ---- generic ----

TEST(GenericCsv, ParsesIsoTimestamps) {
  const std::string text =
      "\xEF\xBB\xBFtimestamp,usd_per_mwh\n"
      "2024-08-19T00:00:00Z,10\n"
      "\n"
      "2024-08-19T03:00:00+02:00,  -5.5 \n"
      "2024-08-19 02:00:00,7\n";
  auto s = ParseGenericPriceCsv(text, "g.csv");
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  ASSERT_EQ(s->size(), 3u);
  EXPECT_EQ(s->points()[1].start, At("2024-08-19T01:00:00Z"));
  EXPECT_DOUBLE_EQ(s->points()[1].usd_per_mwh, -5.5);
  EXPECT_DOUBLE_EQ(s->UsdPerMwhAt(At("2024-08-19T02:30:00Z")), 7.0);
}

TEST(GenericCsv, ErrorsCarryPositions) {
  auto stamp =
      ParseGenericPriceCsv("timestamp,usd_per_mwh\n2024-08-19T00:00:00Z,1\nyesterday,2\n", "g.csv");
  ASSERT_FALSE(stamp.has_value());
  EXPECT_EQ(stamp.error().line, 3);
  EXPECT_EQ(stamp.error().column, 1);
  auto price = ParseGenericPriceCsv("usd_per_mwh,timestamp\n\n\nabc,2024-08-19\n", "g.csv");
  ASSERT_FALSE(price.has_value());
  EXPECT_EQ(price.error().ToString(), "g.csv:4:1: invalid number 'abc'");
  EXPECT_FALSE(ParseGenericPriceCsv("time,price\n2024-08-19,1\n", "g.csv").has_value());
}

// ---- files ----

TEST(Loaders, MissingFile) {
  auto s = LoadGenericPriceCsv("/nonexistent/prices.csv");
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().line, 0);
  EXPECT_EQ(s.error().ToString(),
            "/nonexistent/prices.csv: cannot open: No such file or directory");
  PriceSource source{PriceSource::Format::kErcot, "/nonexistent/e.csv", "X", kDefaultUsdPerEur};
  EXPECT_FALSE(LoadPriceFeed(source).has_value());
  source.format = PriceSource::Format::kDeLu;
  EXPECT_FALSE(LoadPriceFeed(source).has_value());
  auto dir = LoadGenericPriceCsv(PP_SOURCE_DIR);
  ASSERT_FALSE(dir.has_value());
  EXPECT_EQ(dir.error().line, 0);
}

}  // namespace
}  // namespace powerplane::grid
