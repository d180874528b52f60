#include "gateway/openai_request.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace powerplane::gateway {
namespace {

TEST(OpenAiRequestTest, ReadsWhatRoutingNeeds) {
  auto r = ParseOpenAiRequest(ApiKind::kChat, R"({"model":"llama-3.1-8b","stream":true,
    "max_tokens":64,"messages":[{"role":"system","content":"be brief"},
    {"role":"user","content":[{"type":"text","text":"hello there, how are you?"}]}],
    "temperature":0.2,"tools":[{"x":[1,2,{"y":null}]}]})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->model, "llama-3.1-8b");
  EXPECT_TRUE(r->stream);
  EXPECT_FALSE(r->include_usage);
  EXPECT_EQ(r->max_tokens, 64);
  // "be brief" = 2 tokens, the text part = 7, plus 4 per message.
  EXPECT_EQ(r->prompt_tokens, 2 + 7 + 8);
}

TEST(OpenAiRequestTest, CompletionsPrompt) {
  auto r = ParseOpenAiRequest(ApiKind::kCompletion,
                              R"({"model":"m","prompt":["abcdefgh"],"max_completion_tokens":5})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->prompt_tokens, 2);
  EXPECT_EQ(r->max_tokens, 5);
  // OpenAI answers a batch of prompts with a choice each; one engine call cannot, so a batch is
  // refused rather than answered with one choice.
  auto batch = ParseOpenAiRequest(ApiKind::kCompletion, R"({"model":"m","prompt":["ab","cd"]})");
  ASSERT_FALSE(batch);
  EXPECT_EQ(batch.error().status, 400);
  EXPECT_EQ(batch.error().param, "prompt");
}

TEST(OpenAiRequestTest, MaxTokensAboveTheBoundSaysWhatTheBoundIs) {
  auto r = ParseOpenAiRequest(
      ApiKind::kChat, R"({"model":"m","max_tokens":16777217,"messages":[{"role":"user","content":"x"}]})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().param, "max_tokens");
  EXPECT_EQ(r.error().message, "'max_tokens' must be at most 10000000");
}

// A whole number too large for 64 bits is named as too large, not as "the wrong type"; a body
// cut short is said to be invalid JSON, not "not an object".
TEST(OpenAiRequestTest, SaysWhatIsWrongWithAHugeNumberOrACutBody) {
  auto r = ParseOpenAiRequest(
      ApiKind::kChat, R"({"model":"m","max_tokens":99999999999999999999,"messages":[{"role":"user","content":"x"}]})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().param, "max_tokens");
  EXPECT_EQ(r.error().message, "'max_tokens' must be an integer from 1 to 10000000");
  r = ParseOpenAiRequest(ApiKind::kChat, R"({"model":"m","max_tokens":"9"})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "'max_tokens' has the wrong type");
  for (const char* cut : {R"({"model":"m","messa)", R"({"model":"m")", R"({"model")", "{"}) {
    r = ParseOpenAiRequest(ApiKind::kChat, cut);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("not JSON"), std::string::npos) << cut << ": " << r.error().message;
  }
  r = ParseOpenAiRequest(ApiKind::kChat, R"([1,2])");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "request body must be a JSON object");
}

TEST(OpenAiRequestTest, RejectsBadRequestsWithTheParameterNamed) {
  struct Case {
    ApiKind kind;
    const char* body;
    const char* param;
  } cases[] = {
      {ApiKind::kChat, "not json", ""},
      {ApiKind::kChat, "[1,2]", ""},
      {ApiKind::kChat, R"({"messages":[{"role":"user","content":"x"}]})", "model"},
      {ApiKind::kChat, R"({"model":"m"})", "messages"},
      {ApiKind::kChat, R"({"model":"m","messages":[]})", "messages"},
      {ApiKind::kChat, R"({"model":"m","messages":[{"content":"x"}]})", "messages"},
      {ApiKind::kChat, R"({"model":7,"messages":[{"role":"user","content":"x"}]})", "model"},
      {ApiKind::kChat, R"({"model":"m","max_tokens":-1,"messages":[{"role":"user","content":"x"}]})",
       "max_tokens"},
      {ApiKind::kChat, R"({"model":"m","stream":"yes","messages":[{"role":"user","content":"x"}]})", "stream"},
      {ApiKind::kCompletion, R"({"model":"m","prompt":5})", "prompt"},
      {ApiKind::kCompletion, R"({"model":"m"})", "prompt"},
  };
  for (const auto& c : cases) {
    auto r = ParseOpenAiRequest(c.kind, c.body);
    ASSERT_FALSE(r) << c.body;
    EXPECT_EQ(r.error().status, 400) << c.body;
    EXPECT_EQ(r.error().param, c.param) << c.body;
    EXPECT_FALSE(r.error().message.empty());
  }
}

// On-Demand parses lazily: a second value after the root object passed unread and reached the
// engine, which answered 400 itself.
// A message needs content, but for an assistant's (which may carry tool calls instead).
TEST(OpenAiRequestTest, AMessageWithoutContentIsAnAssistantsOrRefused) {
  auto r = ParseOpenAiRequest(ApiKind::kChat, R"({"model":"m","messages":[{"role":"user"}]})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().param, "messages");
  EXPECT_NE(r.error().message.find("'content'"), std::string::npos) << r.error().message;
  r = ParseOpenAiRequest(ApiKind::kChat,
                         R"({"model":"m","messages":[{"role":"user","content":"hi"},)"
                         R"({"role":"assistant","tool_calls":[]},{"role":"user","content":"ok"}]})");
  EXPECT_TRUE(r) << r.error().message;
}

TEST(OpenAiRequestTest, RejectsContentAfterTheObject) {
  const std::string one = R"({"model":"m","messages":[{"role":"user","content":"x"}]})";
  for (const std::string& body : {one + one, one + " \n" + one, one + "}", one + "{}"}) {
    auto r = ParseOpenAiRequest(ApiKind::kChat, body);
    ASSERT_FALSE(r) << body;
    EXPECT_EQ(r.error().status, 400) << body;
    EXPECT_EQ(r.error().param, "") << body;
    EXPECT_EQ(r.error().message, "request body must be one JSON object, with nothing after it")
        << body;
  }
  // Ending in something other than '}', the body is refused before its fields are read.
  for (const std::string& body : {one + "]", one + "[]", one + " 1", one + " null"}) {
    auto r = ParseOpenAiRequest(ApiKind::kChat, body);
    ASSERT_FALSE(r) << body;
    EXPECT_EQ(r.error().status, 400) << body;
  }
  const std::string prompt = R"({"model":"m","prompt":"x"})";
  auto r = ParseOpenAiRequest(ApiKind::kCompletion, prompt + prompt);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().status, 400);
  // Whitespace after the object is not content.
  EXPECT_TRUE(ParseOpenAiRequest(ApiKind::kChat, one + " \r\n\t"));
  EXPECT_TRUE(ParseOpenAiRequest(ApiKind::kCompletion, prompt + "\n"));
}

TEST(OpenAiRequestTest, UpstreamAlwaysAsksForUsageWhenStreaming) {
  const std::string body = R"({"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]})";
  auto r = ParseOpenAiRequest(ApiKind::kChat, body);
  ASSERT_TRUE(r);
  auto up = nlohmann::json::parse(UpstreamBody(*r, body));
  EXPECT_TRUE(up["stream_options"]["include_usage"].get<bool>());
  EXPECT_EQ(up["model"], "m");

  const std::string with_options =
      R"({"model":"m","stream":true,"stream_options":{"include_usage":false},"messages":[{"role":"user","content":"x"}]})";
  r = ParseOpenAiRequest(ApiKind::kChat, with_options);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->has_stream_options);
  up = nlohmann::json::parse(UpstreamBody(*r, with_options));
  EXPECT_TRUE(up["stream_options"]["include_usage"].get<bool>());

  const std::string asked =
      R"({"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"x"}]})";
  r = ParseOpenAiRequest(ApiKind::kChat, asked);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->include_usage);
  EXPECT_EQ(UpstreamBody(*r, asked), asked);  // untouched

  const std::string not_streaming = R"({"model":"m","messages":[{"role":"user","content":"x"}]})";
  r = ParseOpenAiRequest(ApiKind::kChat, not_streaming);
  EXPECT_EQ(UpstreamBody(*r, not_streaming), not_streaming);
}

}  // namespace
}  // namespace powerplane::gateway
