// Fuzzes the gateway's reading of OpenAI request bodies and the upstream body rewrite.
#include <cstddef>
#include <cstdint>
#include <string>

#include "gateway/openai_request.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace powerplane::gateway;
  const std::string body(reinterpret_cast<const char*>(data), size);
  for (ApiKind kind : {ApiKind::kChat, ApiKind::kCompletion}) {
    auto r = ParseOpenAiRequest(kind, body);
    if (r) {
      if (r->model.empty() || r->prompt_tokens < 0) __builtin_trap();
      r->stream = true;
      (void)UpstreamBody(*r, body);
    } else if (r.error().status != 400 || r.error().message.empty()) {
      __builtin_trap();
    }
  }
  return 0;
}
