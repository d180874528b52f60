#include "engine/openai_format.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace powerplane::engine {
namespace {

using nlohmann::json;

TEST(OpenAiFormat, ChatCountsStringAndTextParts) {
  auto r = ParseGenerationRequest(ApiKind::kChat, R"({"model":"m","messages":[
      {"role":"system","content":"12345678"},
      {"role":"user","content":[{"type":"text","text":"abcd"},{"type":"image_url","image_url":{}}]},
      {"role":"assistant","content":null}],
      "max_completion_tokens":7,"stream":true,"stream_options":{"include_usage":true}})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->model, "m");
  EXPECT_EQ(r->prompt_tokens, 2 + 1 + 3 * 4);  // 8 chars, 4 chars, 3 messages of overhead.
  EXPECT_EQ(r->max_tokens, 7);
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
}

TEST(OpenAiFormat, CompletionPromptStringOrArray) {
  auto one = ParseGenerationRequest(ApiKind::kCompletion, R"({"model":"m","prompt":"abcdefgh"})");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->prompt_tokens, 2);
  EXPECT_EQ(one->max_tokens, 0);
  EXPECT_FALSE(one->stream);
  auto many = ParseGenerationRequest(ApiKind::kCompletion,
                                     R"({"model":"m","prompt":["abcd","abcdefgh"],"max_tokens":3})");
  ASSERT_TRUE(many);
  EXPECT_EQ(many->prompt_tokens, 3);
  EXPECT_EQ(many->max_tokens, 3);
  EXPECT_NE(one->prompt_hash, many->prompt_hash);
}

TEST(OpenAiFormat, RejectsBadRequestsWithTheParam) {
  struct Case {
    ApiKind kind;
    const char* body;
    const char* param;
  } cases[] = {
      {ApiKind::kChat, "{not json", ""},
      {ApiKind::kChat, "[1]", ""},
      {ApiKind::kChat, R"({"messages":[{"role":"user","content":"x"}]})", "model"},
      {ApiKind::kChat, R"({"model":"m"})", "messages"},
      {ApiKind::kChat, R"({"model":"m","messages":[]})", "messages"},
      {ApiKind::kChat, R"({"model":"m","messages":[{"content":"x"}]})", "messages"},
      {ApiKind::kChat, R"({"model":"m","messages":[{"role":"user","content":5}]})", "messages"},
      {ApiKind::kChat, R"({"model":"m","messages":[{"role":"u"}],"max_tokens":0})", "max_tokens"},
      {ApiKind::kChat, R"({"model":"m","messages":[{"role":"u"}],"max_tokens":"9"})", "max_tokens"},
      {ApiKind::kChat, R"({"model":"m","messages":[{"role":"u"}],"stream":"yes"})", "stream"},
      {ApiKind::kChat, R"({"model":"m","messages":[{"role":"u"}],"n":2})", "n"},
      // 2^32 + 1, read as an int, was 1.
      {ApiKind::kChat, R"({"model":"m","messages":[{"role":"u"}],"n":4294967297})", "n"},
      {ApiKind::kCompletion, R"({"model":"m"})", "prompt"},
      {ApiKind::kCompletion, R"({"model":"m","prompt":[1,2]})", "prompt"},
  };
  for (const auto& c : cases) {
    auto r = ParseGenerationRequest(c.kind, c.body);
    ASSERT_FALSE(r) << c.body;
    EXPECT_EQ(r.error().status, 400) << c.body;
    EXPECT_EQ(r.error().type, "invalid_request_error") << c.body;
    EXPECT_EQ(r.error().param, c.param) << c.body;
  }
}

TEST(OpenAiFormat, DeterministicLengthsAndText) {
  int low = 1000;
  int high = 0;
  for (std::uint64_t h = 0; h < 2000; ++h) {
    const int n = DefaultOutputTokens(h, 1);
    low = std::min(low, n);
    high = std::max(high, n);
    EXPECT_EQ(n, DefaultOutputTokens(h, 1));
  }
  EXPECT_EQ(low, 16);
  EXPECT_EQ(high, 512);
  EXPECT_NE(DefaultOutputTokens(5, 1), DefaultOutputTokens(5, 2));
  EXPECT_EQ(FillerToken(1, 2, 3), FillerToken(1, 2, 3));
  EXPECT_EQ(FillerToken(1, 2, 3).front(), ' ');
}

TEST(OpenAiFormat, StreamEventsParse) {
  ResponseWriter chat(ApiKind::kChat, "chatcmpl-1", 1700000000, "m\"x");
  std::string events;
  chat.AppendTokenEvent(&events, " hi", true, true);
  ASSERT_EQ(events.rfind("data: ", 0), 0u);
  ASSERT_EQ(events.substr(events.size() - 2), "\n\n");
  auto first = json::parse(events.substr(6));
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["model"], "m\"x");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(first["choices"][0]["delta"]["content"], " hi");
  EXPECT_TRUE(first["usage"].is_null());
  EXPECT_TRUE(first.contains("usage"));
  events.clear();
  chat.AppendFinishEvent(&events, "length", false);
  auto finish = json::parse(events.substr(6));
  EXPECT_EQ(finish["choices"][0]["finish_reason"], "length");
  EXPECT_FALSE(finish.contains("usage"));
  events.clear();
  chat.AppendUsageEvent(&events, {10, 5});
  auto usage = json::parse(events.substr(6));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 15);

  ResponseWriter text(ApiKind::kCompletion, "cmpl-1", 1700000000, "m");
  auto complete = json::parse(text.Complete(" a b", "stop", {3, 2}));
  EXPECT_EQ(complete["object"], "text_completion");
  EXPECT_EQ(complete["choices"][0]["text"], " a b");
  EXPECT_EQ(complete["usage"]["completion_tokens"], 2);
  auto models = json::parse(ModelList("m", 5));
  EXPECT_EQ(models["data"][0]["owned_by"], "powerplane-emulator");
}

}  // namespace
}  // namespace powerplane::engine
