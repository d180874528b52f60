#include "sim/trace.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>

#include "grid/time.h"

namespace powerplane::sim {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

void Split(std::string_view line, std::vector<std::string_view>* out) {
  out->clear();
  std::size_t pos = 0;
  for (;;) {
    const std::size_t comma = line.find(',', pos);
    out->push_back(Trim(line.substr(pos, comma == std::string_view::npos ? line.npos
                                                                         : comma - pos)));
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
}

// Iterates non-blank lines with 1-based line numbers; skips a UTF-8 byte-order mark.
class Lines {
 public:
  explicit Lines(std::string_view text) : rest_(text) {
    if (rest_.starts_with("\xEF\xBB\xBF")) rest_.remove_prefix(3);
  }
  bool Next(std::string_view* line) {
    while (!rest_.empty()) {
      const std::size_t nl = rest_.find('\n');
      *line = rest_.substr(0, nl);
      rest_ = nl == std::string_view::npos ? std::string_view() : rest_.substr(nl + 1);
      ++number_;
      if (!Trim(*line).empty()) return true;
    }
    return false;
  }
  int number() const { return number_; }

 private:
  std::string_view rest_;
  int number_ = 0;
};

std::unexpected<std::string> Fail(std::string_view name, int line, const std::string& what) {
  return std::unexpected(std::string(name) + ":" + std::to_string(line) + ": " + what);
}

bool ParseInt(std::string_view s, int* out) {
  const auto r = std::from_chars(s.data(), s.data() + s.size(), *out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

bool ParseDouble(std::string_view s, double* out) {
  const auto r = std::from_chars(s.data(), s.data() + s.size(), *out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size() && std::isfinite(*out);
}

// Seconds since the epoch with the fraction kept (ParseUtcTimestamp drops it).
bool ParseTimestampSeconds(std::string_view s, double* out) {
  std::string_view whole = s, zone;
  double fraction = 0;
  const std::size_t dot = s.find('.');
  if (dot != std::string_view::npos) {
    std::size_t end = dot + 1;
    while (end < s.size() && s[end] >= '0' && s[end] <= '9') ++end;
    if (end == dot + 1) return false;
    std::string digits = "0";
    digits.append(s.substr(dot, end - dot));
    if (!ParseDouble(digits, &fraction)) return false;
    whole = s.substr(0, dot);
    zone = s.substr(end);
  }
  const auto t = grid::ParseUtcTimestamp(std::string(whole) + std::string(zone));
  if (!t) return false;
  *out = static_cast<double>(t->time_since_epoch().count()) + fraction;
  return true;
}

int FindColumn(const std::vector<std::string_view>& header, std::string_view name) {
  for (std::size_t i = 0; i < header.size(); ++i) {
    if (header[i] == name) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace

double Trace::MeanRateRps() const {
  if (requests.size() < 2 || span_s <= 0) return 0;
  return static_cast<double>(requests.size() - 1) / span_s;
}

std::expected<Trace, std::string> ParseAzureTrace(std::string_view text, std::string_view name) {
  Lines lines(text);
  std::string_view line;
  std::vector<std::string_view> fields;
  if (!lines.Next(&line)) return Fail(name, 1, "empty file (want a header)");
  Split(line, &fields);
  const int ts = FindColumn(fields, "TIMESTAMP");
  const int ctx = FindColumn(fields, "ContextTokens");
  const int gen = FindColumn(fields, "GeneratedTokens");
  if (ts < 0 || ctx < 0 || gen < 0) {
    return Fail(name, lines.number(),
                "header must name TIMESTAMP, ContextTokens and GeneratedTokens");
  }
  const std::size_t width = fields.size();
  std::vector<double> times;
  Trace trace;
  trace.name = std::string(name);
  while (lines.Next(&line)) {
    Split(line, &fields);
    if (fields.size() != width) {
      return Fail(name, lines.number(),
                  "want " + std::to_string(width) + " fields, got " + std::to_string(fields.size()));
    }
    double t = 0;
    TraceRequest r;
    if (!ParseTimestampSeconds(fields[ts], &t)) {
      return Fail(name, lines.number(), "bad TIMESTAMP '" + std::string(fields[ts].substr(0, 40)) +
                                            "'");
    }
    if (!ParseInt(fields[ctx], &r.prompt_tokens) || r.prompt_tokens < 0) {
      return Fail(name, lines.number(), "ContextTokens must be an integer >= 0");
    }
    if (!ParseInt(fields[gen], &r.output_tokens) || r.output_tokens < 1) {
      return Fail(name, lines.number(), "GeneratedTokens must be an integer >= 1");
    }
    r.offset_s = t;
    trace.requests.push_back(r);
  }
  if (trace.requests.empty()) return Fail(name, lines.number(), "no requests after the header");
  std::stable_sort(trace.requests.begin(), trace.requests.end(),
                   [](const TraceRequest& a, const TraceRequest& b) {
                     return a.offset_s < b.offset_s;
                   });
  const double t0 = trace.requests.front().offset_s;
  double prompt = 0, output = 0;
  for (auto& r : trace.requests) {
    r.offset_s -= t0;
    prompt += r.prompt_tokens;
    output += r.output_tokens;
  }
  trace.span_s = trace.requests.back().offset_s;
  trace.mean_prompt_tokens = prompt / static_cast<double>(trace.requests.size());
  trace.mean_output_tokens = output / static_cast<double>(trace.requests.size());
  return trace;
}

std::expected<std::string, std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::unexpected(path + ": cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::expected<Trace, std::string> LoadAzureTrace(const std::string& path) {
  auto text = ReadTextFile(path);
  if (!text) return std::unexpected(text.error());
  return ParseAzureTrace(*text, path);
}

std::size_t RateCurve::IndexAt(double t_s) const {
  const auto it = std::upper_bound(start_s.begin(), start_s.end(), t_s);
  return it == start_s.begin() ? 0 : static_cast<std::size_t>(it - start_s.begin() - 1);
}

double RateCurve::RateAt(double t_s) const {
  if (start_s.empty() || span_s <= 0) return 0;
  const double w = std::fmod(std::max(0.0, t_s), span_s);
  return rate_rps[IndexAt(w)];
}

double RateCurve::MeanRate(double from_s, double to_s) const {
  if (start_s.empty() || to_s <= from_s) return RateAt(from_s);
  double integral = 0;
  double t = from_s;
  while (t < to_s) {
    const double w = std::fmod(t, span_s);
    const std::size_t i = IndexAt(w);
    const double end_w = i + 1 < start_s.size() ? start_s[i + 1] : span_s;
    const double step = std::min(end_w - w, to_s - t);
    integral += rate_rps[i] * step;
    t += step > 0 ? step : 1e-9;
  }
  return integral / (to_s - from_s);
}

std::expected<RateCurve, std::string> ParseRateCurve(std::string_view text, std::string_view name) {
  Lines lines(text);
  std::string_view line;
  std::vector<std::string_view> fields;
  if (!lines.Next(&line)) return Fail(name, 1, "empty file (want a header)");
  Split(line, &fields);
  const int ts = FindColumn(fields, "timestamp_s");
  const int rate = FindColumn(fields, "total_rate_rps");
  if (ts < 0 || rate < 0) {
    return Fail(name, lines.number(), "header must name timestamp_s and total_rate_rps");
  }
  const std::size_t width = fields.size();
  RateCurve curve;
  curve.name = std::string(name);
  while (lines.Next(&line)) {
    Split(line, &fields);
    if (fields.size() != width) {
      return Fail(name, lines.number(),
                  "want " + std::to_string(width) + " fields, got " + std::to_string(fields.size()));
    }
    double t = 0, r = 0;
    if (!ParseDouble(fields[ts], &t)) return Fail(name, lines.number(), "bad timestamp_s");
    if (!ParseDouble(fields[rate], &r) || r < 0) {
      return Fail(name, lines.number(), "total_rate_rps must be a number >= 0");
    }
    if (!curve.start_s.empty() && t <= curve.start_s.back()) {
      return Fail(name, lines.number(), "timestamp_s must increase");
    }
    curve.start_s.push_back(t);
    curve.rate_rps.push_back(r);
  }
  if (curve.start_s.empty()) return Fail(name, lines.number(), "no rows after the header");
  const double t0 = curve.start_s.front();
  for (double& t : curve.start_s) t -= t0;
  std::vector<double> gaps;
  for (std::size_t i = 1; i < curve.start_s.size(); ++i) {
    gaps.push_back(curve.start_s[i] - curve.start_s[i - 1]);
  }
  double last = 600;
  if (!gaps.empty()) {
    std::nth_element(gaps.begin(), gaps.begin() + gaps.size() / 2, gaps.end());
    last = gaps[gaps.size() / 2];
  }
  curve.span_s = curve.start_s.back() + last;
  return curve;
}

std::expected<RateCurve, std::string> LoadRateCurve(const std::string& path) {
  auto text = ReadTextFile(path);
  if (!text) return std::unexpected(text.error());
  return ParseRateCurve(*text, path);
}

}  // namespace powerplane::sim
