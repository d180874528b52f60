#include "gateway/admin_parse.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>

#include "grid/time.h"

namespace powerplane::gateway {
using json = nlohmann::json;

namespace {

// The fields of a tenant's JSON (TenantFromJson, TenantToJson).
constexpr std::string_view kTenantFields[] = {
    "id",  "jurisdictions", "class",      "latency_target_ms",
    "rpm", "tpm",           "budget_usd", "budget_period"};
constexpr const char* kTenantFieldList =
    "id, jurisdictions, class, latency_target_ms, rpm, tpm, budget_usd, budget_period";

// The whole number `v` holds, when it is one within [lo, hi]: an integer, or a float with no
// fraction (60000.0). Checked before any conversion: nlohmann's get<int64_t> of 1e300 or of
// 2^64 - 1 would not fit.
std::expected<std::int64_t, std::string> WholeNumber(const json& v, std::string_view name,
                                                     std::int64_t lo, std::int64_t hi) {
  const auto out_of_range = [&] {
    return std::unexpected(std::string(name) + ": must be a whole number from " +
                           std::to_string(lo) + " to " + std::to_string(hi));
  };
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(hi)) return out_of_range();
    const auto n = static_cast<std::int64_t>(u);
    if (n < lo) return out_of_range();
    return n;
  }
  if (v.is_number_integer()) {
    const auto n = v.get<std::int64_t>();
    if (n < lo || n > hi) return out_of_range();
    return n;
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    // Bounds of 2^53 and less are exact as doubles, so the compares below mean what they say
    // and the cast that follows them fits.
    if (!std::isfinite(d) || d != std::floor(d) || d < static_cast<double>(lo) ||
        d > static_cast<double>(hi)) {
      return out_of_range();
    }
    return static_cast<std::int64_t>(d);
  }
  return std::unexpected(std::string(name) + ": must be a number");
}

// `body` as a JSON object; the parser's own words when it is not JSON (a number too large for a
// double, 1e400, is refused here).
std::expected<json, std::string> ParseObject(std::string_view body) {
  json j;
  // A key given twice is refused, not read as its last value (which one a client meant is
  // anyone's guess).
  std::vector<std::vector<std::string>> keys;  // of each object being read.
  std::string twice;
  const json::parser_callback_t note_keys = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (event == json::parse_event_t::object_end && !keys.empty()) {
      keys.pop_back();
    } else if (event == json::parse_event_t::key && !keys.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      auto& seen = keys.back();
      if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
        if (twice.empty()) twice = key;
      } else {
        seen.push_back(key);
      }
    }
    return true;
  };
  try {
    j = json::parse(body, note_keys);
  } catch (const json::exception& e) {
    return std::unexpected(std::string("body is not JSON: ") + e.what());
  }
  if (!twice.empty()) return std::unexpected("'" + twice + "' is given twice");
  if (!j.is_object()) return std::unexpected("body must be a JSON object");
  return j;
}

// The member `name` of object `j` when present (and not null).
const json* Member(const json& j, const char* name) {
  const auto it = j.find(name);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

std::expected<std::string, std::string> StringMember(const json& j, const char* name) {
  const json* v = Member(j, name);
  if (v == nullptr || !v->is_string()) {
    return std::unexpected(std::string(name) + ": must be a string");
  }
  return v->get<std::string>();
}

// The value of a hex digit, either case (RFC 3986, 2.1); -1 for any other byte.
int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// `raw` (the value of query parameter `name`) decoded as application/x-www-form-urlencoded:
// "%XX" is the byte XX and '+' a space. A '%' without two hex digits after it is refused, and so
// is an escaped control character.
std::expected<std::string, std::string> FormDecoded(std::string_view raw, std::string_view name) {
  std::string value;
  value.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] == '+') {
      value += ' ';
    } else if (raw[i] != '%') {
      value += raw[i];
    } else {
      const int high = i + 1 < raw.size() ? HexDigit(raw[i + 1]) : -1;
      const int low = i + 2 < raw.size() ? HexDigit(raw[i + 2]) : -1;
      if (high < 0 || low < 0) {
        return std::unexpected(std::string(name) + ": '%' must be followed by two hex digits");
      }
      const int byte = high * 16 + low;
      // No id or timestamp holds one, and a NUL would not reach a store query intact.
      if (byte < 0x20 || byte == 0x7f) {
        return std::unexpected(std::string(name) + ": must not hold control characters");
      }
      value += static_cast<char>(byte);
      i += 2;
    }
  }
  return value;
}

}  // namespace

