#pragma once
// The OpenAI wire format as the engine emulator speaks it: parsing generation requests into native
// values (JSON stays here, at the edge) and writing responses, stream chunks and the model list.
// Also the emulator's deterministic choices: output length and filler text. No I/O.

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace powerplane::engine {

enum class ApiKind { kChat, kCompletion };  // /v1/chat/completions, /v1/completions.

// A request the API rejects: HTTP status plus the OpenAI error fields (`code`, `param` empty =
// null).
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string code;
  std::string param;
};

// A generation request, validated.
struct GenerationRequest {
  ApiKind kind = ApiKind::kChat;
  std::string model;
  int prompt_tokens = 0;  // core::EstimateTokens of the text, plus per-message chat overhead.
  int max_tokens = 0;     // max_tokens / max_completion_tokens; 0 = not given.
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage (only meaningful when streaming).
  std::uint64_t prompt_hash = 0;  // of the prompt text: seeds the default output length.
};

// Parses a request body. Chat: `messages` (non-empty array of {role, content}, content a string,
// null, or an array of parts whose {type:"text", text} parts count). Completion: `prompt`, a
// string or an array of strings (counted together as one prompt). Errors are 400
// invalid_request_error naming the bad field in `param`.
std::expected<GenerationRequest, ApiError> ParseGenerationRequest(ApiKind kind,
                                                                  std::string_view body);

// A 64-bit hash mixer (splitmix64 finaliser); deterministic on every platform.
std::uint64_t MixHash(std::uint64_t x);

// The output length when the request gives no max_tokens: from the prompt hash and seed, in
// [16, 512].
int DefaultOutputTokens(std::uint64_t prompt_hash, std::uint64_t seed);

// Filler text for token `token_index` of request number `request_index`: one word from a fixed
// list with a leading space. JSON-safe (no escaping needed).
std::string_view FillerToken(std::uint64_t seed, std::uint64_t request_index, int token_index);

struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
};

// Writes the JSON of one response, given its id, creation time and model.
class ResponseWriter {
 public:
  ResponseWriter(ApiKind kind, std::string id, std::int64_t created_unix_s,
                 std::string_view model);

  const std::string& id() const { return id_; }

  // One `data: {chunk}\n\n` server-sent event carrying `text`; the first chunk of a chat stream
  // also carries role "assistant". `usage_null` adds "usage":null (when the client asked for a
  // usage chunk).
  void AppendTokenEvent(std::string* out, std::string_view text, bool first, bool usage_null) const;
  // The event with an empty delta and `finish_reason`.
  void AppendFinishEvent(std::string* out, std::string_view finish_reason, bool usage_null) const;
  // The usage event: "choices":[] and "usage":{...}.
  void AppendUsageEvent(std::string* out, Usage usage) const;
  // A complete chat.completion / text_completion object.
  std::string Complete(std::string_view text, std::string_view finish_reason, Usage usage) const;

 private:
  std::string Prefix(bool chunk) const;

  ApiKind kind_;
  std::string id_;
  std::int64_t created_;
  std::string model_json_;  // the model name as a JSON string literal.
};

// `{"object":"list","data":[{"id":model,"object":"model","created":...,"owned_by":...}]}`.
std::string ModelList(std::string_view model, std::int64_t created_unix_s);

}  // namespace powerplane::engine
