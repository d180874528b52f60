#pragma once
// The OpenAI request as the gateway needs it: read (not rebuilt) from the client's body with
// simdjson On-Demand, validated, and the few fields routing needs pulled out. The original
// bytes are forwarded upstream, with `stream_options.include_usage` forced on when streaming so
// the gateway can always meter tokens. No I/O; never throws.

#include <expected>
#include <optional>
#include <cstdint>
#include <string>
#include <string_view>

namespace powerplane::gateway {

enum class ApiKind { kChat, kCompletion };

// The most output tokens a request may ask for (max_tokens): ten times the longest context of
// any model served today, and far below what an int holds.
constexpr std::int64_t kMaxOutputTokens = 10'000'000;

struct OpenAiRequest {
  ApiKind kind = ApiKind::kChat;
  std::string model;
  bool stream = false;
  bool include_usage = false;       // the client asked for the usage chunk.
  bool has_stream_options = false;  // the body already has a stream_options member.
  std::optional<int> max_tokens;    // max_tokens or max_completion_tokens.
  int prompt_tokens = 0;            // estimated from the text (core::EstimateTokens).
};

// A client error, answered with an OpenAI-shaped body.
struct RequestError {
  int status = 400;
  std::string message;
  std::string code;   // empty = null.
  std::string param;  // empty = null.
};

// Parses and validates a /v1/chat/completions or /v1/completions body.
std::expected<OpenAiRequest, RequestError> ParseOpenAiRequest(ApiKind kind, std::string_view body);

// The body to send upstream: the client's bytes, with include_usage forced on for streams.
std::string UpstreamBody(const OpenAiRequest& request, std::string body);

}  // namespace powerplane::gateway
