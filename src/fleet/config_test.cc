#include "fleet/config.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace powerplane::fleet {
namespace {

TEST(ConfigTest, DemoFleetParsesAsDocumented) {
  auto c = ParseFleetConfig(DemoConfigToml(), "demo");
  ASSERT_TRUE(c) << c.error();
  ASSERT_EQ(c->sites.size(), 3u);
  EXPECT_EQ(c->sites[0].id, "granbury-tx");
  EXPECT_EQ(c->sites[0].price.column, "HB_NORTH_RTM");
  EXPECT_EQ(c->sites[1].id, "west-tx-wind");
  EXPECT_EQ(c->sites[2].jurisdiction, "EU");
  EXPECT_EQ(c->EndpointCount(), 14);
  ASSERT_EQ(c->tenants.size(), 2u);
  EXPECT_EQ(c->tenants[0].key_sha256[0], Sha256Hex("pp-demo-key"));
  EXPECT_EQ(c->tenants[1].jurisdictions, std::vector<std::string>{"EU"});
  EXPECT_EQ(c->admin_key_sha256, Sha256Hex("pp-admin-key"));
  EXPECT_DOUBLE_EQ(c->market_speed, 60);
}

TEST(ConfigTest, CompiledInDemoEqualsTheExampleFile) {
  std::ifstream in(PP_SOURCE_DIR "/examples/demo.toml");
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), DemoConfigToml());
}

TEST(ConfigTest, ExampleFilesParse) {
  for (const char* f : {"/examples/one-site.toml", "/examples/demo.toml"}) {
    auto c = LoadFleetConfig(std::string(PP_SOURCE_DIR) + f);
    EXPECT_TRUE(c) << f << ": " << c.error();
  }
}

TEST(ConfigTest, GasIsReadAndChecked) {
  auto c = LoadFleetConfig(std::string(PP_SOURCE_DIR) + "/examples/one-site.toml");
  ASSERT_TRUE(c) << c.error();
  EXPECT_DOUBLE_EQ(c->sites[0].gas.capacity_kw, 1.0);
  EXPECT_DOUBLE_EQ(c->sites[0].gas.fuel_usd_per_mmbtu, 3.0);
  EXPECT_DOUBLE_EQ(c->sites[0].gas.heat_rate_btu_per_kwh, 8500.0);
  auto bad = ParseFleetConfig(R"(
[[sites]]
id = "s"
jurisdiction = "US"
price = 10.0
gas = { capacity_kw = 5.0, heat_rate_btu_per_kwh = 0.0 }
)", "bad.toml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().find("heat_rate_btu_per_kwh"), std::string::npos) << bad.error();
}

TEST(ConfigTest, Sha256) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(ConfigTest, BulkEndpointsDescribeALargeFleet) {
  auto c = ParseFleetConfig(R"(
[[sites]]
id = "big"
jurisdiction = "US"
price = 40.0
  [[sites.endpoints]]
  count = 10000
  gpu = "h100"
)", "big.toml");
  ASSERT_TRUE(c) << c.error();
  EXPECT_EQ(c->EndpointCount(), 10000);
  EXPECT_DOUBLE_EQ(c->sites[0].price.fixed_usd_per_mwh, 40.0);
}

TEST(ConfigTest, ErrorsNameTheFileLineAndColumn) {
  auto bad_syntax = ParseFleetConfig("[[sites]]\nid = \n", "f.toml");
  ASSERT_FALSE(bad_syntax);
  EXPECT_EQ(bad_syntax.error().rfind("f.toml:2:", 0), 0u) << bad_syntax.error();

  auto bad_type = ParseFleetConfig("[[sites]]\nid = \"a\"\njurisdiction = \"US\"\npue = \"high\"\n",
                                   "f.toml");
  ASSERT_FALSE(bad_type);
  EXPECT_NE(bad_type.error().find("f.toml:4:"), std::string::npos) << bad_type.error();
  EXPECT_NE(bad_type.error().find("pue"), std::string::npos);

  auto dup = ParseFleetConfig(
      "[[sites]]\nid = \"a\"\njurisdiction = \"US\"\n[[sites]]\nid = \"a\"\njurisdiction = \"US\"\n",
      "f.toml");
  ASSERT_FALSE(dup);
  EXPECT_NE(dup.error().find("duplicate site id 'a'"), std::string::npos);

  auto no_sites = ParseFleetConfig("", "f.toml");
  EXPECT_FALSE(no_sites);

  auto bad_class = ParseFleetConfig(
      "[[sites]]\nid=\"a\"\njurisdiction=\"US\"\n[[tenants]]\nid=\"t\"\nclass=\"vip\"\n", "f.toml");
  ASSERT_FALSE(bad_class);
  EXPECT_NE(bad_class.error().find("class"), std::string::npos);

  EXPECT_FALSE(LoadFleetConfig("/nonexistent/fleet.toml"));
}

}  // namespace
}  // namespace powerplane::fleet
