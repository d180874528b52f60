#include "sim/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace powerplane::sim {
namespace {

constexpr const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                                   "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};

std::string Fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// A polyline chart of several series over x = hours since start. Values may be negative; a NaN
// leaves a gap.
std::string LineChart(const std::string& y_label, const std::vector<std::string>& names,
                      const std::vector<std::vector<double>>& series, double x_step_h) {
  constexpr double kW = 760, kH = 220, kLeft = 60, kRight = 10, kTop = 20, kBottom = 30;
  double lo = 0, hi = 0;
  std::size_t n = 0;
  for (const auto& s : series) {
    n = std::max(n, s.size());
    for (double v : s) {
      if (std::isnan(v)) continue;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  if (hi <= lo) hi = lo + 1;
  const double span_h = std::max(x_step_h, static_cast<double>(n) * x_step_h);
  auto x = [&](double h) { return kLeft + (kW - kLeft - kRight) * h / span_h; };
  auto y = [&](double v) { return kTop + (kH - kTop - kBottom) * (hi - v) / (hi - lo); };
  std::string svg = "<svg xmlns='http://www.w3.org/2000/svg' width='" + Fmt("%.0f", kW) +
                    "' height='" + Fmt("%.0f", kH) + "' font-size='11' font-family='sans-serif'>";
  for (int i = 0; i <= 4; ++i) {
    const double v = lo + (hi - lo) * i / 4;
    svg += "<line x1='" + Fmt("%.1f", kLeft) + "' x2='" + Fmt("%.1f", kW - kRight) + "' y1='" +
           Fmt("%.1f", y(v)) + "' y2='" + Fmt("%.1f", y(v)) + "' stroke='#ddd'/>";
    svg += "<text x='2' y='" + Fmt("%.1f", y(v) + 4) + "'>" + Fmt("%.4g", v) + "</text>";
  }
  const double tick_h = span_h > 72 ? 24 : (span_h > 12 ? 6 : 1);
  for (double h = 0; h <= span_h; h += tick_h) {
    svg += "<text x='" + Fmt("%.1f", x(h) - 8) + "' y='" + Fmt("%.1f", kH - 10) + "'>" +
           Fmt("%.0fh", h) + "</text>";
  }
  svg += "<text x='" + Fmt("%.1f", kLeft) + "' y='12'>" + Escape(y_label) + "</text>";
  for (std::size_t k = 0; k < series.size(); ++k) {
    const char* color = kColors[k % std::size(kColors)];
    std::string pts;
    auto flush = [&] {
      if (!pts.empty()) {
        svg += "<polyline fill='none' stroke-width='1.3' stroke='" + std::string(color) +
               "' points='" + pts + "'/>";
      }
      pts.clear();
    };
    for (std::size_t i = 0; i < series[k].size(); ++i) {
      if (std::isnan(series[k][i])) {
        flush();
        continue;
      }
      pts += Fmt("%.1f", x(static_cast<double>(i) * x_step_h)) + "," +
             Fmt("%.1f", y(series[k][i])) + " ";
    }
    flush();
    svg += "<text x='" + Fmt("%.1f", kLeft + 10 + 115.0 * static_cast<double>(k)) +
           "' y='" + Fmt("%.1f", kTop + 10) + "' fill='" + color + "'>" + Escape(names[k]) +
           "</text>";
  }
  return svg + "</svg>";
}

// Horizontal bars, one per label.
std::string BarChart(const std::string& title, const std::vector<std::string>& labels,
                     const std::vector<double>& values, const char* format) {
  constexpr double kW = 560, kRow = 22, kLeft = 130;
  const double h = 26 + kRow * static_cast<double>(labels.size());
  double hi = 0;
  for (double v : values) hi = std::max(hi, v);
  if (hi <= 0) hi = 1;
  std::string svg = "<svg xmlns='http://www.w3.org/2000/svg' width='" + Fmt("%.0f", kW) +
                    "' height='" + Fmt("%.0f", h) + "' font-size='11' font-family='sans-serif'>";
  svg += "<text x='0' y='14' font-weight='bold'>" + Escape(title) + "</text>";
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const double y = 22 + kRow * static_cast<double>(i);
    const double w = std::max(0.0, (kW - kLeft - 80) * values[i] / hi);
    svg += "<text x='0' y='" + Fmt("%.1f", y + 13) + "'>" + Escape(labels[i]) + "</text>";
    svg += "<rect x='" + Fmt("%.0f", kLeft) + "' y='" + Fmt("%.1f", y) + "' width='" +
           Fmt("%.1f", w) + "' height='16' fill='" + kColors[i % std::size(kColors)] + "'/>";
    svg += "<text x='" + Fmt("%.1f", kLeft + w + 4) + "' y='" + Fmt("%.1f", y + 13) + "'>" +
           Fmt(format, values[i]) + "</text>";
  }
  return svg + "</svg>";
}

}  // namespace

std::string BuildReportHtml(const ReportInput& in) {
  const SimFleet& fleet = *in.fleet;
  const PriceGrid grid = MakePriceGrid(*in.options);
  const std::size_t buckets =
      static_cast<std::size_t>(std::ceil((in.options->duration_s + grid.offset_s) / grid.bucket_s));
  const double step_h = grid.bucket_s / 3600.0;
  std::string html =
      "<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + Escape(in.title) +
      "</title><style>body{font-family:sans-serif;margin:24px;max-width:900px}"
      "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;"
      "text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}</style></head><body>";
  html += "<h1>" + Escape(in.title) + "</h1>";
  html += "<p>Simulated with the production router (policy <code>powerplane</code>) and four "
          "baselines on identical arrivals; the GPU model is the measured curve shared with the "
          "engine emulator. <code>hindsight-bound</code> is the fluid LP lower bound on energy "
          "cost.</p>";
  // Summary table.
  html += "<h2>Summary</h2><table><tr>";
  const std::string header = SummaryCsvHeader();
  std::size_t pos = 0;
  while (pos != std::string::npos) {
    const std::size_t c = header.find(',', pos);
    html += "<th>" + header.substr(pos, c == std::string::npos ? c : c - pos) + "</th>";
    pos = c == std::string::npos ? c : c + 1;
  }
  html += "</tr>";
  const std::string csv = SummaryCsv(*in.rows);
  std::size_t line_start = csv.find('\n') + 1;
  while (line_start < csv.size()) {
    const std::size_t end = csv.find('\n', line_start);
    const std::string line = csv.substr(line_start, end - line_start);
    html += "<tr>";
    std::size_t p = 0;
    while (p != std::string::npos) {
      const std::size_t c = line.find(',', p);
      html += "<td>" + Escape(line.substr(p, c == std::string::npos ? c : c - p)) + "</td>";
      p = c == std::string::npos ? c : c + 1;
    }
    html += "</tr>";
    line_start = end + 1;
  }
  html += "</table>";

  std::vector<std::string> labels;
  std::vector<double> per_mtok_energy, per_mtok_total, attainment;
  std::vector<std::string> policy_labels;
  for (const auto& r : *in.rows) {
    labels.push_back(r.policy);
    per_mtok_energy.push_back(r.usd_per_mtok_energy);
    per_mtok_total.push_back(r.usd_per_mtok_total);
    if (r.target_attainment) {
      policy_labels.push_back(r.policy);
      attainment.push_back(*r.target_attainment);
    }
  }
  html += "<h2>Cost per token and target attainment</h2>";
  html += BarChart("Energy cost, USD per million output tokens", labels, per_mtok_energy, "%.4g");
  html += BarChart("Energy + hardware, USD per million output tokens", labels, per_mtok_total,
                   "%.4g");
  html += BarChart("Share of requests meeting TTFT and TPOT targets", policy_labels, attainment,
                   "%.3f");

  // Prices and loads.
  std::vector<std::string> site_names;
  std::vector<std::vector<double>> prices;
  for (std::size_t s = 0; s < fleet.sites.size(); ++s) {
    site_names.push_back(fleet.sites[s].id);
    std::vector<double> p(buckets);
    for (std::size_t b = 0; b < buckets; ++b) p[b] = grid.UsdPerMwh(fleet, s, b);
    prices.push_back(std::move(p));
  }
  html += "<h2>Price per site</h2>";
  html += LineChart("USD/MWh", site_names, prices, step_h);
  for (const auto& r : *in.results) {
    std::vector<std::vector<double>> kw;
    for (std::size_t s = 0; s < fleet.sites.size(); ++s) {
      std::vector<double> v(buckets);
      for (std::size_t b = 0; b < buckets && b < r.site_bucket_joules[s].size(); ++b) {
        v[b] = r.site_bucket_joules[s][b] * fleet.sites[s].pue / grid.bucket_s / 1e3;
      }
      kw.push_back(std::move(v));
    }
    html += "<h3>Load per site under <code>" + Escape(r.policy) + "</code> (facility kW)</h3>";
    html += LineChart("kW", site_names, kw, step_h);
  }
  // Power against the grid budget, when there are events to meet.
  if (!in.options->events.empty() && !in.results->empty()) {
    html += "<h2>Power vs budget per site</h2><p>Mean grid import per " +
            Fmt("%.0f", in.results->front().power_step_s) +
            " s under each policy, and the tightest budget (import limit or grid event; gaps: "
            "none). Only <code>powerplane</code> runs the flex controller.</p>";
    for (std::size_t s = 0; s < fleet.sites.size(); ++s) {
      std::vector<std::string> names = {"budget"};
      std::vector<std::vector<double>> series = {in.results->front().site_budget_kw[s]};
      for (const auto& r : *in.results) {
        names.push_back(r.policy);
        series.push_back(r.site_import_kw[s]);
      }
      html += "<h3>" + Escape(fleet.sites[s].id) + " (kW)</h3>";
      html += LineChart("kW", names, series, in.results->front().power_step_s / 3600.0);
    }
  }
  html += "<h2>Sites</h2><table><tr><th>site</th><th>jurisdiction</th><th>PUE</th>"
          "<th>rtt ms</th><th>prices</th><th>endpoints</th></tr>";
  for (std::size_t s = 0; s < fleet.sites.size(); ++s) {
    int n = 0;
    for (const auto& e : fleet.endpoints) n += e.site_index == s ? 1 : 0;
    html += "<tr><td>" + Escape(fleet.sites[s].id) + "</td><td>" +
            Escape(fleet.sites[s].jurisdiction) + "</td><td>" +
            Fmt("%.2f", fleet.sites[s].pue) + "</td><td>" +
            Fmt("%.0f", fleet.sites[s].network_rtt_s * 1e3) + "</td><td>" +
            Escape(fleet.price_labels[s]) + "</td><td>" + std::to_string(n) + "</td></tr>";
  }
  html += "</table></body></html>\n";
  return html;
}

}  // namespace powerplane::sim
