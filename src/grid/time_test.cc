#include "grid/time.h"

#include <gtest/gtest.h>

namespace powerplane::grid {
namespace {

using std::chrono::hours;
using std::chrono::minutes;

UtcTime At(std::string_view iso) {
  auto t = ParseUtcTimestamp(iso);
  EXPECT_TRUE(t.has_value()) << iso << ": " << (t ? "" : t.error());
  return t.value_or(UtcTime{});
}

LocalTime Local(int y, unsigned m, unsigned d, int h, int min = 0) {
  return LocalTime{std::chrono::sys_days{std::chrono::year{y} / m / d}.time_since_epoch()} +
         hours{h} + minutes{min};
}

TEST(ParseUtcTimestamp, AcceptsZuluOffsetsAndNoZone) {
  const UtcTime midnight{std::chrono::sys_days{std::chrono::year{2024} / 8 / 19}};
  EXPECT_EQ(At("2024-08-19T00:00:00Z"), midnight);
  EXPECT_EQ(At("2024-08-19 00:00:00"), midnight);
  EXPECT_EQ(At("2024-08-19"), midnight);
  EXPECT_EQ(At("2024-08-19T00:00"), midnight);
  EXPECT_EQ(At("2024-08-19T02:00:00+02:00"), midnight);
  EXPECT_EQ(At("2024-08-19T02:00:00+0200"), midnight);
  EXPECT_EQ(At("2024-08-19T02:00:00+02"), midnight);
  EXPECT_EQ(At("2024-08-18T19:00:00-05:00"), midnight);
  EXPECT_EQ(At("2024-08-18T18:30:00-05:30"), midnight);
  EXPECT_EQ(At("2024-08-19T00:00:00.999Z"), midnight);
  EXPECT_EQ(At("2024-08-19T00:00:00.5+00:00"), midnight);
  EXPECT_EQ(At("2024-08-19T12:34:56Z") - midnight,
            hours{12} + minutes{34} + std::chrono::seconds{56});
}

TEST(ParseUtcTimestamp, RejectsMalformed) {
  for (std::string_view bad :
       {"", "2024", "2024-13-01", "2024-02-30", "2024-08-19X00:00:00", "2024-08-19T24:00:00Z",
        "2024-08-19T00:60:00Z", "2024-08-19T00:00:00+", "2024-08-19T00:00:00+2:00",
        "2024-08-19T00:00:00Zjunk", "2024-08-19T00:00:00.", " 2024-08-19",
        "2024-08-19T00:00:00 "}) {
    EXPECT_FALSE(ParseUtcTimestamp(bad).has_value()) << bad;
  }
}

TEST(FormatUtc, RoundTrips) {
  EXPECT_EQ(FormatUtc(At("2024-08-19T02:00:00+02:00")), "2024-08-19T00:00:00Z");
  EXPECT_EQ(FormatUtc(At("2023-12-31T23:59:59Z")), "2023-12-31T23:59:59Z");
  EXPECT_EQ(FormatUtc(UtcTime{}), "1970-01-01T00:00:00Z");
  EXPECT_EQ(FormatUtc(At("1969-12-31T23:00:00Z")), "1969-12-31T23:00:00Z");
}

TEST(UsCentral, DaylightSwitches2024) {
  EXPECT_EQ(UsCentralDaylightStart(std::chrono::year{2024}), At("2024-03-10T08:00:00Z"));
  EXPECT_EQ(UsCentralDaylightEnd(std::chrono::year{2024}), At("2024-11-03T07:00:00Z"));
  EXPECT_EQ(UsCentralUtcOffset(At("2024-01-15T12:00:00Z")), hours{-6});
  EXPECT_EQ(UsCentralUtcOffset(At("2024-08-19T12:00:00Z")), hours{-5});
  EXPECT_EQ(UsCentralUtcOffset(At("2024-03-10T07:59:59Z")), hours{-6});
  EXPECT_EQ(UsCentralUtcOffset(At("2024-03-10T08:00:00Z")), hours{-5});
  EXPECT_EQ(UsCentralUtcOffset(At("2024-11-03T06:59:59Z")), hours{-5});
  EXPECT_EQ(UsCentralUtcOffset(At("2024-11-03T07:00:00Z")), hours{-6});
  EXPECT_EQ(UtcToUsCentral(At("2024-08-19T05:00:00Z")), Local(2024, 8, 19, 0));
}

TEST(UsCentral, LocalToUtc) {
  EXPECT_EQ(UsCentralToUtc(Local(2024, 8, 19, 0)).value(), At("2024-08-19T05:00:00Z"));
  EXPECT_EQ(UsCentralToUtc(Local(2024, 1, 15, 0)).value(), At("2024-01-15T06:00:00Z"));
  // Spring forward: 01:00 CST exists, 02:00-03:00 does not, 03:00 is CDT.
  EXPECT_EQ(UsCentralToUtc(Local(2024, 3, 10, 1)).value(), At("2024-03-10T07:00:00Z"));
  EXPECT_FALSE(UsCentralToUtc(Local(2024, 3, 10, 2)).has_value());
  EXPECT_FALSE(UsCentralToUtc(Local(2024, 3, 10, 2, 59)).has_value());
  EXPECT_EQ(UsCentralToUtc(Local(2024, 3, 10, 3)).value(), At("2024-03-10T08:00:00Z"));
  // Fall back: 01:00-02:00 happens twice.
  EXPECT_EQ(UsCentralToUtc(Local(2024, 11, 3, 0)).value(), At("2024-11-03T05:00:00Z"));
  EXPECT_EQ(UsCentralToUtc(Local(2024, 11, 3, 1), Ambiguity::kEarlier).value(),
            At("2024-11-03T06:00:00Z"));
  EXPECT_EQ(UsCentralToUtc(Local(2024, 11, 3, 1), Ambiguity::kLater).value(),
            At("2024-11-03T07:00:00Z"));
  EXPECT_EQ(UsCentralToUtc(Local(2024, 11, 3, 2)).value(), At("2024-11-03T08:00:00Z"));
}

TEST(CentralEurope, Switches2024) {
  EXPECT_EQ(CentralEuropeSummerStart(std::chrono::year{2024}), At("2024-03-31T01:00:00Z"));
  EXPECT_EQ(CentralEuropeSummerEnd(std::chrono::year{2024}), At("2024-10-27T01:00:00Z"));
  EXPECT_EQ(CentralEuropeToUtc(Local(2024, 1, 1, 0)).value(), At("2023-12-31T23:00:00Z"));
  EXPECT_EQ(CentralEuropeToUtc(Local(2024, 7, 1, 0)).value(), At("2024-06-30T22:00:00Z"));
  EXPECT_FALSE(CentralEuropeToUtc(Local(2024, 3, 31, 2)).has_value());
  EXPECT_EQ(CentralEuropeToUtc(Local(2024, 10, 27, 2), Ambiguity::kEarlier).value(),
            At("2024-10-27T00:00:00Z"));
  EXPECT_EQ(CentralEuropeToUtc(Local(2024, 10, 27, 2), Ambiguity::kLater).value(),
            At("2024-10-27T01:00:00Z"));
  EXPECT_EQ(UtcToCentralEurope(At("2023-12-31T23:00:00Z")), Local(2024, 1, 1, 0));
}

}  // namespace
}  // namespace powerplane::grid
