#pragma once
// The server's reading of a request (http_server.cc only): Beast's parser kept in a
// ServerRequest, and which of its errors are the request's fault (answered 400).

#include <algorithm>
#include <array>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>
#include <string_view>

#include "net/http.h"
#include "net/server_request.h"

namespace powerplane::net::server_internal {
namespace beast = boost::beast;

// Beast's request parser, with what it reads kept in a ServerRequest instead of a message of
// basic_fields (server_request.h). Beast checks every byte, the limits and the body's framing
// (Content-Length or chunked) as its own request_parser does.
//
// It also checks what Beast leaves to its caller (RFC 9110 10.1.1, RFC 9112 6.3): a
// Transfer-Encoding whose last coding is not chunked fails as bad_transfer_encoding (the body's
// length cannot be known: 400), an Expect field with an expectation other than 100-continue fails
// as bad_value with expectation_failed() set (417), and an HTTP/1.1 request's 100-continue is
// noted for the session to answer before it reads the body (ignored in HTTP/1.0).
class RequestParser : public http::basic_parser<true> {
 public:
  explicit RequestParser(ServerRequest& request) : request_(request) {}

  // True from the header of an HTTP/1.1 request with "Expect: 100-continue" until
  // ContinueSent().
  bool expects_continue() const { return expects_continue_; }
  void ContinueSent() { expects_continue_ = false; }
  // True when the request failed for an expectation the server does not know.
  bool expectation_failed() const { return expectation_failed_; }
  // True when the request failed for a body in a content coding (Content-Encoding other than
  // identity): the server decodes none, so it answers 415 (RFC 9110 15.5.16) rather than read
  // compressed bytes as JSON.
  bool coded_body() const { return coded_body_; }
  // True when the request failed for a second Authorization field: which credentials would
  // count is ambiguous (a singleton field, RFC 9110 11.6.2), so it is 400, not the first one.
  bool several_credentials() const { return several_credentials_; }

 private:
  void on_request_impl(http::verb method, beast::string_view method_string,
                       beast::string_view target, int version, beast::error_code& ec) override {
    request_.SetStartLine(method, method_string, OriginForm(target),
                          static_cast<unsigned>(version));
    ec = {};
  }
  // A target in absolute form ("http://host:port/path?query", which a server must accept: RFC
  // 9112 3.2.2) as the origin form ("/path?query") every handler reads; any other as it is.
  static std::string_view OriginForm(std::string_view target) {
    if (target.starts_with('/')) return target;  // the usual form: nothing to look at.
    for (std::string_view scheme : {"http://", "https://"}) {
      if (target.size() < scheme.size() ||
          !beast::iequals(target.substr(0, scheme.size()), scheme)) {
        continue;
      }
      const std::string_view rest = target.substr(scheme.size());
      const std::size_t path = rest.find_first_of("/?");
      if (path == std::string_view::npos) return "/";
      if (rest[path] == '?') return target;  // "http://host?q": left as sent (a path of none).
      return rest.substr(path);
    }
    return target;
  }
  void on_response_impl(int, beast::string_view, int, beast::error_code& ec) override {
    ec = {};  // never called for a request.
  }
  void on_field_impl(http::field id, beast::string_view name, beast::string_view value,
                     beast::error_code& ec) override {
    request_.AddField(id, name, value);
    ec = {};
    if (id == http::field::expect) [[unlikely]] {
      NoteExpectations(value);
    } else if (id == http::field::transfer_encoding) [[unlikely]] {
      transfer_encoding_ = true;
    } else if (id == http::field::content_encoding) [[unlikely]] {
      if (!beast::iequals(value, "identity")) {
        coded_body_ = true;
        ec = http::error::bad_value;
      }
    } else if (id == http::field::authorization) {
      if (std::exchange(authorization_seen_, true)) [[unlikely]] {
        several_credentials_ = true;
        ec = http::error::bad_value;
      }
    }
  }
  void on_header_impl(beast::error_code& ec) override {
    ec = {};
    if (transfer_encoding_ && !chunked()) [[unlikely]] {
      ec = http::error::bad_transfer_encoding;
    } else if (expectation_failed_) [[unlikely]] {
      ec = http::error::bad_value;
    }
  }
  // Expect = #expectation, case-insensitive (empty list elements allowed).
  void NoteExpectations(std::string_view value) {
    while (!value.empty()) {
      const std::size_t comma = value.find(',');
      std::string_view member = value.substr(0, comma);
      value = comma == std::string_view::npos ? std::string_view() : value.substr(comma + 1);
      while (!member.empty() && (member.front() == ' ' || member.front() == '\t')) {
        member.remove_prefix(1);
      }
      while (!member.empty() && (member.back() == ' ' || member.back() == '\t')) {
        member.remove_suffix(1);
      }
      if (member.empty()) continue;
      if (beast::iequals(member, "100-continue")) {
        expects_continue_ = request_.version() >= 11;
      } else {
        expectation_failed_ = true;
      }
    }
  }
  void on_body_init_impl(const boost::optional<std::uint64_t>& length,
                         beast::error_code& ec) override {
    // Within the body limit: Beast refused a longer Content-Length already.
    if (length) request_.body().reserve(static_cast<std::size_t>(*length));
    ec = {};
  }
  std::size_t on_body_impl(beast::string_view data, beast::error_code& ec) override {
    request_.body().append(data);
    ec = {};
    return data.size();
  }
  void on_chunk_header_impl(std::uint64_t, beast::string_view, beast::error_code& ec) override {
    ec = {};
  }
  std::size_t on_chunk_body_impl(std::uint64_t, beast::string_view data,
                                 beast::error_code& ec) override {
    request_.body().append(data);
    ec = {};
    return data.size();
  }
  void on_finish_impl(beast::error_code& ec) override { ec = {}; }

  ServerRequest& request_;
  bool transfer_encoding_ = false;
  bool coded_body_ = false;
  bool several_credentials_ = false;
  bool authorization_seen_ = false;
  bool expects_continue_ = false;
  bool expectation_failed_ = false;
};

// The interim answer to "Expect: 100-continue" (RFC 9110 15.2.1).
inline constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";

// A request Beast's parser refused for its syntax or framing (answered 400, RFC 9112 6.3 for the
// framing), as opposed to the connection's end or failure.
inline bool IsMalformed(const beast::error_code& ec) {
  static constexpr std::array kMalformed = {http::error::bad_line_ending,
                                            http::error::bad_method,
                                            http::error::bad_target,
                                            http::error::bad_version,
                                            http::error::bad_field,
                                            http::error::bad_value,
                                            http::error::bad_content_length,
                                            http::error::multiple_content_length,
                                            http::error::bad_transfer_encoding,
                                            http::error::bad_chunk,
                                            http::error::bad_chunk_extension,
                                            http::error::bad_obs_fold};
  return std::any_of(kMalformed.begin(), kMalformed.end(), [&](http::error e) { return ec == e; });
}

}  // namespace powerplane::net::server_internal
