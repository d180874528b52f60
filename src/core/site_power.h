#pragma once
// Where a site's next MWh comes from, and what it costs: behind-the-meter wind first (worth its
// export opportunity, or nothing when the site cannot export), then on-site gas when it is
// cheaper than the grid or when the grid connection cannot carry the rest, then the grid. Pure.

#include <string_view>

namespace powerplane::core {

struct SiteSupply {
  double grid_usd_per_mwh = 0;      // the price at the site's node now.
  double draw_kw = 0;               // what the site draws now (facility kW).
  double import_budget_kw = 1e9;    // the grid connection, an operator's cap or an event.
  double wind_kw = 0;               // behind-the-meter wind now.
  bool can_export = false;          // whether surplus generation can be sold to the grid.
  double gas_capacity_kw = 0;       // on-site gas generation, dispatchable at once.
  double gas_usd_per_mwh = 0;       // fuel x heat rate.
};

struct SupplyPlan {
  double usd_per_mwh = 0;        // the effective marginal price: what one more MWh costs here.
  std::string_view source;       // "wind", "gas" or "grid": where that MWh comes from.
  double gas_kw = 0;             // gas dispatched now.
  double import_kw = 0;          // from the grid after wind and gas.
  double export_kw = 0;          // wind beyond the draw, sold when the site can export.
  double available_kw = 0;       // import budget + wind + gas capacity.
};

// Gas fuel cost in USD/MWh from USD per MMBtu and a heat rate in Btu per kWh.
inline double GasUsdPerMwh(double fuel_usd_per_mmbtu, double heat_rate_btu_per_kwh) {
  return fuel_usd_per_mmbtu * heat_rate_btu_per_kwh / 1000.0;
}

SupplyPlan PlanSupply(const SiteSupply& s);

}  // namespace powerplane::core
