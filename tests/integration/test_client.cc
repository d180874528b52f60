#include "test_client.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

namespace powerplane::testing {
namespace asio = net::asio;
namespace http = net::http;
namespace beast = boost::beast;

std::string StreamResult::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (beast::iequals(k, name)) return v;
  }
  return {};
}

TestClient::TestClient(std::string host, unsigned short port)
    : host_(std::move(host)), port_(port) {
  pool_.Start();
}

TestClient::~TestClient() { pool_.Stop(); }

namespace {

asio::awaitable<StreamResult> DoCall(std::string host, unsigned short port, http::verb verb,
                                     std::string target, std::string body, std::string api_key,
                                     double timeout_s) {
  constexpr auto tuple = asio::as_tuple(asio::use_awaitable);
  StreamResult result;
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  stream.expires_after(std::chrono::milliseconds(static_cast<int>(timeout_s * 1000)));
  auto [cec] = co_await stream.async_connect(
      net::tcp::endpoint(asio::ip::make_address(host), port), tuple);
  if (cec) {
    result.error = cec.message();
    co_return result;
  }
  stream.socket().set_option(net::tcp::no_delay(true));
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, host);
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  if (!api_key.empty()) req.set(http::field::authorization, "Bearer " + api_key);
  req.body() = std::move(body);
  req.prepare_payload();
  const auto start = std::chrono::steady_clock::now();
  auto [wec, wn] = co_await http::async_write(stream, req, tuple);
  // A server may answer (413) before the whole body is sent: read the answer anyway.
  if (wec) result.error = wec.message();
  beast::flat_buffer buffer;
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  parser.skip(verb == http::verb::head);  // an answer to HEAD has no body, whatever it says.
  auto [hec, hn] = co_await http::async_read_header(stream, buffer, parser, tuple);
  if (hec) {
    result.error = hec.message();
    co_return result;
  }
  result.status = parser.get().result_int();
  for (const auto& f : parser.get()) {
    result.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  }
  char buf[65536];
  while (!parser.is_done()) {
    parser.get().body().data = buf;
    parser.get().body().size = sizeof buf;
    auto [ec, n] = co_await http::async_read_some(stream, buffer, parser, tuple);
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      result.error = ec.message();
      break;
    }
    const std::size_t got = sizeof buf - parser.get().body().size;
    if (got == 0) continue;
    const double at =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    result.chunks.push_back({at, std::string(buf, got)});
    result.body.append(buf, got);
  }
  co_return result;
}

}  // namespace

StreamResult TestClient::Call(http::verb verb, std::string target, std::string body,
                              std::string api_key, double timeout_s) {
  return asio::co_spawn(pool_.context(0),
                        DoCall(host_, port_, verb, std::move(target), std::move(body),
                               std::move(api_key), timeout_s),
                        asio::use_future)
      .get();
}

StreamResult TestClient::Chat(std::string api_key, std::string body, std::string target) {
  return Call(http::verb::post, std::move(target), std::move(body), std::move(api_key));
}

std::vector<std::string> SseData(const std::string& body) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    auto end = body.find("\n\n", pos);
    if (end == std::string::npos) break;
    out.push_back(body.substr(pos + 6, end - pos - 6));
    pos = end + 2;
  }
  return out;
}

}  // namespace powerplane::testing
