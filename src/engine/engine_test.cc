#include "engine/engine.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <thread>
#include <nlohmann/json.hpp>

#include "net/http_client.h"
#include "net/io_pool.h"
#include "testing/gpu_profiles.h"

namespace powerplane::engine {
namespace {

namespace asio = boost::asio;
namespace http = net::http;
using nlohmann::json;

// Splits a server-sent-event body into its `data:` payloads.
std::vector<std::string> Events(const std::string& body) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < body.size()) {
    auto end = body.find("\n\n", pos);
    if (end == std::string::npos) break;
    auto event = body.substr(pos, end - pos);
    EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
    out.push_back(event.substr(6));
    pos = end + 2;
  }
  EXPECT_EQ(pos, body.size()) << "trailing bytes";
  return out;
}

// A chat completion request with `body`, as bytes for a raw socket.
std::string RawChat(const std::string& body) {
  return "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
         "Content-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

class EngineTest : public ::testing::Test {
 protected:
  void StartEngine(EngineOptions o) {
    o.gpu = testing::H200Llama8B();
    engine_ = std::make_unique<Engine>(pool_.Executors()[0],
                                       net::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0),
                                       std::move(o));
    engine_->Start();
    pool_.Start();
  }
  void SetUp() override {
    EngineOptions o;
    o.speed = 100;
    o.max_model_len = 4096;
    StartEngine(std::move(o));
  }
  void TearDown() override {
    engine_->Stop();
    pool_.Stop();
  }
  std::future<std::expected<net::Response, std::string>> Spawn(http::verb verb,
                                                                std::string target,
                                                                std::string body) {
    net::Request req{verb, target, 11};
    req.set(http::field::host, "127.0.0.1");
    req.set(http::field::content_type, "application/json");
    req.body() = std::move(body);
    req.prepare_payload();
    return asio::co_spawn(pool_.context(0),
                          net::Fetch("127.0.0.1", engine_->port(), std::move(req),
                                     std::chrono::milliseconds(5000)),
                          asio::use_future);
  }
  net::Response Call(http::verb verb, std::string target, std::string body = "") {
    auto r = Spawn(verb, std::move(target), std::move(body)).get();
    EXPECT_TRUE(r) << r.error();
    return r ? *r : net::Response{};
  }
  net::Response Chat(const json& extra) {
    json body = {{"model", "llama-3.1-8b"},
                 {"messages", {{{"role", "user"}, {"content", "Hello there, engine."}}}}};
    body.update(extra);
    return Call(http::verb::post, "/v1/chat/completions", body.dump());
  }

  // Waits, at most a second, until the engine runs `running` sequences.
  void WaitForRunning(int running) {
    for (int i = 0; i < 200 && engine_->Stats().running != running; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  net::IoPool pool_{1};
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTest, ListsItsModelAndIsHealthy) {
  auto r = Call(http::verb::get, "/v1/models");
  ASSERT_EQ(r.result(), http::status::ok);
  auto j = json::parse(r.body());
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["data"][0]["id"], "llama-3.1-8b");
  EXPECT_EQ(j["data"][0]["object"], "model");
  EXPECT_EQ(j["data"][0]["owned_by"], "powerplane-emulator");
  EXPECT_EQ(Call(http::verb::get, "/health").result(), http::status::ok);
  EXPECT_EQ(Call(http::verb::get, "/nope").result(), http::status::not_found);
}

TEST_F(EngineTest, ChatWithMaxTokensEndsOnLength) {
  auto r = Chat({{"max_tokens", 20}});
  ASSERT_EQ(r.result(), http::status::ok) << r.body();
  EXPECT_FALSE(r["x-request-id"].empty());
  auto j = json::parse(r.body());
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 20);
  EXPECT_EQ(j["usage"]["prompt_tokens"], 5 + 4);  // 20 characters, one message.
  EXPECT_EQ(j["usage"]["total_tokens"], 29);
  const std::string content = j["choices"][0]["message"]["content"];
  EXPECT_EQ(std::count(content.begin(), content.end(), ' '), 20);
  auto stats = engine_->Stats();
  EXPECT_EQ(stats.generation_tokens_total, 20);
  EXPECT_EQ(stats.prompt_tokens_total, 9);
  EXPECT_EQ(stats.requests_total, 1);
  EXPECT_GT(stats.joules_total, 0);
}

