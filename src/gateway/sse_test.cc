#include "gateway/sse.h"

#include <gtest/gtest.h>

#include <vector>

namespace powerplane::gateway {
namespace {

std::vector<std::string> Split(SseSplitter& s) {
  std::vector<std::string> out;
  std::string_view e;
  while (s.Next(&e)) out.emplace_back(e);
  return out;
}

TEST(SseTest, SplitsEventsAcrossArbitraryReads) {
  const std::string stream =
      "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n"
      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\n"
      "data: [DONE]\n\n";
  for (std::size_t cut = 1; cut < stream.size(); ++cut) {
    SseSplitter s;
    s.Feed(std::string_view(stream).substr(0, cut));
    auto a = Split(s);
    s.Feed(std::string_view(stream).substr(cut));
    auto b = Split(s);
    a.insert(a.end(), b.begin(), b.end());
    ASSERT_EQ(a.size(), 3u) << cut;
    EXPECT_EQ(a[0] + a[1] + a[2], stream);
    EXPECT_EQ(s.pending(), 0u);
  }
}

TEST(SseTest, CrLfEvents) {
  SseSplitter s;
  s.Feed("data: [DONE]\r\n\r\n");
  auto events = Split(s);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_TRUE(InspectEvent(events[0]).done);
}

TEST(SseTest, InspectsUsageContentAndErrors) {
  auto token = InspectEvent("data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n");
  EXPECT_TRUE(token.content);
  EXPECT_FALSE(token.has_usage);
  auto role = InspectEvent("data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n");
  EXPECT_FALSE(role.content);
  auto usage = InspectEvent(
      "data: {\"id\":\"x\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34,\"total_tokens\":46}}\n\n");
  EXPECT_TRUE(usage.usage_only);
  EXPECT_EQ(usage.prompt_tokens, 12);
  EXPECT_EQ(usage.completion_tokens, 34);
  EXPECT_TRUE(InspectEvent("data: {\"error\":{\"message\":\"x\"}}\n\n").error);
  EXPECT_TRUE(InspectEvent("data: [DONE]\n\n").done);
  auto completion = InspectEvent("data: {\"choices\":[{\"text\":\" word\",\"index\":0}]}\n\n");
  EXPECT_TRUE(completion.content);
}

TEST(SseTest, InspectsKeysNotLookalikesInValues) {
  // Python's json.dumps puts a space after each colon.
  auto spaced = InspectEvent(
      "data: {\"choices\": [{\"delta\": {\"content\": \"Hi\"}}], \"usage\": {\"prompt_tokens\": 2, "
      "\"completion_tokens\": 1}}\n\n");
  EXPECT_TRUE(spaced.content);
  EXPECT_TRUE(spaced.has_usage);
  EXPECT_EQ(spaced.prompt_tokens, 2);
  // Keys quoted inside a string value are text, not keys.
  auto quoted = InspectEvent(
      "data: {\"choices\":[{\"delta\":{\"content\":\"say \\\"error\\\": and \\\"usage\\\":{\"}}]}\n\n");
  EXPECT_TRUE(quoted.content);
  EXPECT_FALSE(quoted.error);
  EXPECT_FALSE(quoted.has_usage);
  // A key that only ends like one the relay reads.
  auto lookalike = InspectEvent("data: {\"xcontent\":\"a\",\"terror\":1,\"choices\":[]}\n\n");
  EXPECT_FALSE(lookalike.content);
  EXPECT_FALSE(lookalike.error);
  EXPECT_FALSE(InspectEvent("data: {\"choices\":[{\"delta\":{\"content\":null}}]}\n\n").content);
  // vLLM's `,"usage":null` is found where it starts, at the comma, in a long chunk.
  const std::string chunk =
      "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
      "\"delta\":{\"content\":\" to\"},\"finish_reason\":null}],\"usage\":null}\n\n";
  auto vllm = InspectEvent(chunk);
  ASSERT_NE(vllm.usage_null_at, std::string_view::npos);
  EXPECT_EQ(chunk.substr(vllm.usage_null_at, 13), ",\"usage\":null");
  EXPECT_FALSE(vllm.has_usage);
  EXPECT_TRUE(vllm.content);
}

// Keys are found sixteen bytes at a time, the last block overlapping the one before: a key that
// ends on a block's last byte, or in the overlap, is found wherever the padding puts it.
TEST(SseTest, FindsKeysAtEveryOffset) {
  for (std::size_t pad = 0; pad < 48; ++pad) {
    const std::string head = "data: {\"id\":\"" + std::string(pad, 'x') + "\",";
    const std::string token = head + "\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n";
    const auto t = InspectEvent(token);
    EXPECT_TRUE(t.content) << pad;
    ASSERT_NE(t.usage_null_at, std::string_view::npos) << pad;
    EXPECT_EQ(token.substr(t.usage_null_at, 13), ",\"usage\":null") << pad;
    const auto e = InspectEvent(head + "\"error\":{\"message\":\"x\"}}\n\n");
    EXPECT_TRUE(e.error) << pad;
    const auto u = InspectEvent(head + "\"choices\":[],\"usage\":{\"prompt_tokens\":4,"
                                       "\"completion_tokens\":5}}\n\n");
    EXPECT_TRUE(u.usage_only) << pad;
    EXPECT_EQ(u.completion_tokens, 5) << pad;
    // A second data line (a newline inside the event) is noticed at any offset too.
    const auto two = InspectEvent(head + "\n\"choices\":[{\"text\":\"a\"}]}\n\n");
    EXPECT_FALSE(two.content) << pad;  // the second line is not data: the event is no JSON.
  }
}

void ExpectSameInfo(const EventInfo& whole, const EventInfo& shaped, std::string_view event) {
  EXPECT_EQ(whole.done, shaped.done) << event;
  EXPECT_EQ(whole.usage_only, shaped.usage_only) << event;
  EXPECT_EQ(whole.has_usage, shaped.has_usage) << event;
  EXPECT_EQ(whole.prompt_tokens, shaped.prompt_tokens) << event;
  EXPECT_EQ(whole.completion_tokens, shaped.completion_tokens) << event;
  EXPECT_EQ(whole.content, shaped.content) << event;
  EXPECT_EQ(whole.error, shaped.error) << event;
  EXPECT_EQ(whole.usage_null_at, shaped.usage_null_at) << event;
}

// A stream's token chunks are read by their shape after the first; whatever a chunk holds
// between the same bytes, the answer is InspectEvent's.
TEST(SseTest, StreamInspectorAgreesWithAWholeReading) {
  const std::string head =
      R"(data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",)"
      R"("choices":[{"index":0,"delta":{"content":")";
  const std::string tail = R"("},"logprobs":null,"finish_reason":null}],"usage":null})"
                           "\n\n";
  const std::vector<std::string> tokens = {
      " Hello", " world", "", " a", R"(say \"hi\")", R"(\n)", R"(",\"usage\":{\"x\":1})",
      R"(","usage":{"prompt_tokens":1,"completion_tokens":2},"x":")", "line\nbreak",
      R"(\)", " end"};
  std::vector<std::string> events;
  events.push_back(R"(data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"role":"assistant",)"
                   R"("content":""},"finish_reason":null}],"usage":null})" "\n\n");
  for (const auto& t : tokens) events.push_back(head + t + tail);
  events.push_back(head + R"(x"},"finish_reason":"length"}],"usage":null})" "\n\n");
  events.push_back(R"(data: {"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":5,)"
                   R"("completion_tokens":12}})" "\n\n");
  events.push_back(head + " after" + tail);
  events.push_back(head + " again" + tail);
  events.push_back(R"(data: {"error":{"message":"x","content":"y"}})" "\n\n");
  events.push_back("data: [DONE]\n\n");
  StreamInspector inspector;
  for (const auto& e : events) ExpectSameInfo(InspectEvent(e), inspector.Inspect(e), e);
  // By shape: " world", "", " a" (after " Hello") and " again" (after " after"); the others
  // hold quotes, escapes or line ends, or follow an event whose shape differs.
  EXPECT_EQ(inspector.matched(), 4u);
  // The token read by shape is at the same place as when read whole.
  StreamInspector again;
  (void)again.Inspect(head + " one" + tail);
  const std::string longer = head + " a much longer token" + tail;
  const EventInfo shaped = again.Inspect(longer);
  EXPECT_EQ(again.matched(), 1u);
  EXPECT_EQ(longer.substr(shaped.usage_null_at, 13), ",\"usage\":null");
}

