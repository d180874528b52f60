#include "gateway/openai_request.h"

#include <simdjson.h>

#include <nlohmann/json.hpp>

#include "core/tokens.h"

namespace powerplane::gateway {
namespace od = simdjson::ondemand;
namespace {

RequestError Invalid(std::string message, std::string param = {}) {
  return {400, std::move(message), "", std::move(param)};
}

// Counts the text of a message's content: a string, or an array of parts with "text".
simdjson::error_code CountContent(od::value content, int* tokens) {
  od::json_type type;
  if (auto e = content.type().get(type)) return e;
  if (type == od::json_type::string) {
    std::string_view s;
    if (auto e = content.get_string().get(s)) return e;
    *tokens += core::EstimateTokens(s);
    return simdjson::SUCCESS;
  }
  if (type == od::json_type::null) return simdjson::SUCCESS;
  if (type != od::json_type::array) return simdjson::INCORRECT_TYPE;
  od::array parts;
  if (auto e = content.get_array().get(parts)) return e;
  for (auto part : parts) {
    od::object o;
    if (auto e = part.get_object().get(o)) return e;
    for (auto field : o) {
      std::string_view key;
      if (auto e = field.unescaped_key().get(key)) return e;
      if (key == "text") {
        std::string_view s;
        if (field.value().get_string().get(s) == simdjson::SUCCESS) {
          *tokens += core::EstimateTokens(s);
        }
      }
    }
  }
  return simdjson::SUCCESS;
}

}  // namespace

std::expected<OpenAiRequest, RequestError> ParseOpenAiRequest(ApiKind kind,
                                                              std::string_view body) {
  thread_local od::parser parser;
  OpenAiRequest r;
  r.kind = kind;
  simdjson::padded_string padded(body);
  od::document doc;
  if (parser.iterate(padded).get(doc)) return std::unexpected(Invalid("request body is not JSON"));
  od::object root;
  if (auto e = doc.get_object().get(root)) {
    // A body cut short is not "not an object": say what is wrong with it.
    if (e != simdjson::INCORRECT_TYPE) {
      return std::unexpected(Invalid("request body is not JSON (" +
                                     std::string(simdjson::error_message(e)) + ")"));
    }
    return std::unexpected(Invalid("request body must be a JSON object"));
  }
  bool have_messages = false, have_prompt = false;
  auto error = [&](simdjson::error_code e, std::string param) -> RequestError {
    if (e == simdjson::INCORRECT_TYPE || e == simdjson::NUMBER_ERROR) {
      return Invalid("'" + param + "' has the wrong type", param);
    }
    return Invalid("request body is not valid JSON (" + std::string(simdjson::error_message(e)) +
                   ")");
  };
  for (auto field : root) {
    std::string_view key;
    if (auto e = field.unescaped_key().get(key)) return std::unexpected(error(e, ""));
    od::value v;
    if (auto e = field.value().get(v)) return std::unexpected(error(e, std::string(key)));
    if (key == "model") {
      std::string_view m;
      if (auto e = v.get_string().get(m)) return std::unexpected(error(e, "model"));
      r.model = std::string(m);
    } else if (key == "stream") {
      od::json_type t;
      if (auto e = v.type().get(t)) return std::unexpected(error(e, "stream"));
      if (t != od::json_type::null) {
        if (auto e = v.get_bool().get(r.stream)) return std::unexpected(error(e, "stream"));
      }
    } else if (key == "stream_options") {
      od::json_type t;
      if (auto e = v.type().get(t)) return std::unexpected(error(e, "stream_options"));
      if (t == od::json_type::null) continue;
      r.has_stream_options = true;
      od::object so;
      if (auto e = v.get_object().get(so)) return std::unexpected(error(e, "stream_options"));
      for (auto f : so) {
        std::string_view k;
        if (auto e = f.unescaped_key().get(k)) return std::unexpected(error(e, "stream_options"));
        if (k == "include_usage") {
          if (auto e = f.value().get_bool().get(r.include_usage)) {
            return std::unexpected(error(e, "stream_options.include_usage"));
          }
        }
      }
    } else if (key == "max_tokens" || key == "max_completion_tokens") {
      od::json_type t;
      if (auto e = v.type().get(t)) return std::unexpected(error(e, std::string(key)));
      if (t == od::json_type::null) continue;
      std::int64_t n = 0;
      if (auto e = v.get_int64().get(n)) {
        // A whole number too large for 64 bits is a number, just far too large.
        if (t == od::json_type::number) {
          return std::unexpected(Invalid("'" + std::string(key) + "' must be an integer from 1 to " +
                                             std::to_string(kMaxOutputTokens),
                                         std::string(key)));
        }
        return std::unexpected(error(e, std::string(key)));
      }
      if (n < 1) {
        return std::unexpected(Invalid("'" + std::string(key) + "' must be a positive integer",
                                       std::string(key)));
      }
      if (n > kMaxOutputTokens) {
        return std::unexpected(Invalid("'" + std::string(key) + "' must be at most " +
                                           std::to_string(kMaxOutputTokens),
                                       std::string(key)));
      }
      r.max_tokens = static_cast<int>(n);
    } else if (key == "messages" && kind == ApiKind::kChat) {
      od::array messages;
      if (auto e = v.get_array().get(messages)) return std::unexpected(error(e, "messages"));
      int count = 0;
      for (auto m : messages) {
        od::object mo;
        if (auto e = m.get_object().get(mo)) return std::unexpected(error(e, "messages"));
        bool has_role = false, has_content = false, assistant = false;
        for (auto f : mo) {
          std::string_view k;
          if (auto e = f.unescaped_key().get(k)) return std::unexpected(error(e, "messages"));
          if (k == "role") {
            std::string_view role;
            if (auto e = f.value().get_string().get(role)) {
              return std::unexpected(error(e, "messages.role"));
            }
            has_role = true;
            assistant = role == "assistant";
          } else if (k == "content") {
            has_content = true;
            od::value content;
            if (auto e = f.value().get(content)) return std::unexpected(error(e, "messages"));
            if (auto e = CountContent(content, &r.prompt_tokens)) {
              return std::unexpected(error(e, "messages.content"));
            }
          }
        }
        if (!has_role) {
          return std::unexpected(Invalid("each message needs a 'role'", "messages"));
        }
        // Only an assistant's message may come without content (it may carry tool calls).
        if (!has_content && !assistant) {
          return std::unexpected(
              Invalid("each message but an assistant's needs a 'content'", "messages"));
        }
        r.prompt_tokens += core::kChatMessageOverheadTokens;
        ++count;
      }
      if (count == 0) return std::unexpected(Invalid("'messages' must not be empty", "messages"));
      have_messages = true;
    } else if (key == "prompt" && kind == ApiKind::kCompletion) {
      od::json_type t;
      if (auto e = v.type().get(t)) return std::unexpected(error(e, "prompt"));
      if (t == od::json_type::string) {
        std::string_view s;
        if (auto e = v.get_string().get(s)) return std::unexpected(error(e, "prompt"));
        r.prompt_tokens += core::EstimateTokens(s);
      } else if (t == od::json_type::array) {
        od::array a;
        if (auto e = v.get_array().get(a)) return std::unexpected(error(e, "prompt"));
        int prompts = 0;
        for (auto item : a) {
          // OpenAI answers a choice per prompt; engines behind a gateway are asked one at a
          // time, so a batch would come back as one choice: refused, not half answered.
          if (++prompts > 1) {
            return std::unexpected(Invalid(
                "'prompt' may hold one prompt per request here; send each as its own request",
                "prompt"));
          }
          std::string_view s;
          if (auto e = item.get_string().get(s)) return std::unexpected(error(e, "prompt"));
          r.prompt_tokens += core::EstimateTokens(s);
        }
      } else {
        return std::unexpected(Invalid("'prompt' must be a string or an array of strings",
                                       "prompt"));
      }
      have_prompt = true;
    }
  }
  // On-Demand reads only as far as it is asked: a second value after the object (`{...}{...}`,
  // `{...}}`; a body not ending in '}' is refused by get_object) would pass unread and reach the
  // engine, which refuses it. With the root object read to its closing brace, anything still
  // there is trailing content.
  if (doc.current_location().error() != simdjson::OUT_OF_BOUNDS) {
    return std::unexpected(Invalid("request body must be one JSON object, with nothing after it"));
  }
  if (r.model.empty()) return std::unexpected(Invalid("'model' is required", "model"));
  if (kind == ApiKind::kChat && !have_messages) {
    return std::unexpected(Invalid("'messages' is required", "messages"));
  }
  if (kind == ApiKind::kCompletion && !have_prompt) {
    return std::unexpected(Invalid("'prompt' is required", "prompt"));
  }
  return r;
}

std::string UpstreamBody(const OpenAiRequest& request, std::string body) {
  if (!request.stream || request.include_usage) return body;
  if (!request.has_stream_options) {
    // Insert the member right after the opening brace: the body is a JSON object, so this
    // keeps it valid and leaves every other byte as the client sent it.
    auto brace = body.find('{');
    if (brace == std::string::npos) return body;
    const bool empty_object = body.find_first_not_of(" \t\r\n", brace + 1) != std::string::npos &&
                              body[body.find_first_not_of(" \t\r\n", brace + 1)] == '}';
    body.insert(brace + 1, empty_object ? R"("stream_options":{"include_usage":true})"
                                        : R"("stream_options":{"include_usage":true},)");
    return body;
  }
  // The client sent stream_options without include_usage: rewrite the object.
  auto j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return body;
  j["stream_options"]["include_usage"] = true;
  return j.dump();
}

}  // namespace powerplane::gateway
