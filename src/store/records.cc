#include "store/records.h"

#include <cmath>

namespace powerplane::store {

std::optional<std::string> TenantError(const TenantRecord& t) {
  if (t.id.empty()) return "tenant id must not be empty";
  if (t.id.size() > 128) return "tenant id longer than 128 characters";
  if (t.priority_class != "interactive" && t.priority_class != "standard" &&
      t.priority_class != "batch") {
    return "priority class must be interactive, standard or batch, not '" + t.priority_class + "'";
  }
  if (t.budget_period != "day" && t.budget_period != "month" && t.budget_period != "none") {
    return "budget period must be day, month or none, not '" + t.budget_period + "'";
  }
  if (t.latency_target_ms < 0 || t.rpm < 0 || t.tpm < 0) {
    return "latency target, rpm and tpm must not be negative";
  }
  if (!std::isfinite(t.budget_usd) || t.budget_usd < 0) return "budget must be a sum >= 0";
  for (const auto& j : t.jurisdictions) {
    if (j.empty() || j.find(',') != std::string::npos) {
      return "jurisdiction '" + j + "' must be non-empty and hold no ','";
    }
  }
  return std::nullopt;
}

}  // namespace powerplane::store
