#include "core/site_power.h"

#include <algorithm>

namespace powerplane::core {

SupplyPlan PlanSupply(const SiteSupply& s) {
  SupplyPlan p;
  p.available_kw = s.import_budget_kw + s.wind_kw + s.gas_capacity_kw;
  const double residual_kw = std::max(0.0, s.draw_kw - s.wind_kw);
  if (s.wind_kw > 0 && residual_kw <= 0) {
    // Wind covers the site and has some to spare: the next MWh is wind, which would otherwise
    // be sold at the node's price (or spilled, worth nothing).
    p.export_kw = s.can_export ? s.wind_kw - s.draw_kw : 0;
    p.usd_per_mwh = s.can_export ? s.grid_usd_per_mwh : 0;
    p.source = "wind";
    return p;
  }
  const bool gas_cheaper = s.gas_capacity_kw > 0 && s.gas_usd_per_mwh < s.grid_usd_per_mwh;
  double gas_kw = gas_cheaper ? std::min(s.gas_capacity_kw, residual_kw) : 0;
  // What the connection cannot carry, gas must make (as far as it can).
  gas_kw = std::max(gas_kw, std::min(s.gas_capacity_kw, residual_kw - s.import_budget_kw));
  p.gas_kw = gas_kw;
  p.import_kw = residual_kw - gas_kw;
  // The next MWh: gas while it has room and is cheaper or the connection is full; else the grid.
  if (s.gas_capacity_kw > gas_kw && (gas_cheaper || p.import_kw >= s.import_budget_kw)) {
    p.usd_per_mwh = s.gas_usd_per_mwh;
    p.source = "gas";
  } else {
    p.usd_per_mwh = s.grid_usd_per_mwh;
    p.source = "grid";
  }
  return p;
}

}  // namespace powerplane::core
