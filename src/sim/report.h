#pragma once
// DIR/report.html: one self-contained page (inline SVG and CSS, no scripts, no network) with the
// price of each site over time with the site's load, and cost per token and target attainment per
// policy. Pure: returns the text.

#include <string>
#include <vector>

#include "sim/metrics.h"
#include "sim/sim_fleet.h"
#include "sim/simulator.h"

namespace powerplane::sim {

struct ReportInput {
  const SimFleet* fleet = nullptr;
  const SimOptions* options = nullptr;
  const std::vector<SummaryRow>* rows = nullptr;        // policies, then the bound.
  const std::vector<PolicyResult>* results = nullptr;   // policies (site loads).
  std::string title;
};

std::string BuildReportHtml(const ReportInput& in);

}  // namespace powerplane::sim
