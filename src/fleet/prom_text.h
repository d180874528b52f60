#pragma once
// A reader of the Prometheus text exposition format, enough to read an engine's load signals.
// Untrusted input: never throws, ignores what it cannot read.

#include <optional>
#include <string_view>

#include "fleet/fleet.h"

namespace powerplane::fleet {

// The value of the first sample of metric `name` (any labels), if present.
std::optional<double> FindSample(std::string_view text, std::string_view name);

// Reads the load an engine reports, by capability: vLLM names first, with older vLLM, SGLang,
// llama.cpp and TGI names as fallbacks. Returns nullopt when none of the load signals is there.
std::optional<ScrapedLoad> ReadEngineLoad(std::string_view metrics_text);

}  // namespace powerplane::fleet
