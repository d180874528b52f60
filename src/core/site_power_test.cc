#include "core/site_power.h"

#include <gtest/gtest.h>

namespace powerplane::core {
namespace {

TEST(SitePowerTest, WindCoveringTheSiteIsWorthItsExportPriceOrNothing) {
  SiteSupply s{.grid_usd_per_mwh = 40, .draw_kw = 100, .wind_kw = 150};
  SupplyPlan p = PlanSupply(s);
  EXPECT_EQ(p.source, "wind");
  EXPECT_EQ(p.usd_per_mwh, 0);  // cannot export: the surplus is spilled.
  EXPECT_EQ(p.export_kw, 0);
  s.can_export = true;
  p = PlanSupply(s);
  EXPECT_EQ(p.usd_per_mwh, 40);  // every MWh used is one not sold.
  EXPECT_EQ(p.export_kw, 50);
  // Negative prices: using wind beats exporting it.
  s.grid_usd_per_mwh = -20;
  EXPECT_EQ(PlanSupply(s).usd_per_mwh, -20);
}

TEST(SitePowerTest, GasRunsWhenCheaperThanTheGridAndSetsTheMargin) {
  // 3 USD/MMBtu x 8,500 Btu/kWh = 25.5 USD/MWh.
  const double gas = GasUsdPerMwh(3.0, 8500);
  EXPECT_DOUBLE_EQ(gas, 25.5);
  SiteSupply s{.grid_usd_per_mwh = 90, .draw_kw = 1000, .wind_kw = 200,
               .gas_capacity_kw = 1000, .gas_usd_per_mwh = gas};
  SupplyPlan p = PlanSupply(s);
  EXPECT_EQ(p.source, "gas");
  EXPECT_DOUBLE_EQ(p.usd_per_mwh, gas);
  EXPECT_DOUBLE_EQ(p.gas_kw, 800);
  EXPECT_DOUBLE_EQ(p.import_kw, 0);
  // Gas at full capacity: the next MWh comes from the grid.
  s.gas_capacity_kw = 500;
  p = PlanSupply(s);
  EXPECT_EQ(p.source, "grid");
  EXPECT_DOUBLE_EQ(p.gas_kw, 500);
  EXPECT_DOUBLE_EQ(p.import_kw, 300);
  // Grid cheaper than gas: no gas.
  s.grid_usd_per_mwh = 15;
  p = PlanSupply(s);
  EXPECT_EQ(p.source, "grid");
  EXPECT_EQ(p.gas_kw, 0);
}

TEST(SitePowerTest, GasCarriesWhatAnEventLeavesTheConnectionUnableTo) {
  // The grid is cheap, but an event limits import to 300 kW of an 800 kW draw.
  SiteSupply s{.grid_usd_per_mwh = 15, .draw_kw = 800, .import_budget_kw = 300,
               .gas_capacity_kw = 1000, .gas_usd_per_mwh = 25.5};
  SupplyPlan p = PlanSupply(s);
  EXPECT_DOUBLE_EQ(p.gas_kw, 500);
  EXPECT_DOUBLE_EQ(p.import_kw, 300);
  EXPECT_EQ(p.source, "gas");  // one more MWh would have to come from gas.
  EXPECT_DOUBLE_EQ(p.available_kw, 300 + 1000);
}

}  // namespace
}  // namespace powerplane::core
