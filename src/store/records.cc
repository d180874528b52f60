#include "store/records.h"

#include <algorithm>
#include <cctype>
#include <cmath>

namespace powerplane::store {

std::optional<std::string> TenantError(const TenantRecord& t) {
  if (t.id.empty()) return "tenant id must not be empty";
  if (t.id.size() > 128) return "tenant id longer than 128 characters";
  // Ids go into logs, audit details, CSV exports and URLs: letters, digits and . _ - : @ only,
  // starting with a letter or digit (a leading = + - @ is a formula to a spreadsheet).
  if (!std::isalnum(static_cast<unsigned char>(t.id.front())) ||
      t.id.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:@") !=
          std::string::npos) {
    return "tenant id '" + t.id +
           "' must start with a letter or digit and hold only letters, digits and . _ - : @";
  }
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
  if (!std::isfinite(t.budget_usd) || std::signbit(t.budget_usd)) {
    return "budget must be a sum >= 0";
  }
  for (const auto& j : t.jurisdictions) {
    if (j.empty() || j.size() > 64 ||
        std::any_of(j.begin(), j.end(),
                    [](char c) { return c == ',' || std::iscntrl(static_cast<unsigned char>(c)); })) {
      return "jurisdiction '" + j + "' must be 1 to 64 characters, with no ',' or control character";
    }
  }
  return std::nullopt;
}

}  // namespace powerplane::store
