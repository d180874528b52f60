#include "core/types.h"

namespace powerplane::core {

std::string_view ToString(PriorityClass c) {
  switch (c) {
    case PriorityClass::kInteractive:
      return "interactive";
    case PriorityClass::kStandard:
      return "standard";
    case PriorityClass::kBatch:
      return "batch";
  }
  return "unknown";
}

bool ParsePriorityClass(std::string_view name, PriorityClass* out) {
  if (name == "interactive") {
    *out = PriorityClass::kInteractive;
  } else if (name == "standard") {
    *out = PriorityClass::kStandard;
  } else if (name == "batch") {
    *out = PriorityClass::kBatch;
  } else {
    return false;
  }
  return true;
}

}  // namespace powerplane::core
