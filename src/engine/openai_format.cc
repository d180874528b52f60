#include "engine/openai_format.h"

#include <array>
#include <nlohmann/json.hpp>

#include "core/tokens.h"

namespace powerplane::engine {
namespace {

using nlohmann::json;

constexpr std::array<std::string_view, 64> kWords = {
    " the",     " grid",    " power",   " energy", " model",   " token",   " batch",   " price",
    " watts",   " site",    " load",    " demand", " supply",  " cheap",   " green",   " wind",
    " solar",   " cooling", " rack",    " cluster", " request", " answer",  " signal",  " market",
    " hour",    " peak",    " shift",   " flexible", " reserve", " cap",    " steady",  " fast",
    " and",     " of",      " to",      " in",     " a",       " is",      " that",    " for",
    " with",    " on",      " when",    " while",  " under",   " over",    " through", " before",
    " data",    " center",  " route",   " queue",  " latency", " memory",  " cache",   " decode",
    " prefill", " carbon",  " utility", " event",  " hold",    " ramp",    " curve",   " limit"};

ApiError Invalid(std::string message, std::string param) {
  return ApiError{400, std::move(message), "invalid_request_error", {}, std::move(param)};
}

std::uint64_t Fnv1a(std::uint64_t h, std::string_view text) {
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

constexpr std::uint64_t kFnvOffset = 0xcbf29ce484222325ULL;

// Reads an optional positive integer field; 0 when absent or null.
std::expected<int, ApiError> OptionalPositiveInt(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return 0;
  if (!it->is_number_integer() || it->get<std::int64_t>() < 1 ||
      it->get<std::int64_t>() > 1'000'000'000) {
    return std::unexpected(Invalid(std::string(name) + " must be a positive integer", name));
  }
  return static_cast<int>(it->get<std::int64_t>());
}

std::expected<void, ApiError> CountChat(const json& body, GenerationRequest* out) {
  auto messages = body.find("messages");
  if (messages == body.end() || !messages->is_array() || messages->empty()) {
    return std::unexpected(Invalid("messages must be a non-empty array", "messages"));
  }
  std::uint64_t hash = kFnvOffset;
  std::int64_t tokens = 0;
  for (const auto& message : *messages) {
    if (!message.is_object() || !message.contains("role") || !message["role"].is_string()) {
      return std::unexpected(Invalid("each message needs a string role", "messages"));
    }
    tokens += core::kChatMessageOverheadTokens;
    hash = Fnv1a(hash, message["role"].get_ref<const std::string&>());
    auto content = message.find("content");
    if (content == message.end() || content->is_null()) continue;
    if (content->is_string()) {
      const auto& text = content->get_ref<const std::string&>();
      tokens += core::EstimateTokens(text);
      hash = Fnv1a(hash, text);
    } else if (content->is_array()) {
      for (const auto& part : *content) {
        if (!part.is_object()) {
          return std::unexpected(Invalid("content parts must be objects", "messages"));
        }
        auto text = part.find("text");
        if (part.value("type", "") == "text" && text != part.end() && text->is_string()) {
          tokens += core::EstimateTokens(text->get_ref<const std::string&>());
          hash = Fnv1a(hash, text->get_ref<const std::string&>());
        }
      }
    } else {
      return std::unexpected(Invalid("content must be a string or an array of parts", "messages"));
    }
  }
  out->prompt_tokens = static_cast<int>(std::min<std::int64_t>(tokens, 1'000'000'000));
  out->prompt_hash = hash;
  return {};
}

std::expected<void, ApiError> CountCompletion(const json& body, GenerationRequest* out) {
  auto prompt = body.find("prompt");
  if (prompt == body.end()) return std::unexpected(Invalid("prompt is required", "prompt"));
  std::uint64_t hash = kFnvOffset;
  std::int64_t tokens = 0;
  if (prompt->is_string()) {
    tokens = core::EstimateTokens(prompt->get_ref<const std::string&>());
    hash = Fnv1a(hash, prompt->get_ref<const std::string&>());
  } else if (prompt->is_array() && !prompt->empty()) {
    for (const auto& part : *prompt) {
      if (!part.is_string()) {
        return std::unexpected(Invalid("prompt must be a string or an array of strings", "prompt"));
      }
      tokens += core::EstimateTokens(part.get_ref<const std::string&>());
      hash = Fnv1a(hash, part.get_ref<const std::string&>());
    }
  } else {
    return std::unexpected(Invalid("prompt must be a string or an array of strings", "prompt"));
  }
  out->prompt_tokens = static_cast<int>(std::min<std::int64_t>(tokens, 1'000'000'000));
  out->prompt_hash = hash;
  return {};
}

}  // namespace

std::expected<GenerationRequest, ApiError> ParseGenerationRequest(ApiKind kind,
                                                                  std::string_view body_text) {
  json body = json::parse(body_text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return std::unexpected(Invalid("request body is not valid JSON", ""));
  if (!body.is_object()) return std::unexpected(Invalid("request body must be a JSON object", ""));
  GenerationRequest out;
  out.kind = kind;
  try {
    auto model = body.find("model");
    if (model == body.end() || !model->is_string() || model->get_ref<const std::string&>().empty()) {
      return std::unexpected(Invalid("model is required", "model"));
    }
    out.model = model->get<std::string>();
    auto counted = kind == ApiKind::kChat ? CountChat(body, &out) : CountCompletion(body, &out);
    if (!counted) return std::unexpected(counted.error());
    auto max_tokens = OptionalPositiveInt(body, "max_tokens");
    if (!max_tokens) return std::unexpected(max_tokens.error());
    out.max_tokens = *max_tokens;
    if (kind == ApiKind::kChat) {
      auto max_completion = OptionalPositiveInt(body, "max_completion_tokens");
      if (!max_completion) return std::unexpected(max_completion.error());
      if (*max_completion > 0) out.max_tokens = *max_completion;
    }
    auto n = body.find("n");
    if (n != body.end() && !n->is_null() && !(n->is_number_integer() && n->get<std::int64_t>() == 1)) {
      return std::unexpected(Invalid("only n = 1 is supported", "n"));
    }
    auto stream = body.find("stream");
    if (stream != body.end() && !stream->is_null()) {
      if (!stream->is_boolean()) return std::unexpected(Invalid("stream must be a boolean", "stream"));
      out.stream = stream->get<bool>();
    }
    auto options = body.find("stream_options");
    if (options != body.end() && options->is_object()) {
      auto include = options->find("include_usage");
      out.include_usage = include != options->end() && include->is_boolean() && include->get<bool>();
    }
  } catch (const json::exception& e) {
    return std::unexpected(Invalid(std::string("malformed request: ") + e.what(), ""));
  }
  return out;
}

std::uint64_t MixHash(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

int DefaultOutputTokens(std::uint64_t prompt_hash, std::uint64_t seed) {
  return 16 + static_cast<int>(MixHash(prompt_hash ^ MixHash(seed)) % (512 - 16 + 1));
}

std::string_view FillerToken(std::uint64_t seed, std::uint64_t request_index, int token_index) {
  const std::uint64_t h =
      MixHash(MixHash(seed) ^ MixHash(request_index * 0x100000001ULL + static_cast<unsigned>(token_index)));
  return kWords[h % kWords.size()];
}

ResponseWriter::ResponseWriter(ApiKind kind, std::string id, std::int64_t created_unix_s,
                               std::string_view model)
    : kind_(kind), id_(std::move(id)), created_(created_unix_s), model_json_(json(model).dump()) {}

std::string ResponseWriter::Prefix(bool chunk) const {
  const char* object = kind_ == ApiKind::kChat ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                               : "text_completion";
  return "{\"id\":\"" + id_ + "\",\"object\":\"" + object +
         "\",\"created\":" + std::to_string(created_) + ",\"model\":" + model_json_;
}

void ResponseWriter::AppendTokenEvent(std::string* out, std::string_view text, bool first,
                                      bool usage_null) const {
  out->append("data: ").append(Prefix(true));
  if (kind_ == ApiKind::kChat) {
    out->append(",\"choices\":[{\"index\":0,\"delta\":{");
    if (first) out->append("\"role\":\"assistant\",");
    out->append("\"content\":\"").append(text).append("\"}");
  } else {
    out->append(",\"choices\":[{\"index\":0,\"text\":\"").append(text).append("\"");
  }
  out->append(",\"logprobs\":null,\"finish_reason\":null}]");
  if (usage_null) out->append(",\"usage\":null");
  out->append("}\n\n");
}

void ResponseWriter::AppendFinishEvent(std::string* out, std::string_view finish_reason,
                                       bool usage_null) const {
  out->append("data: ").append(Prefix(true));
  out->append(kind_ == ApiKind::kChat ? ",\"choices\":[{\"index\":0,\"delta\":{}"
                                      : ",\"choices\":[{\"index\":0,\"text\":\"\"");
  out->append(",\"logprobs\":null,\"finish_reason\":\"").append(finish_reason).append("\"}]");
  if (usage_null) out->append(",\"usage\":null");
  out->append("}\n\n");
}

void ResponseWriter::AppendUsageEvent(std::string* out, Usage usage) const {
  out->append("data: ").append(Prefix(true));
  out->append(",\"choices\":[],\"usage\":{\"prompt_tokens\":")
      .append(std::to_string(usage.prompt_tokens))
      .append(",\"completion_tokens\":")
      .append(std::to_string(usage.completion_tokens))
      .append(",\"total_tokens\":")
      .append(std::to_string(usage.prompt_tokens + usage.completion_tokens))
      .append("}}\n\n");
}

std::string ResponseWriter::Complete(std::string_view text, std::string_view finish_reason,
                                     Usage usage) const {
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason}};
  if (kind_ == ApiKind::kChat) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  } else {
    choice["text"] = text;
  }
  json body = {
      {"id", id_},
      {"object", kind_ == ApiKind::kChat ? "chat.completion" : "text_completion"},
      {"created", created_},
      {"model", json::parse(model_json_)},
      {"choices", json::array({std::move(choice)})},
      {"usage",
       {{"prompt_tokens", usage.prompt_tokens},
        {"completion_tokens", usage.completion_tokens},
        {"total_tokens", usage.prompt_tokens + usage.completion_tokens}}}};
  return body.dump();
}

std::string ModelList(std::string_view model, std::int64_t created_unix_s) {
  json entry = {{"id", model},
                {"object", "model"},
                {"created", created_unix_s},
                {"owned_by", "powerplane-emulator"}};
  return json{{"object", "list"}, {"data", json::array({std::move(entry)})}}.dump();
}

}  // namespace powerplane::engine
