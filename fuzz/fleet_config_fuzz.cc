// Fuzzes the fleet file parser and the reader of engines' Prometheus metrics.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fleet/config.h"
#include "fleet/prom_text.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = powerplane::fleet::ParseFleetConfig(text, "fuzz.toml");
  if (!c && c.error().empty()) __builtin_trap();
  (void)powerplane::fleet::ReadEngineLoad(text);
  return 0;
}