TEST(SseTest, ReadsUsageFromItsOwnObjectOnly) {
  // Members of nested objects (OpenAI's *_details) and of other objects do not count.
  auto nested = InspectEvent(
      "data: {\"choices\":[ ],\"usage\":{\"prompt_tokens_details\":{\"prompt_tokens\":999},"
      "\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10}}\n\n");
  EXPECT_TRUE(nested.has_usage);
  EXPECT_TRUE(nested.usage_only);
  EXPECT_EQ(nested.prompt_tokens, 7);
  EXPECT_EQ(nested.completion_tokens, 3);
  EXPECT_FALSE(InspectEvent("data: {\"prompt_tokens\":5,\"usage\":{\"completion_tokens\":2}}\n\n")
                   .has_usage);
  EXPECT_FALSE(InspectEvent(
      "data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1.5}}\n\n").has_usage);
  EXPECT_FALSE(InspectEvent("data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2\n\n")
                   .has_usage);  // never closed.
  // An event of several data lines is joined (with '\n') before it is read.
  auto lines = InspectEvent(
      "data: {\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n");
  EXPECT_TRUE(lines.usage_only);
  EXPECT_EQ(lines.completion_tokens, 2);
  EXPECT_EQ(lines.usage_null_at, std::string_view::npos);
  EXPECT_TRUE(InspectEvent("data: [DONE]\r\n\r\n").done);
}