TEST_F(EngineTest, ChatWithoutMaxTokensStopsAtADeterministicLength) {
  auto a = json::parse(Chat(json::object()).body());
  auto b = json::parse(Chat(json::object()).body());
  EXPECT_EQ(a["choices"][0]["finish_reason"], "stop");
  const int n = a["usage"]["completion_tokens"];
  EXPECT_GE(n, 16);
  EXPECT_LE(n, 512);
  EXPECT_EQ(b["usage"]["completion_tokens"], n);
}

TEST_F(EngineTest, StreamWithUsage) {
  auto r = Chat({{"max_tokens", 12}, {"stream", true}, {"stream_options", {{"include_usage", true}}}});
  ASSERT_EQ(r.result(), http::status::ok);
  EXPECT_EQ(r[http::field::content_type], "text/event-stream");
  EXPECT_FALSE(r["x-request-id"].empty());
  auto events = Events(r.body());
  ASSERT_EQ(events.size(), 12u + 3u);  // tokens, finish, usage, [DONE].
  EXPECT_EQ(events.back(), "[DONE]");
  for (std::size_t i = 0; i < 12; ++i) {
    auto chunk = json::parse(events[i]);
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    EXPECT_TRUE(chunk.contains("usage") && chunk["usage"].is_null());
    EXPECT_EQ(chunk["choices"][0]["delta"].contains("role"), i == 0);
    EXPECT_TRUE(chunk["choices"][0]["finish_reason"].is_null());
  }
  auto finish = json::parse(events[12]);
  EXPECT_EQ(finish["choices"][0]["finish_reason"], "length");
  auto usage = json::parse(events[13]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 12);
  EXPECT_EQ(usage["usage"]["total_tokens"], 21);
}

TEST_F(EngineTest, StreamWithoutUsageHasNoUsageChunk) {
  auto r = Chat({{"max_tokens", 5}, {"stream", true}});
  auto events = Events(r.body());
  ASSERT_EQ(events.size(), 5u + 2u);
  EXPECT_EQ(events.back(), "[DONE]");
  for (std::size_t i = 0; i + 1 < events.size(); ++i) {
    auto chunk = json::parse(events[i]);
    EXPECT_FALSE(chunk.contains("usage"));
    EXPECT_EQ(chunk["choices"].size(), 1u);
  }
}

TEST_F(EngineTest, Completions) {
  auto r = Call(http::verb::post, "/v1/completions",
                R"({"model":"llama-3.1-8b","prompt":"Once upon a time","max_tokens":8})");
  ASSERT_EQ(r.result(), http::status::ok) << r.body();
  auto j = json::parse(r.body());
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 4);
  EXPECT_EQ(j["usage"]["completion_tokens"], 8);
  auto s = Call(http::verb::post, "/v1/completions",
                R"({"model":"llama-3.1-8b","prompt":["a"],"max_tokens":3,"stream":true})");
  auto events = Events(s.body());
  ASSERT_EQ(events.size(), 5u);
  EXPECT_EQ(json::parse(events[0])["object"], "text_completion");
  EXPECT_TRUE(json::parse(events[0])["choices"][0].contains("text"));
}

TEST_F(EngineTest, ErrorsAreOpenAiShaped) {
  auto expect_error = [](const net::Response& r, http::status status, const char* type,
                         const char* code) {
    EXPECT_EQ(r.result(), status) << r.body();
    auto j = json::parse(r.body());
    EXPECT_EQ(j["error"]["type"], type) << r.body();
    EXPECT_TRUE(j["error"]["message"].is_string());
    if (code) {
      EXPECT_EQ(j["error"]["code"], code) << r.body();
    } else {
      EXPECT_TRUE(j["error"]["code"].is_null()) << r.body();
    }
  };
  expect_error(Call(http::verb::post, "/v1/chat/completions", "{oops"), http::status::bad_request,
               "invalid_request_error", nullptr);
  expect_error(Call(http::verb::post, "/v1/chat/completions", R"({"model":"llama-3.1-8b"})"),
               http::status::bad_request, "invalid_request_error", nullptr);
  expect_error(Call(http::verb::post, "/v1/chat/completions",
                    R"({"model":"gpt-5","messages":[{"role":"user","content":"x"}]})"),
               http::status::not_found, "invalid_request_error", "model_not_found");
  expect_error(Chat({{"messages", {{{"role", "user"}, {"content", std::string(20000, 'x')}}}}}),
               http::status::bad_request, "invalid_request_error", "context_length_exceeded");
  expect_error(Chat({{"max_tokens", 5000}}), http::status::bad_request, "invalid_request_error",
               "context_length_exceeded");
}

