#include "openadr/events.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "grid/time.h"

namespace powerplane::openadr {
namespace {

using Json = nlohmann::json;

constexpr std::size_t kMaxErrors = 8;
constexpr std::size_t kMaxNameChars = 128;  // the spec's maxLength for ids, targets, names.

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// An id or name fit for an error message: bounded, printable.
std::string Printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 64)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (s.size() > 64) out += "...";
  return out;
}

// The member `key` of `obj`, or nullptr when absent or null (the spec's "nullable" fields).
const Json* Member(const Json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

std::expected<std::string, std::string> Name(const Json& value, const std::string& what) {
  if (!value.is_string()) return std::unexpected(what + " is not a string");
  const auto& s = value.get_ref<const std::string&>();
  if (s.empty() || s.size() > kMaxNameChars) {
    return std::unexpected(what + " must have 1 to 128 characters");
  }
  return s;
}

struct Period {
  std::optional<std::int64_t> start_s;
  std::optional<std::int64_t> duration_s;
};

std::expected<Period, std::string> ParsePeriod(const Json* value, const std::string& what,
                                               std::int64_t now_s) {
  Period p;
  if (value == nullptr) return p;
  if (!value->is_object()) return std::unexpected(what + " is not an object");
  if (const Json* start = Member(*value, "start")) {
    if (!start->is_string()) return std::unexpected(what + ".start is not a string");
    auto t = grid::ParseUtcTimestamp(start->get_ref<const std::string&>());
    if (!t) return std::unexpected(what + ".start: " + t.error());
    // The spec's "0001-01-01" means now.
    const grid::UtcTime kNow{std::chrono::sys_days{std::chrono::year{1} / 1 / 1}};
    p.start_s = *t == kNow ? now_s : t->time_since_epoch().count();
  }
  if (const Json* duration = Member(*value, "duration")) {
    if (!duration->is_string()) return std::unexpected(what + ".duration is not a string");
    auto d = ParseIsoDuration(duration->get_ref<const std::string&>());
    if (!d) return std::unexpected(what + ".duration: " + d.error());
    if (*d < 0) return std::unexpected(what + ".duration is negative");
    p.duration_s = *d;
  }
  return p;
}

// kW per unit of the event's IMPORT_CAPACITY_LIMIT values, from its payloadDescriptors.
std::expected<double, std::string> CapacityScale(const Json& event) {
  const Json* descriptors = Member(event, "payloadDescriptors");
  if (descriptors == nullptr) return 1.0;
  if (!descriptors->is_array()) return std::unexpected("payloadDescriptors is not an array");
  for (const Json& d : *descriptors) {
    if (!d.is_object()) continue;
    const Json* type = Member(d, "payloadType");
    if (type == nullptr || !type->is_string() || *type != kImportCapacityLimit) continue;
    const Json* units = Member(d, "units");
    if (units == nullptr) return 1.0;
    if (!units->is_string()) return std::unexpected("payloadDescriptors units is not a string");
    std::string u = units->get<std::string>();
    std::transform(u.begin(), u.end(), u.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    if (u == "KW") return 1.0;
    if (u == "MW") return 1000.0;
    if (u == "W") return 0.001;
    return std::unexpected("unsupported IMPORT_CAPACITY_LIMIT units \"" + Printable(u) + "\"");
  }
  return 1.0;
}

// The sites an event targets: 3.1's plain strings, 3.0's {type: RESOURCE_NAME|VEN_NAME, values}.
std::expected<std::vector<std::string>, std::string> Targets(const Json& event) {
  std::vector<std::string> sites;
  auto add = [&sites](std::string s) {
    if (std::find(sites.begin(), sites.end(), s) == sites.end()) sites.push_back(std::move(s));
  };
  const Json* targets = Member(event, "targets");
  if (targets == nullptr) return sites;
  if (!targets->is_array()) return std::unexpected("targets is not an array");
  for (std::size_t i = 0; i < targets->size(); ++i) {
    const Json& t = (*targets)[i];
    const std::string what = "targets[" + std::to_string(i) + "]";
    if (t.is_string()) {
      auto name = Name(t, what);
      if (!name) return std::unexpected(name.error());
      add(std::move(*name));
      continue;
    }
    if (!t.is_object()) return std::unexpected(what + " is neither a string nor {type, values}");
    const Json* type = Member(t, "type");
    if (type == nullptr || !type->is_string()) return std::unexpected(what + ".type is missing");
    const Json* values = Member(t, "values");
    if (values != nullptr && !values->is_array()) {
      return std::unexpected(what + ".values is not an array");
    }
    if (*type != "RESOURCE_NAME" && *type != "VEN_NAME") continue;  // groups etc.: not a site.
    if (values == nullptr) continue;
    for (std::size_t j = 0; j < values->size(); ++j) {
      auto name = Name((*values)[j], what + ".values[" + std::to_string(j) + "]");
      if (!name) return std::unexpected(name.error());
      add(std::move(*name));
    }
  }
  return sites;
}

struct Limit {
  std::int64_t interval_id = 0;
  std::int64_t start_s = 0;
  std::int64_t duration_s = 0;
  double kw = 0;
};

// The capacity limit of one interval, if it has one.
std::expected<std::optional<double>, std::string> IntervalLimit(const Json& interval,
                                                                const std::string& what) {
  const Json* payloads = Member(interval, "payloads");
  if (payloads == nullptr) return std::unexpected(what + ".payloads is missing");
  if (!payloads->is_array()) return std::unexpected(what + ".payloads is not an array");
  std::optional<double> limit;
  for (std::size_t i = 0; i < payloads->size(); ++i) {
    const Json& p = (*payloads)[i];
    const std::string pw = what + ".payloads[" + std::to_string(i) + "]";
    if (!p.is_object()) return std::unexpected(pw + " is not an object");
    const Json* type = Member(p, "type");
    if (type == nullptr || !type->is_string()) return std::unexpected(pw + ".type is missing");
    if (*type != kImportCapacityLimit) continue;
    if (limit) return std::unexpected(what + " has two IMPORT_CAPACITY_LIMIT payloads");
    const Json* values = Member(p, "values");
    if (values == nullptr || !values->is_array() || values->empty()) {
      return std::unexpected(pw + ".values is not a non-empty array");
    }
    const Json& v = (*values)[0];
    if (!v.is_number()) return std::unexpected(pw + ".values[0] is not a number");
    const double kw = v.get<double>();
    if (!std::isfinite(kw) || kw < 0) {
      return std::unexpected(pw + ".values[0] is not a finite, non-negative number");
    }
    limit = kw;
  }
  return limit;
}

std::expected<std::vector<Limit>, std::string> Intervals(const Json& event,
                                                         const ParseOptions& options) {
  auto period = ParsePeriod(Member(event, "intervalPeriod"), "intervalPeriod", options.now_s);
  if (!period) return std::unexpected(period.error());
  std::vector<Limit> limits;
  const Json* intervals = Member(event, "intervals");
  if (intervals == nullptr) return limits;
  if (!intervals->is_array()) return std::unexpected("intervals is not an array");
  std::optional<std::int64_t> cursor = period->start_s;
  std::set<std::int64_t> ids;
  for (std::size_t i = 0; i < intervals->size(); ++i) {
    const Json& interval = (*intervals)[i];
    const std::string what = "intervals[" + std::to_string(i) + "]";
    if (!interval.is_object()) return std::unexpected(what + " is not an object");
    const Json* id = Member(interval, "id");
    if (id == nullptr || !id->is_number_integer()) {
      return std::unexpected(what + ".id is not an integer");
    }
    const std::int64_t id_value =
        id->is_number_unsigned()
            ? static_cast<std::int64_t>(std::min<std::uint64_t>(
                  id->get<std::uint64_t>(), std::numeric_limits<std::int64_t>::max()))
            : id->get<std::int64_t>();
    if (!ids.insert(id_value).second) {
      return std::unexpected(what + ".id " + std::to_string(id_value) + " is repeated");
    }
    auto own =
        ParsePeriod(Member(interval, "intervalPeriod"), what + ".intervalPeriod", options.now_s);
    if (!own) return std::unexpected(own.error());
    const std::optional<std::int64_t> start = own->start_s ? own->start_s : cursor;
    if (!start) {
      return std::unexpected(what + " has no start (no intervalPeriod.start on it or the event)");
    }
    const std::int64_t duration_s = own->duration_s.value_or(period->duration_s.value_or(0));
    cursor = *start + duration_s;  // both are bounded (years 0-9999, kMaxDurationS).
    auto kw = IntervalLimit(interval, what);
    if (!kw) return std::unexpected(kw.error());
    if (*kw) limits.push_back(Limit{id_value, *start, duration_s, **kw});
  }
  return limits;
}

enum class Outcome { kUsed, kIgnored };

std::expected<Outcome, std::string> ParseEvent(const Json& event, const ParseOptions& options,
                                               std::string* id_out, ParsedEvents* out) {
  if (!event.is_object()) return std::unexpected("not an object");
  const Json* id = Member(event, "id");
  if (id == nullptr) return std::unexpected("id is missing");
  auto event_id = Name(*id, "id");
  if (!event_id) return std::unexpected(event_id.error());
  *id_out = *event_id;
  const Json* program = Member(event, "programID");
  if (program == nullptr) return std::unexpected("programID is missing");
  auto program_id = Name(*program, "programID");
  if (!program_id) return std::unexpected(program_id.error());
  auto sites = Targets(event);
  if (!sites) return std::unexpected(sites.error());
  auto scale = CapacityScale(event);
  if (!scale) return std::unexpected(scale.error());
  auto limits = Intervals(event, options);
  if (!limits) return std::unexpected(limits.error());
  if (sites->empty() || limits->empty()) return Outcome::kIgnored;

  const std::size_t first = out->grid_events.size();
  for (const Limit& limit : *limits) {
    for (const std::string& site : *sites) {
      core::GridEvent g;
      g.id = *event_id + "/" + std::to_string(limit.interval_id);
      if (sites->size() > 1) g.id += "@" + site;
      g.site = site;
      g.target_kw = limit.kw * *scale;
      g.start_s = limit.start_s;
      g.duration_s = limit.duration_s >= kInfiniteDurationS ? 0 : limit.duration_s;
      g.ramp_s = std::max<std::int64_t>(0, options.default_ramp_s);
      if (g.duration_s > 0) g.ramp_s = std::min(g.ramp_s, g.duration_s);
      g.source = std::string(kSourceOpenAdr);
      out->grid_events.push_back(std::move(g));
    }
  }
  out->events.push_back(EventSummary{*event_id, *program_id, std::move(*sites), first,
                                     out->grid_events.size() - first});
  return Outcome::kUsed;
}

// Reads a run of digits at `pos` as a non-negative integer; nullopt when none or too many.
std::optional<std::int64_t> ReadNumber(std::string_view s, std::size_t& pos) {
  const std::size_t begin = pos;
  std::int64_t v = 0;
  while (pos < s.size() && IsDigit(s[pos])) {
    if (v > kMaxDurationS) return std::nullopt;  // long before it could overflow.
    v = v * 10 + (s[pos] - '0');
    ++pos;
  }
  if (pos == begin) return std::nullopt;
  return v;
}

}  // namespace

std::expected<std::int64_t, std::string> ParseIsoDuration(std::string_view text) {
  if (text.empty()) return std::unexpected("empty duration");
  std::size_t pos = 0;
  const bool negative = text[0] == '-';
  if (negative) ++pos;
  if (pos >= text.size() || text[pos] != 'P') {
    return std::unexpected("a duration starts with 'P' (like PT1H)");
  }
  ++pos;
  bool in_time = false;
  bool any = false;
  bool time_any = false;
  int last_rank = -1;
  std::int64_t total = 0;
  while (pos < text.size()) {
    if (text[pos] == 'T') {
      if (in_time) return std::unexpected("a second 'T' in the duration");
      in_time = true;
      ++pos;
      continue;
    }
    const std::size_t at = pos;
    auto value = ReadNumber(text, pos);
    if (!value) {
      if (pos < text.size() && IsDigit(text[pos])) {
        return std::unexpected("a number in the duration is too large");
      }
      return std::unexpected("unexpected '" + Printable(text.substr(at, 1)) + "' at position " +
                             std::to_string(at) + ", expected a number");
    }
    bool fraction = false;
    if (pos < text.size() && (text[pos] == '.' || text[pos] == ',')) {
      ++pos;
      const std::size_t digits = pos;
      while (pos < text.size() && IsDigit(text[pos])) ++pos;
      if (pos == digits) return std::unexpected("a decimal point without digits after it");
      fraction = true;
    }
    if (pos >= text.size()) {
      return std::unexpected("the number at position " + std::to_string(at) +
                             " has no designator (Y, M, W, D, H, M or S)");
    }
    const char d = text[pos++];
    int rank = -1;
    std::int64_t unit_s = 0;
    if (!in_time) {
      switch (d) {
        case 'Y':
          rank = 0;
          unit_s = 365 * 86400LL;
          break;
        case 'M':
          rank = 1;
          unit_s = 30 * 86400LL;
          break;
        case 'W':
          rank = 2;
          unit_s = 7 * 86400LL;
          break;
        case 'D':
          rank = 3;
          unit_s = 86400;
          break;
        default:
          break;
      }
    } else {
      switch (d) {
        case 'H':
          rank = 4;
          unit_s = 3600;
          break;
        case 'M':
          rank = 5;
          unit_s = 60;
          break;
        case 'S':
          rank = 6;
          unit_s = 1;
          break;
        default:
          break;
      }
    }
    if (rank < 0) {
      return std::unexpected(std::string("unexpected '") + Printable(std::string_view(&d, 1)) +
                             "' at position " + std::to_string(pos - 1) +
                             (in_time ? " (time designators are H, M, S)"
                                      : " (date designators are Y, M, W, D; time needs 'T')"));
    }
    if (rank <= last_rank) {
      return std::unexpected(std::string("designator '") + d + "' is out of order or repeated");
    }
    if (fraction && rank != 6) return std::unexpected("only seconds may have a fraction");
    last_rank = rank;
    if (*value > (kMaxDurationS - total) / unit_s) {
      return std::unexpected("the duration is too large (over 10000 years)");
    }
    total += *value * unit_s;
    any = true;
    time_any = time_any || in_time;
  }
  if (in_time && !time_any)
    return std::unexpected("'T' with no hours, minutes or seconds after it");
  if (!any) return std::unexpected("a duration needs at least one component (like PT0S)");
  return negative ? -total : total;
}

std::string FormatIsoDuration(std::int64_t seconds) {
  std::string out = seconds < 0 ? "-P" : "P";
  // Unsigned so that the most negative value has a magnitude too.
  std::uint64_t s =
      seconds < 0 ? 0 - static_cast<std::uint64_t>(seconds) : static_cast<std::uint64_t>(seconds);
  const std::uint64_t days = s / 86400, hours = s % 86400 / 3600, minutes = s % 3600 / 60;
  s %= 60;
  if (days > 0) out += std::to_string(days) + "D";
  if (hours == 0 && minutes == 0 && s == 0) return days > 0 ? out : out + "T0S";
  out += "T";
  if (hours > 0) out += std::to_string(hours) + "H";
  if (minutes > 0) out += std::to_string(minutes) + "M";
  if (s > 0) out += std::to_string(s) + "S";
  return out;
}

std::expected<ParsedEvents, std::string> ParseEvents(std::string_view json,
                                                     const ParseOptions& options) {
  Json doc;
  try {
    doc = Json::parse(json.begin(), json.end());
  } catch (const Json::exception& e) {
    return std::unexpected(std::string("events are not JSON: ") + e.what());
  }
  if (!doc.is_array()) return std::unexpected("events are not a JSON array");
  ParsedEvents out;
  for (std::size_t i = 0; i < doc.size(); ++i) {
    std::string id;
    auto outcome = ParseEvent(doc[i], options, &id, &out);
    if (outcome) {
      if (*outcome == Outcome::kIgnored) ++out.ignored_events;
      continue;
    }
    ++out.bad_events;
    if (!id.empty()) out.bad_event_ids.push_back(id);
    if (out.errors.size() < kMaxErrors) {
      out.errors.push_back("event " + std::to_string(i) +
                           (id.empty() ? "" : " (id \"" + Printable(id) + "\")") + ": " +
                           outcome.error());
    }
  }
  return out;
}

}  // namespace powerplane::openadr
