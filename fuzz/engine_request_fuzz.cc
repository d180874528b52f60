// Fuzzes the engine emulator's reading of OpenAI request bodies (engine/openai_format.h): the bytes
// are a chat body and a completion body. An accepted request must be one the emulator can run:
// a model, bounded token counts, n = 1.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "engine/openai_format.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace powerplane::engine;
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  for (const ApiKind kind : {ApiKind::kChat, ApiKind::kCompletion}) {
    const auto r = ParseGenerationRequest(kind, body);
    if (r) {
      if (r->model.empty() || r->prompt_tokens < 0 || r->max_tokens < 0 ||
          r->max_tokens > 1'000'000'000) {
        __builtin_trap();
      }
    } else if (r.error().status != 400) {
      __builtin_trap();
    }
  }
  return 0;
}