TEST_F(EngineTest, MetricsUseVllmNamesAndReportPower) {
  ASSERT_EQ(Chat({{"max_tokens", 20}}).result(), http::status::ok);
  auto r = Call(http::verb::get, "/metrics");
  ASSERT_EQ(r.result(), http::status::ok);
  const std::string& text = r.body();
  for (const char* needle :
       {"# TYPE vllm:num_requests_running gauge", "vllm:num_requests_waiting{model_name=\"llama-3.1-8b\"} 0",
        "vllm:kv_cache_usage_perc{", "# TYPE vllm:prompt_tokens_total counter",
        "vllm:prompt_tokens_total{model_name=\"llama-3.1-8b\"} 9",
        "vllm:generation_tokens_total{model_name=\"llama-3.1-8b\"} 20",
        "vllm:time_to_first_token_seconds_bucket{", "vllm:time_to_first_token_seconds_count{model_name=\"llama-3.1-8b\"} 1",
        "vllm:request_success_total{finished_reason=\"length\",model_name=\"llama-3.1-8b\"} 1",
        "# TYPE powerplane_gpu_power_watts gauge", "powerplane_gpu_energy_joules_total{"}) {
    EXPECT_NE(text.find(needle), std::string::npos) << needle << "\n" << text;
  }
  EXPECT_EQ(text.find("_total_total"), std::string::npos);
}