std::expected<std::string, std::string> QueryParam(std::string_view target, std::string_view name) {
  const auto q = target.find('?');
  if (q == std::string_view::npos) return std::string();
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    const auto eq = pair.find('=');
    if (pair.substr(0, eq) == name && eq != std::string_view::npos) {
      return FormDecoded(pair.substr(eq + 1), name);
    }
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return std::string();
}

std::optional<std::string> UnknownQueryParam(std::string_view target,
                                             std::span<const std::string_view> known) {
  const auto q = target.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    const std::string_view name = pair.substr(0, pair.find('='));
    if (!name.empty() && std::find(known.begin(), known.end(), name) == known.end()) {
      std::string names;
      for (const auto k : known) names += (names.empty() ? "" : ", ") + std::string(k);
      return "unknown query parameter '" + std::string(name) + "' (it takes " + names + ")";
    }
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

std::expected<std::int64_t, std::string> TimeParam(std::string_view target, std::string_view name,
                                                   std::int64_t fallback) {
  const auto param = QueryParam(target, name);
  if (!param) return std::unexpected(param.error());
  const std::string& v = *param;
  if (v.empty()) return fallback;
  std::int64_t ms = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), ms);
  if (ec == std::errc() && end == v.data() + v.size()) {
    // Unix time in seconds read as milliseconds would be early 1970: refused, not misread.
    if (ms > 0 && ms < kMinUnixMs) {
      return std::unexpected(std::string(name) + ": " + v +
                             " would be in 1970 or 1971 as Unix milliseconds (the unit here); "
                             "for seconds multiply by 1000, or send an ISO 8601 time");
    }
    return ms;
  }
  // The '+' of an offset sent unescaped ("2026-11-01T12:00:00+01:00") was decoded as a space;
  // after a 'T' time no timestamp has a space there, so it is read as the '+' it was.
  std::string stamp = v;
  const std::size_t sign = stamp.size() - 6;
  if (stamp.size() > 17 && stamp[10] == 'T' && stamp[sign] == ' ' && stamp[sign + 3] == ':') {
    stamp[sign] = '+';
  }
  auto t = grid::ParseUtcTimestamp(stamp);
  if (!t) return std::unexpected(std::string(name) + ": " + t.error());
  return std::chrono::duration_cast<std::chrono::milliseconds>(t->time_since_epoch()).count();
}

std::expected<store::TenantRecord, std::string> TenantFromJson(std::string_view body,
                                                               const store::TenantRecord* base) {
  const auto parsed = ParseObject(body);
  if (!parsed) return std::unexpected(parsed.error());
  const json& j = *parsed;
  for (const auto& [key, value] : j.items()) {
    if (std::find(std::begin(kTenantFields), std::end(kTenantFields), key) ==
        std::end(kTenantFields)) {
      return std::unexpected("unknown field '" + key + "' (a tenant has " + kTenantFieldList + ")");
    }
  }
  store::TenantRecord t = base ? *base : store::TenantRecord{};
  auto id = StringMember(j, "id");
  if (!id) return std::unexpected("id: a string is required");
  t.id = std::move(*id);
  if (const json* v = Member(j, "jurisdictions")) {
    if (!v->is_array()) return std::unexpected("jurisdictions: must be a list of strings");
    t.jurisdictions.clear();
    for (const auto& e : *v) {
      if (!e.is_string()) return std::unexpected("jurisdictions: must be a list of strings");
      t.jurisdictions.push_back(e.get<std::string>());
    }
  }
  for (const auto& [name, to] :
       {std::pair{"class", &t.priority_class}, std::pair{"budget_period", &t.budget_period}}) {
    if (Member(j, name) == nullptr) continue;
    auto s = StringMember(j, name);
    if (!s) return std::unexpected(s.error());
    *to = std::move(*s);
  }
  const struct {
    const char* name;
    std::int64_t* to;
    std::int64_t max;
  } whole[] = {{"latency_target_ms", &t.latency_target_ms, kMaxLatencyTargetMs},
               {"rpm", &t.rpm, kMaxPerMinute},
               {"tpm", &t.tpm, kMaxPerMinute}};
  for (const auto& w : whole) {
    const json* v = Member(j, w.name);
    if (v == nullptr) continue;
    auto n = WholeNumber(*v, w.name, 0, w.max);
    if (!n) return std::unexpected(n.error());
    *w.to = *n;
  }
  if (const json* v = Member(j, "budget_usd")) {
    if (!v->is_number()) return std::unexpected("budget_usd: must be a number");
    t.budget_usd = v->get<double>();
  }
  if (auto err = store::TenantError(t)) return std::unexpected(*err);
  return t;
}

