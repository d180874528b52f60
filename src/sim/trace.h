#pragma once
// Trace readers for the twin: LLM request traces in the Azure schema and request-rate curves.
// Parsers are pure (text in, values out); loaders read a file and call them. Malformed input is
// answered with a message "file:line: what is wrong"; nothing throws.

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>
#include <vector>

namespace powerplane::sim {

// One request of a trace. `offset_s` is seconds since the trace's first request.
struct TraceRequest {
  double offset_s = 0;
  int prompt_tokens = 0;
  int output_tokens = 1;
};

struct Trace {
  std::string name;                    // file name, for reports.
  std::vector<TraceRequest> requests;  // sorted by offset_s.
  double span_s = 0;                   // last offset (0 for one request).
  double mean_prompt_tokens = 0;
  double mean_output_tokens = 0;
  // Mean request rate over the trace: (n - 1) / span_s, or 0 when undefined.
  double MeanRateRps() const;
};

// Azure LLM inference trace: header `TIMESTAMP,ContextTokens,GeneratedTokens` (column order is
// free; other columns are ignored). TIMESTAMP is `YYYY-MM-DD HH:MM:SS[.fraction]` (or ISO 8601 with
// T/Z); only differences between rows are used. Rows are sorted by time if they are not. Output
// tokens must be at least 1, prompt tokens at least 0.
std::expected<Trace, std::string> ParseAzureTrace(std::string_view text, std::string_view name);
std::expected<Trace, std::string> LoadAzureTrace(const std::string& path);

// A request-rate curve: header with `timestamp_s` and `total_rate_rps` (other columns ignored).
// Point i holds from timestamp_s[i] until the next point; the last holds for the median spacing.
struct RateCurve {
  std::string name;
  std::vector<double> start_s;  // ascending, first is 0 (shifted so).
  std::vector<double> rate_rps;
  double span_s = 0;  // total length the curve covers.
  // The rate at `t_s` seconds from the curve's start, wrapping around after span_s.
  double RateAt(double t_s) const;
  // Mean rate over [from_s, to_s) (wrapping), time-weighted.
  double MeanRate(double from_s, double to_s) const;
  // Index of the point holding at t (t already wrapped into [0, span_s)).
  std::size_t IndexAt(double t_s) const;
};

std::expected<RateCurve, std::string> ParseRateCurve(std::string_view text, std::string_view name);
std::expected<RateCurve, std::string> LoadRateCurve(const std::string& path);

// Reads a whole file; the error names the file.
std::expected<std::string, std::string> ReadTextFile(const std::string& path);

}  // namespace powerplane::sim
