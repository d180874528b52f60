#pragma once
// Dispatch economics: what a MWh is worth in each use at a site now, so power goes to the most
// valuable use first. Interactive inference is never displaced by mining (the FlexController
// gives miners only what is left once inference has room to grow).

#include <algorithm>
#include <string>
#include <vector>

namespace powerplane::core {

// Mining: one PH/s at e J/TH draws e kW, i.e. 24 x e kWh a day, and earns the hashprice.
// USD per MWh = hashprice (USD per PH/s per day) x 1000 / (24 x J per TH).
inline double MiningUsdPerMwh(double hashprice_usd_per_ph_day, double joules_per_th) {
  return joules_per_th > 0 ? hashprice_usd_per_ph_day * 1000.0 / (24.0 * joules_per_th) : 0;
}

// Inference: tokens per MWh at the current J/token (facility) x the price a token sells for.
inline double InferenceUsdPerMwh(double joules_per_token, double pue, double usd_per_mtok) {
  if (joules_per_token <= 0) return 0;
  const double tokens_per_mwh = 3.6e9 / (joules_per_token * pue);
  return tokens_per_mwh * usd_per_mtok / 1e6;
}

struct UseValue {
  std::string use;  // "inference", "mining", "export".
  double usd_per_mwh = 0;
};

// The uses of a site's power ranked by value, highest first. `export_usd_per_mwh` < 0 means
// the site cannot export.
inline std::vector<UseValue> RankUses(double inference_usd_per_mwh, double mining_usd_per_mwh,
                                      double export_usd_per_mwh) {
  std::vector<UseValue> out = {{"inference", inference_usd_per_mwh},
                               {"mining", mining_usd_per_mwh}};
  if (export_usd_per_mwh >= 0) out.push_back({"export", export_usd_per_mwh});
  std::stable_sort(out.begin(), out.end(),
                   [](const UseValue& a, const UseValue& b) { return a.usd_per_mwh > b.usd_per_mwh; });
  return out;
}

}  // namespace powerplane::core