std::string AuditDetail(
    std::initializer_list<std::pair<std::string_view, std::string_view>> fields) {
  // ordered_json keeps the fields in the order given.
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& [name, value] : fields) j[std::string(name)] = std::string(value);
  return j.dump();
}

std::string TenantToJson(const store::TenantRecord& t) {
  return json{{"id", t.id},
              {"jurisdictions", t.jurisdictions},
              {"class", t.priority_class},
              {"latency_target_ms", t.latency_target_ms},
              {"rpm", t.rpm},
              {"tpm", t.tpm},
              {"budget_usd", t.budget_usd},
              {"budget_period", t.budget_period}}
      .dump();
}

std::expected<core::GridEvent, std::string> GridEventFromJson(
    std::string_view body, const std::function<bool(std::string_view)>& site_known,
    std::int64_t now_s) {
  const auto parsed = ParseObject(body);
  if (!parsed) return std::unexpected(parsed.error());
  const json& j = *parsed;
  core::GridEvent e;
  e.source = "admin";
  auto site = StringMember(j, "site");
  if (!site) return std::unexpected("'site' is required");
  e.site = std::move(*site);
  if (!site_known(e.site)) return std::unexpected("unknown site '" + e.site + "'");
  const json* target = Member(j, "target_kw");
  if (target == nullptr || !target->is_number()) {
    return std::unexpected("'target_kw' is required (a number)");
  }
  e.target_kw = target->get<double>();
  if (!std::isfinite(e.target_kw) || e.target_kw < 0) {
    return std::unexpected("'target_kw' must be a finite number >= 0");
  }
  e.start_s = now_s;
  if (const json* start = Member(j, "start")) {
    if (start->is_number()) {
      auto s = WholeNumber(*start, "start", 0, kMaxEpochSeconds);
      if (!s) return std::unexpected(s.error());
      e.start_s = *s;
    } else if (start->is_string()) {
      auto t = grid::ParseUtcTimestamp(start->get<std::string>());
      if (!t) return std::unexpected("'start': " + t.error());
      e.start_s = t->time_since_epoch().count();
      if (e.start_s < 0 || e.start_s > kMaxEpochSeconds) {
        return std::unexpected("'start' must be from 1970 to 9999");
      }
    } else {
      return std::unexpected("'start' must be ISO 8601 or epoch seconds");
    }
  }
  e.duration_s = 3600;
  e.ramp_s = 10;
  for (const auto& [name, to] :
       {std::pair{"duration_s", &e.duration_s}, std::pair{"ramp_s", &e.ramp_s}}) {
    const json* v = Member(j, name);
    if (v == nullptr) continue;
    auto n = WholeNumber(*v, name, 0, kMaxEventSeconds);
    if (!n) return std::unexpected(n.error());
    *to = *n;
  }
  if (const json* id = Member(j, "id"); id != nullptr && id->is_string()) {
    e.id = id->get<std::string>();
  }
  return e;
}

std::expected<double, std::string> HashpriceFromJson(std::string_view body) {
  const auto parsed = ParseObject(body);
  if (!parsed) return std::unexpected(parsed.error());
  const json* v = parsed->size() == 1 ? Member(*parsed, "usd_per_ph_day") : nullptr;
  if (v == nullptr || !v->is_number() || !std::isfinite(v->get<double>()) ||
      v->get<double>() < 0) {
    return std::unexpected("body must be {\"usd_per_ph_day\": number >= 0} and nothing else");
  }
  return v->get<double>();
}

std::expected<double, std::string> SitePriceFromJson(std::string_view body) {
  const auto parsed = ParseObject(body);
  if (!parsed) return std::unexpected(parsed.error());
  const json* v = parsed->size() == 1 ? Member(*parsed, "usd_per_mwh") : nullptr;
  if (v == nullptr || !v->is_number()) {
    return std::unexpected("body must be {\"usd_per_mwh\": number} and nothing else");
  }
  const double price = v->get<double>();
  if (!std::isfinite(price) || price < -10000 || price > 100000) {
    return std::unexpected("usd_per_mwh must be between -10000 and 100000");
  }
  return price;
}

}  // namespace powerplane::gateway
