#include "sim/grid_events.h"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>

#include "grid/time.h"

namespace powerplane::sim {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

std::vector<std::string_view> Split(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t pos = 0;
  for (;;) {
    const std::size_t comma = line.find(',', pos);
    out.push_back(
        Trim(line.substr(pos, comma == std::string_view::npos ? line.npos : comma - pos)));
    if (comma == std::string_view::npos) return out;
    pos = comma + 1;
  }
}

bool ParseNumber(std::string_view text, double* out) {
  const auto r = std::from_chars(text.data(), text.data() + text.size(), *out);
  return !text.empty() && r.ec == std::errc() && r.ptr == text.data() + text.size();
}

}  // namespace

std::expected<std::vector<core::GridEvent>, std::string> ParseGridEventsCsv(
    std::string_view text, std::string_view file_name, std::span<const core::Site> sites) {
  std::vector<core::GridEvent> events;
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);
  int line_no = 0;
  bool header_seen = false;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    const std::string_view line = Trim(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++line_no;
    if (line.empty() || line.front() == '#') continue;
    auto fail = [&](const std::string& what) {
      return std::unexpected(std::string(file_name) + ":" + std::to_string(line_no) + ": " + what);
    };
    const std::vector<std::string_view> f = Split(line);
    if (!header_seen) {
      if (line != "site,start_utc,duration_s,target_kw,ramp_s") {
        return fail("want the header 'site,start_utc,duration_s,target_kw,ramp_s'");
      }
      header_seen = true;
      continue;
    }
    if (f.size() != 5) return fail("want 5 fields, got " + std::to_string(f.size()));
    core::GridEvent e;
    e.id = std::string(file_name) + ":" + std::to_string(line_no);
    e.source = "sim";
    e.site = std::string(f[0]);
    if (std::none_of(sites.begin(), sites.end(),
                     [&](const core::Site& s) { return s.id == e.site; })) {
      return fail("no site '" + e.site + "' in the fleet");
    }
    auto start = grid::ParseUtcTimestamp(f[1]);
    if (!start) return fail("start_utc '" + std::string(f[1]) + "': " + start.error());
    e.start_s = start->time_since_epoch().count();
    double duration = 0, target = 0, ramp = 0;
    if (!ParseNumber(f[2], &duration) || duration <= 0) {
      return fail("duration_s '" + std::string(f[2]) + "': want seconds > 0");
    }
    if (!ParseNumber(f[3], &target) || target < 0) {
      return fail("target_kw '" + std::string(f[3]) + "': want kW >= 0");
    }
    if (!ParseNumber(f[4], &ramp) || ramp < 0) {
      return fail("ramp_s '" + std::string(f[4]) + "': want seconds >= 0");
    }
    e.duration_s = static_cast<std::int64_t>(duration);
    e.target_kw = target;
    e.ramp_s = static_cast<std::int64_t>(ramp);
    events.push_back(std::move(e));
  }
  if (!header_seen) {
    return std::unexpected(
        std::string(file_name) +
        ":1: empty; want the header 'site,start_utc,duration_s,target_kw,ramp_s'");
  }
  return events;
}

std::expected<std::vector<core::GridEvent>, std::string> LoadGridEventsCsv(
    const std::string& path, std::span<const core::Site> sites) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::unexpected(path + ": cannot read");
  std::ostringstream text;
  text << in.rdbuf();
  return ParseGridEventsCsv(text.str(), path, sites);
}

}  // namespace powerplane::sim