TEST(SseTest, BoundsAnEndlessEvent) {
  SseSplitter s;
  std::string big(SseSplitter::kMaxEventBytes + 10, 'x');
  s.Feed(big);
  std::string_view e;
  EXPECT_FALSE(s.Next(&e));
  EXPECT_EQ(s.dropped(), 1u);
  EXPECT_EQ(s.pending(), 0u);
  s.Feed("data: [DONE]\n\n");
  EXPECT_TRUE(s.Next(&e));
}

TEST(SseTest, EventsStayWhereTheyAreUntilTheNextFeed) {
  // The relay hands on runs of events from the splitter's buffer, so events returned one after
  // another must lie one after another and stay put, even past a Next that drops an endless one.
  SseSplitter s;
  s.Feed("data: a\n\ndata: b\n\n" + std::string(SseSplitter::kMaxEventBytes + 10, 'x'));
  std::string_view a, b, c;
  ASSERT_TRUE(s.Next(&a));
  ASSERT_TRUE(s.Next(&b));
  EXPECT_EQ(a.data() + a.size(), b.data());
  EXPECT_FALSE(s.Next(&c));
  EXPECT_EQ(s.dropped(), 1u);
  EXPECT_EQ(s.pending(), 0u);
  EXPECT_EQ(a, "data: a\n\n");
  EXPECT_EQ(b, "data: b\n\n");
  s.Feed("data: c\n\n");
  ASSERT_TRUE(s.Next(&c));
  EXPECT_EQ(c, "data: c\n\n");
}

TEST(SseTest, ReadsUsageFromAWholeResponse) {
  std::int64_t p = 0, c = 0;
  EXPECT_TRUE(ReadUsage(R"({"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}})", &p, &c));
  EXPECT_EQ(p, 3);
  EXPECT_EQ(c, 4);
  EXPECT_FALSE(ReadUsage("{}", &p, &c));
  EXPECT_FALSE(ReadUsage("nope", &p, &c));
}

}  // namespace
}  // namespace powerplane::gateway
