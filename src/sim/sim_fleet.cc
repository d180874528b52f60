#include "sim/sim_fleet.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>

#include "engine/gpu_profiles.h"
#include "grid/price_loaders.h"

namespace powerplane::sim {
namespace {

std::filesystem::path Resolve(const std::filesystem::path& data_dir, const std::string& file) {
  std::filesystem::path p(file);
  return p.is_absolute() ? p : data_dir / p;
}

std::expected<grid::PriceSeries, std::string> LoadOverride(const PriceOverride& o) {
  grid::PriceSource source;
  source.path = o.file;
  if (!o.column.empty()) {
    source.format = grid::PriceSource::Format::kErcot;
    source.column = o.column;
  } else {
    std::ifstream in(o.file);
    std::string header;
    if (!in || !std::getline(in, header)) return std::unexpected(o.file + ": cannot read");
    if (header.find("sdate") != std::string::npos) {
      source.format = grid::PriceSource::Format::kDeLu;
    } else if (header.find("delivery_date") != std::string::npos) {
      return std::unexpected(o.file + ": an ERCOT file needs a column (SITE=FILE:COLUMN)");
    } else {
      source.format = grid::PriceSource::Format::kGeneric;
    }
  }
  auto series = grid::LoadPriceFeed(source);
  if (!series) return std::unexpected(series.error().ToString());
  return std::move(*series);
}

}  // namespace

bool SimFleet::Allowed(std::size_t tenant, std::size_t site) const {
  const auto& j = tenants[tenant].jurisdictions;
  return j.empty() || std::find(j.begin(), j.end(), sites[site].jurisdiction) != j.end();
}

std::expected<PriceOverride, std::string> ParsePriceOverride(std::string_view text) {
  const std::size_t eq = text.find('=');
  if (eq == std::string_view::npos || eq == 0 || eq + 1 == text.size()) {
    return std::unexpected("--prices '" + std::string(text) + "': want SITE=FILE[:COLUMN]");
  }
  PriceOverride o;
  o.site = std::string(text.substr(0, eq));
  std::string_view rest = text.substr(eq + 1);
  const std::size_t colon = rest.rfind(':');
  if (colon != std::string_view::npos && colon + 1 < rest.size() &&
      rest.substr(colon + 1).find('/') == std::string_view::npos) {
    o.file = std::string(rest.substr(0, colon));
    o.column = std::string(rest.substr(colon + 1));
  } else {
    o.file = std::string(rest);
  }
  return o;
}

std::expected<std::map<std::string, double>, std::string> ParseTenantMix(std::string_view text) {
  std::map<std::string, double> mix;
  while (!text.empty()) {
    const std::size_t comma = text.find(',');
    const std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    const std::size_t eq = item.find('=');
    double w = -1;
    if (eq != std::string_view::npos) {
      const auto r = std::from_chars(item.data() + eq + 1, item.data() + item.size(), w);
      if (r.ec != std::errc() || r.ptr != item.data() + item.size()) w = -1;
    }
    if (eq == std::string_view::npos || eq == 0 || w < 0) {
      return std::unexpected("--tenant-mix '" + std::string(item) + "': want TENANT=WEIGHT");
    }
    mix[std::string(item.substr(0, eq))] = w;
  }
  return mix;
}

std::expected<SimFleet, std::string> BuildSimFleet(const fleet::FleetConfig& config,
                                                   const std::filesystem::path& data_dir,
                                                   const std::vector<PriceOverride>& overrides,
                                                   const std::map<std::string, double>& mix) {
  SimFleet f;
  for (const auto& o : overrides) {
    if (std::none_of(config.sites.begin(), config.sites.end(),
                     [&](const fleet::SiteConfig& s) { return s.id == o.site; })) {
      return std::unexpected("--prices: no site '" + o.site + "' in the fleet");
    }
  }
  std::map<std::string, std::shared_ptr<const core::GpuModel>> gpus;
  f.hashprice_usd_per_ph_day = config.hashprice_usd_per_ph_day;
  f.cap_slew_watts_per_s = config.cap_slew_watts_per_s;
  for (std::size_t si = 0; si < config.sites.size(); ++si) {
    const auto& s = config.sites[si];
    f.sites.push_back({s.id, s.jurisdiction, s.pue, s.network_rtt_ms / 1e3});
    SimSiteFlex flex;
    flex.base_kw = s.base_kw;
    flex.grid_import_limit_kw = s.grid_import_limit_kw;
    flex.gpu_min_cap_watts = s.gpu_min_cap_watts;
    flex.miners_kw = s.miners.Kw();
    flex.miner_th_per_s = s.miners.count * s.miners.th_per_s;
    flex.miner_joules_per_th = s.miners.JoulesPerTh();
    flex.can_export = s.wind.can_export;
    if (s.wind.capacity_kw > 0) {
      auto profile = grid::LoadCapacityFactorCsv(Resolve(data_dir, s.wind.profile).string());
      if (!profile) return std::unexpected("site " + s.id + " wind: " + profile.error().ToString());
      flex.wind_capacity_kw = s.wind.capacity_kw;
      flex.wind = std::move(*profile);
    }
    f.flex.push_back(std::move(flex));
    const auto o = std::find_if(overrides.begin(), overrides.end(),
                                [&](const PriceOverride& p) { return p.site == s.id; });
    if (o != overrides.end()) {
      auto series = LoadOverride(*o);
      if (!series) return std::unexpected("site " + s.id + ": " + series.error());
      f.prices.push_back(std::move(*series));
      f.price_labels.push_back(o->file + (o->column.empty() ? "" : ":" + o->column));
    } else if (s.price.format.empty()) {
      f.prices.push_back(grid::PriceSeries::Constant(s.price.fixed_usd_per_mwh));
      f.price_labels.push_back("fixed");
    } else {
      auto format = grid::ParsePriceFormat(s.price.format);
      if (!format) return std::unexpected("site " + s.id + ": " + format.error());
      grid::PriceSource source{*format, Resolve(data_dir, s.price.file).string(), s.price.column};
      auto series = grid::LoadPriceFeed(source);
      if (!series) return std::unexpected("site " + s.id + ": " + series.error().ToString());
      f.prices.push_back(std::move(*series));
      f.price_labels.push_back(s.price.file + (s.price.column.empty() ? "" : ":" + s.price.column));
    }
    int n = 0;
    for (const auto& g : s.endpoints) {
      if (!gpus.contains(g.gpu)) {
        auto profile = engine::LoadGpuProfile(g.gpu, data_dir);
        if (!profile) return std::unexpected("site " + s.id + ": " + profile.error());
        gpus[g.gpu] = std::make_shared<const core::GpuModel>(std::move(*profile));
      }
      std::uint32_t model = 0;
      const auto m = std::find(f.models.begin(), f.models.end(), g.model);
      if (m == f.models.end()) {
        model = static_cast<std::uint32_t>(f.models.size());
        f.models.push_back(g.model);
      } else {
        model = static_cast<std::uint32_t>(m - f.models.begin());
      }
      for (int i = 0; i < g.count; ++i, ++n) {
        core::Endpoint e;
        e.id = s.id + "/" + g.gpu + "-" + std::to_string(n);
        e.site_index = static_cast<std::uint32_t>(si);
        e.model_index = model;
        e.gpu = gpus[g.gpu];
        e.max_batch = g.max_batch;
        e.max_queue = g.max_queue;
        e.kv_token_capacity = g.kv_tokens;
        e.hardware_usd_per_hour = g.hardware_usd_per_hour;
        f.endpoints.push_back(std::move(e));
      }
    }
  }
  if (f.endpoints.empty()) return std::unexpected("the fleet has no endpoints");
  int unrestricted = 0;
  for (const auto& t : config.tenants) unrestricted += t.jurisdictions.empty() ? 1 : 0;
  double restricted_share = 0;
  for (const auto& t : config.tenants) {
    SimTenant st;
    st.id = t.id;
    st.jurisdictions = t.jurisdictions;
    st.priority = t.priority;
    st.ttft_target_s = t.ttft_target_ms / 1e3;
    st.tpot_target_s = t.tpot_target_ms / 1e3;
    st.weight = t.jurisdictions.empty() ? 0 : 0.1;
    restricted_share += st.weight;
    f.tenants.push_back(std::move(st));
  }
  for (auto& t : f.tenants) {
    if (t.jurisdictions.empty()) t.weight = std::max(0.0, 1 - restricted_share) / unrestricted;
  }
  if (f.tenants.empty()) f.tenants.push_back(SimTenant{"default", {}, {}, 1.0, 0.05, 1.0});
  for (const auto& [id, w] : mix) {
    auto t = std::find_if(f.tenants.begin(), f.tenants.end(),
                          [&](const SimTenant& x) { return x.id == id; });
    if (t == f.tenants.end()) return std::unexpected("--tenant-mix: no tenant '" + id + "'");
    t->weight = w;
  }
  double total = 0;
  for (const auto& t : f.tenants) total += t.weight;
  if (total <= 0) return std::unexpected("tenant weights sum to 0");
  for (auto& t : f.tenants) t.weight /= total;
  return f;
}

double SustainableRateRps(const SimFleet& fleet, double mean_prompt, double mean_output) {
  double tpot = 1e9;
  for (const auto& t : fleet.tenants) tpot = std::min(tpot, t.tpot_target_s);
  const double ctx = mean_prompt + 0.5 * mean_output;
  double rate = 0;
  for (const auto& e : fleet.endpoints) {
    const core::GpuModel& gpu = *e.gpu;
    int b = std::max(1, e.max_batch);
    if (e.kv_token_capacity > 0) {
      b = std::min<int>(b, std::max<std::int64_t>(
                               1, e.kv_token_capacity /
                                      std::max<std::int64_t>(1, std::llround(ctx + mean_output))));
    }
    while (b > 1 && gpu.StepSeconds(b, ctx) > 0.5 * tpot) --b;
    const double per_request_s =
        gpu.PrefillSeconds(mean_prompt) + mean_output * gpu.StepSeconds(b, ctx) / b;
    if (per_request_s > 0) rate += 1.0 / per_request_s;
  }
  return rate;
}

}  // namespace powerplane::sim
