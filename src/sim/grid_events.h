#pragma once
// Grid events for the twin from a CSV file (`--events FILE`):
//   site,start_utc,duration_s,target_kw,ramp_s
// one event per line after that header; start_utc is ISO 8601 (UTC when it has no offset);
// duration_s > 0; target_kw >= 0; ramp_s >= 0. Blank lines and lines starting with '#' are
// skipped. Errors name the file and line.

#include <expected>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/grid_event.h"
#include "core/types.h"

namespace powerplane::sim {

// Parses `text` (named `file_name` in errors); every event's site must be one of `sites`. Event
// ids are "<file_name>:<line>", source "sim".
std::expected<std::vector<core::GridEvent>, std::string> ParseGridEventsCsv(
    std::string_view text, std::string_view file_name, std::span<const core::Site> sites);
std::expected<std::vector<core::GridEvent>, std::string> LoadGridEventsCsv(
    const std::string& path, std::span<const core::Site> sites);

}  // namespace powerplane::sim