TEST_F(EngineTest, ConcurrentRequestsShareTheBatch) {
  std::vector<std::future<std::expected<net::Response, std::string>>> futures;
  json body = {{"model", "llama-3.1-8b"},
               {"messages", {{{"role", "user"}, {"content", "hi"}}}},
               {"max_tokens", 2000}};
  for (int i = 0; i < 16; ++i) {
    futures.push_back(Spawn(http::verb::post, "/v1/chat/completions", body.dump()));
  }
  // All 16 decode in one batch at the same time (continuous batching), rather than one by one.
  int max_running = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (max_running < 16 && std::chrono::steady_clock::now() < deadline) {
    max_running = std::max(max_running, engine_->Stats().running);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(max_running, 16);
  for (auto& f : futures) {
    auto r = f.get();
    ASSERT_TRUE(r) << r.error();
    EXPECT_EQ(r->result(), http::status::ok);
  }
  EXPECT_EQ(engine_->Stats().generation_tokens_total, 16 * 2000);
}

TEST_F(EngineTest, ClientGoneMidStreamCancelsTheRequest) {
  asio::io_context io;
  net::tcp::socket socket(io);
  socket.connect(net::tcp::endpoint(asio::ip::make_address("127.0.0.1"), engine_->port()));
  asio::write(socket, asio::buffer(RawChat(
                          R"({"model":"llama-3.1-8b","messages":[{"role":"user","content":"hi"}],)"
                          R"("max_tokens":4000,"stream":true})")));
  char buf[4096];
  std::size_t got = socket.read_some(asio::buffer(buf));
  ASSERT_EQ(std::string_view(buf, got).substr(0, 15), "HTTP/1.1 200 OK");
  while (got < 2000) got += socket.read_some(asio::buffer(buf));  // tokens are flowing.
  EXPECT_EQ(engine_->Stats().running, 1);
  socket.close();
  WaitForRunning(0);
  EXPECT_EQ(engine_->Stats().running, 0);
  EXPECT_EQ(engine_->Stats().kv_usage, 0);
}

// At real time: a non-streaming answer of 2,000 tokens takes about 13 s.
class RealTimeEngineTest : public EngineTest {
 protected:
  void SetUp() override {
    EngineOptions o;
    o.speed = 1;
    o.max_batch = MaxBatch();
    o.max_model_len = 4096;
    StartEngine(std::move(o));
  }
  virtual int MaxBatch() const { return EngineOptions{}.max_batch; }
};

// A non-streaming answer writes nothing until it is whole, so the engine looks for the client
// at each step instead: one that left has its generation cancelled, as vLLM aborts it.
TEST_F(RealTimeEngineTest, AClientThatLeavesANonStreamingRequestCancelsIt) {
  asio::io_context io;
  net::tcp::socket socket(io);
  socket.connect(net::tcp::endpoint(asio::ip::make_address("127.0.0.1"), engine_->port()));
  asio::write(socket, asio::buffer(RawChat(
                          R"({"model":"llama-3.1-8b","messages":[{"role":"user","content":"hi"}],)"
                          R"("max_tokens":2000})")));
  WaitForRunning(1);
  ASSERT_EQ(engine_->Stats().running, 1);
  socket.close();
  WaitForRunning(0);
  EXPECT_EQ(engine_->Stats().running, 0) << "the generation went on for a client that left";
  EXPECT_EQ(engine_->Stats().kv_usage, 0);
}

// Requests ended by a stop: a stream gets an error event and then [DONE] (the end OpenAI
// clients and the gateway look for); its chunked body ends properly.
TEST_F(RealTimeEngineTest, AStreamEndedByAStopGetsAnErrorEventThenDone) {
  json body = {{"model", "llama-3.1-8b"},
               {"max_tokens", 2000},
               {"stream", true},
               {"messages", {{{"role", "user"}, {"content", "Hello there, engine."}}}}};
  auto pending = Spawn(http::verb::post, "/v1/chat/completions", body.dump());
  WaitForRunning(1);
  ASSERT_EQ(engine_->Stats().running, 1);
  engine_->EndRequests();
  auto r = pending.get();
  ASSERT_TRUE(r) << r.error();
  const std::string& text = r->body();
  const std::string tail = "data: {\"error\":";
  const auto error_at = text.rfind(tail);
  ASSERT_NE(error_at, std::string::npos) << text.substr(text.size() > 300 ? text.size() - 300 : 0);
  EXPECT_NE(text.find("engine stopped", error_at), std::string::npos);
  EXPECT_TRUE(text.ends_with("\n\ndata: [DONE]\n\n")) << text.substr(error_at);
}

// One sequence at a time, at real time: a second request waits in the queue for seconds.
class QueuedEngineTest : public RealTimeEngineTest {
 protected:
  int MaxBatch() const override { return 1; }
};

// A stream's header goes out when the request is taken, before its first token, as vLLM's
// does: a queued stream is not mistaken for a hung engine by a client that waits for the
// header a bounded time (the gateway: 10 s).
TEST_F(QueuedEngineTest, AQueuedStreamGetsItsHeaderBeforeItsFirstToken) {
  const std::string stream =
      RawChat(R"({"model":"llama-3.1-8b","messages":[{"role":"user","content":"hi"}],)"
              R"("max_tokens":2000,"stream":true})");
  asio::io_context io;
  const net::tcp::endpoint at(asio::ip::make_address("127.0.0.1"), engine_->port());
  net::tcp::socket first(io), second(io);
  first.connect(at);
  asio::write(first, asio::buffer(stream));
  WaitForRunning(1);
  second.connect(at);
  asio::write(second, asio::buffer(stream));
  // What the second connection receives within 2 s (the first stream runs for about 13 s).
  std::string got;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  second.non_blocking(true);
  while (got.find("\r\n\r\n") == std::string::npos && std::chrono::steady_clock::now() < until) {
    char buf[4096];
    boost::system::error_code ec;
    const std::size_t n = second.read_some(asio::buffer(buf), ec);
    if (ec == asio::error::would_block) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    ASSERT_FALSE(ec) << ec.message();
    got.append(buf, n);
  }
  EXPECT_TRUE(got.starts_with("HTTP/1.1 200 OK")) << got;
  EXPECT_NE(got.find("text/event-stream"), std::string::npos) << got;
  EXPECT_EQ(got.find("data:"), std::string::npos) << "a token came: the stream was not queued";
  EXPECT_EQ(engine_->Stats().waiting, 1);
  first.close();
  second.close();
  WaitForRunning(0);
  EXPECT_EQ(engine_->Stats().running, 0);
}

class SmallEngineTest : public EngineTest {
 protected:
  void SetUp() override {
    EngineOptions o;
    o.speed = 20;
    o.max_batch = 1;
    o.max_waiting = 1;
    StartEngine(std::move(o));
  }
};

TEST_F(SmallEngineTest, FullQueueAnswers503) {
  json body = {{"model", "llama-3.1-8b"},
               {"messages", {{{"role", "user"}, {"content", "hi"}}}},
               {"max_tokens", 40}};
  std::vector<std::future<std::expected<net::Response, std::string>>> futures;
  for (int i = 0; i < 4; ++i) {
    futures.push_back(Spawn(http::verb::post, "/v1/chat/completions", body.dump()));
  }
  int ok = 0;
  int unavailable = 0;
  for (auto& f : futures) {
    auto r = f.get();
    ASSERT_TRUE(r) << r.error();
    if (r->result() == http::status::ok) ++ok;
    if (r->result() == http::status::service_unavailable) {
      ++unavailable;
      EXPECT_EQ(json::parse(r->body())["error"]["type"], "server_error");
      EXPECT_EQ((*r)[http::field::retry_after], "1");
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(unavailable, 1);
  EXPECT_EQ(ok + unavailable, 4);
}

}  // namespace
}  // namespace powerplane::engine
