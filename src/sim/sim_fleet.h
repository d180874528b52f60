#pragma once
// The fleet as the twin sees it: core sites and endpoints (as the gateway builds them), a price
// series per site, and the tenants requests are drawn from. Built from the same fleet file as
// `powerplane up`. Reads price and GPU files; no other I/O.

#include <expected>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/types.h"
#include "fleet/config.h"
#include "grid/generation.h"
#include "grid/price_series.h"

namespace powerplane::sim {

struct SimTenant {
  std::string id;
  std::vector<std::string> jurisdictions;  // empty = any.
  core::PriorityClass priority = core::PriorityClass::kInteractive;
  double ttft_target_s = 1.0;
  double tpot_target_s = 0.05;
  double weight = 1.0;  // share of requests drawn for this tenant (normalised over tenants).
};

// What the FlexController needs of a site besides its GPUs (from the fleet file's site table).
struct SimSiteFlex {
  double base_kw = 0;                  // facility load besides GPUs x PUE and miners.
  double grid_import_limit_kw = 1e9;   // the connection.
  double gpu_min_cap_watts = 300;      // the lowest GPU cap the controller may set.
  double miners_kw = 0;                // all miners running.
  double miner_th_per_s = 0;           // all miners.
  double miner_joules_per_th = 0;
  double wind_capacity_kw = 0;
  std::optional<grid::CapacityFactorProfile> wind;  // hourly capacity factor; none = no wind.
  bool can_export = false;             // surplus generation is sold at the site's price.
};

struct SimFleet {
  std::vector<core::Site> sites;
  // Parallel to sites; may be empty (no miners, no wind, no import limit: fleets built in code).
  std::vector<SimSiteFlex> flex;
  double hashprice_usd_per_ph_day = 0;  // what mining earns.
  double cap_slew_watts_per_s = 100;    // how fast GPU caps rise when a constraint lifts.
  std::vector<grid::PriceSeries> prices;  // parallel to sites.
  std::vector<std::string> price_labels;  // where each site's prices come from, for reports.
  std::vector<core::Endpoint> endpoints;
  std::vector<SimTenant> tenants;
  std::vector<std::string> models;

  // Whether `tenant` may be served at `site` (its residency rule).
  bool Allowed(std::size_t tenant, std::size_t site) const;
};

// `SITE=FILE[:COLUMN]`: a price override. With COLUMN the file is an ERCOT wide CSV; without, the
// format is sniffed from the header (DE-LU `sdate`..., generic `timestamp,usd_per_mwh`).
struct PriceOverride {
  std::string site;
  std::string file;
  std::string column;
};
std::expected<PriceOverride, std::string> ParsePriceOverride(std::string_view text);

// `id=weight,id=weight`; tenants not named keep the default weight.
std::expected<std::map<std::string, double>, std::string> ParseTenantMix(std::string_view text);

// Builds the fleet. Relative price files resolve against `data_dir`. Default tenant weights: each
// tenant restricted to some jurisdictions gets 0.1 of the requests, the unrestricted tenants share
// the rest equally; `mix` overrides by tenant id.
std::expected<SimFleet, std::string> BuildSimFleet(const fleet::FleetConfig& config,
                                                   const std::filesystem::path& data_dir,
                                                   const std::vector<PriceOverride>& overrides,
                                                   const std::map<std::string, double>& mix);

// The fleet's sustainable request rate for requests of mean sizes `mean_prompt`/`mean_output`,
// in requests per second. Per endpoint: the largest batch b <= max_batch (and within the KV cache)
// whose decode step at the mean context (prompt + output / 2) is at most half the tightest
// tenant TPOT target (half: prefill phases stall decoding); one request then costs the GPU
// prefill_s(prompt) + output x step(b) / b seconds; the endpoint's rate is the inverse, summed
// over endpoints.
double SustainableRateRps(const SimFleet& fleet, double mean_prompt, double mean_output);

}  // namespace powerplane::sim
