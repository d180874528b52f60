#pragma once
// Fixed GPU profiles for tests that must not read files. The numbers are the H200 measurement of
// Llama-3.1-8B shapes in data/energy/h200-llama-3.1-8b-shape-decode-prefill.json (rounded).

#include <memory>

#include "core/gpu_model.h"

namespace powerplane::testing {

inline core::GpuProfile H200Llama8BProfile() {
  core::GpuProfile p;
  p.name = "h200-llama-3.1-8b (test copy)";
  p.decode = {{1, 0.005234, 421.9},   {8, 0.005478, 455.7},   {32, 0.006192, 567.2},
              {64, 0.007270, 681.8},  {128, 0.010937, 690.3}, {256, 0.016926, 710.8}};
  p.reference_context_tokens = 1024;
  p.step_s_per_context_token = 3.0e-8;
  p.prefill_tokens_per_s = 38300;
  p.prefill_watts = 698;
  p.idle_watts = 125.6;
  p.max_watts = 700;
  p.source = "test copy of the H200 measurement";
  return p;
}

inline std::shared_ptr<const core::GpuModel> H200Llama8B() {
  return std::make_shared<const core::GpuModel>(H200Llama8BProfile());
}

}  // namespace powerplane::testing
