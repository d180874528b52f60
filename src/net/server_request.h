#pragma once
// A request as a server's handler gets it. Beast's parser reads and checks every byte of it (the
// server's RequestParser, http_server.cc, is a basic_parser); only where the parts go differs
// from Beast's own message: the method, target, field names and values are appended to one
// string, and the fields are a vector of offsets into it, looked up by a scan. Beast's
// basic_fields makes an allocation, a case-insensitive tree insert and a free per field: with the
// 17 fields the official `openai` client sends, about 7,800 instructions per request, an eighth
// of the gateway's (docs/benchmarks.md, session 11).

#include <boost/beast/http/field.hpp>
#include <boost/beast/http/verb.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace powerplane::net {

class ServerRequest {
 public:
  using field = boost::beast::http::field;
  using verb = boost::beast::http::verb;
  struct Field {
    field id;  // field::unknown for a name Beast does not know.
    std::string_view name, value;
  };

  verb method() const { return method_; }
  std::string_view method_string() const { return View(method_string_); }
  std::string_view target() const { return View(target_); }
  unsigned version() const { return version_; }
  // Whether the connection stays open after the answer (from the version and Connection).
  bool keep_alive() const { return keep_alive_; }
  std::string& body() { return body_; }
  const std::string& body() const { return body_; }

  std::size_t field_count() const { return fields_.size(); }
  Field field_at(std::size_t i) const;
  // The value of the first field `id` (or named `name`, in any case); empty when there is none.
  std::string_view operator[](field id) const;
  std::string_view operator[](std::string_view name) const;
  bool has(field id) const;
  bool has(std::string_view name) const;

  // Filled by the server's parser (and by tests).
  void SetStartLine(verb method, std::string_view method_string, std::string_view target,
                    unsigned version);
  void AddField(field id, std::string_view name, std::string_view value);
  void set_keep_alive(bool keep_alive) { keep_alive_ = keep_alive; }

 private:
  struct Span {
    std::uint32_t at = 0, size = 0;
  };
  struct Stored {
    field id;
    Span name, value;
  };
  std::string_view View(Span s) const { return {text_.data() + s.at, s.size}; }
  Span Append(std::string_view s);
  const Stored* Find(field id) const;
  const Stored* Find(std::string_view name) const;

  verb method_ = verb::unknown;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  Span method_string_, target_;
  std::string text_;  // the method, the target, then each field's name and value.
  std::vector<Stored> fields_;
  std::string body_;
};

}  // namespace powerplane::net
