#pragma once
// GPU profiles built from the measured data in data/energy (see src/engine/README.md for which
// numbers come from where and which are assumptions). Reads files; no other I/O.

#include <expected>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "core/gpu_model.h"

namespace powerplane::engine {

// The GPU names LoadGpuProfile accepts: "h100", "h200", "h200-qwen2.5-32b".
std::vector<std::string> KnownGpus();

// Builds the profile of `gpu` from the files under `data_dir` (the repository's data/ folder).
// On failure returns a message naming the file (and the line, for CSV) or, for an unknown name,
// listing the known ones.
std::expected<core::GpuProfile, std::string> LoadGpuProfile(std::string_view gpu,
                                                            const std::filesystem::path& data_dir);

// Parses one H200 measurement file (the JSON layout of data/energy/h200-*.json). `name` and
// `file_label` go into the profile's name and error messages. Exposed for tests.
std::expected<core::GpuProfile, std::string> ParseH200Measurement(std::string_view json_text,
                                                                  std::string_view name,
                                                                  std::string_view file_label);

}  // namespace powerplane::engine
