#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <string>
#include <thread>

#include "gateway/gateway.h"

namespace powerplane::gateway {
namespace {

// Ids are unique, "req_" and 32 hex digits, start with the time in milliseconds, and sort in the
// order they were made (so the ledger's primary key grows at its end).
TEST(RequestIdTest, UniqueTimeOrderedHex) {
  std::set<std::string> ids;
  for (int i = 0; i < 1000; ++i) ids.insert(NewRequestId());
  EXPECT_EQ(ids.size(), 1000u);
  const std::string first = NewRequestId();
  ASSERT_EQ(first.size(), 36u);
  EXPECT_EQ(first.substr(0, 4), "req_");
  EXPECT_EQ(first.find_first_not_of("0123456789abcdef", 4), std::string::npos);
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const long long id_ms = std::stoll(first.substr(4, 12), nullptr, 16);
  EXPECT_LE(std::llabs(id_ms - now_ms), 1000);
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_LT(first, NewRequestId());
}

}  // namespace
}  // namespace powerplane::gateway
