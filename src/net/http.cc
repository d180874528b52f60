#include "net/http.h"

#include <charconv>
#include <nlohmann/json.hpp>

namespace powerplane::net {

std::string ErrorBody(std::string_view message, std::string_view type, std::string_view code,
                      std::string_view param) {
  nlohmann::json error = {{"message", message},
                          {"type", type},
                          {"param", param.empty() ? nlohmann::json() : nlohmann::json(param)},
                          {"code", code.empty() ? nlohmann::json() : nlohmann::json(code)}};
  return nlohmann::json{{"error", std::move(error)}}.dump();
}

Response ErrorResponse(http::status status, std::string_view message, std::string_view type,
                       std::string_view code, unsigned version) {
  return MakeResponse(status, ErrorBody(message, type, code), "application/json", version);
}

Response MakeResponse(http::status status, std::string body, std::string_view content_type,
                      unsigned version) {
  Response res{status, version};
  res.set(http::field::content_type, content_type);
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

bool SplitHostPort(std::string_view text, std::string* host, unsigned short* port) {
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  unsigned value = 0;
  auto digits = text.substr(colon + 1);
  auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || p != digits.data() + digits.size() || value > 65535) return false;
  *host = std::string(text.substr(0, colon));
  *port = static_cast<unsigned short>(value);
  return true;
}

}  // namespace powerplane::net
