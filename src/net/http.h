#pragma once
// HTTP plumbing shared by the gateway, the engine emulator and the fleet's probes: Beast message
// types, the JSON error shape every API client gets, and small helpers.

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/verb.hpp>
#include <string>
#include <string_view>

namespace powerplane::net {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

// The OpenAI error body: {"error":{"message","type","param":null,"code"}}. `code` empty = null.
std::string ErrorBody(std::string_view message, std::string_view type, std::string_view code = {},
                      std::string_view param = {});

// A complete JSON response with an OpenAI-shaped error.
Response ErrorResponse(http::status status, std::string_view message, std::string_view type,
                       std::string_view code = {}, unsigned version = 11);

// A complete response with `body` and `content_type`.
Response MakeResponse(http::status status, std::string body, std::string_view content_type,
                      unsigned version = 11);

// Splits "host:port"; false when it is not of that form.
bool SplitHostPort(std::string_view text, std::string* host, unsigned short* port);

}  // namespace powerplane::net
