#include "net/server_request.h"

#include <boost/beast/core/string.hpp>

namespace powerplane::net {

ServerRequest::Span ServerRequest::Append(std::string_view s) {
  const Span span{static_cast<std::uint32_t>(text_.size()), static_cast<std::uint32_t>(s.size())};
  text_.append(s);
  return span;
}

void ServerRequest::SetStartLine(verb method, std::string_view method_string,
                                 std::string_view target, unsigned version) {
  // One allocation for a typical head: the parts are appended as Beast reads them.
  text_.reserve(512);
  method_ = method;
  method_string_ = Append(method_string);
  target_ = Append(target);
  version_ = version;
  keep_alive_ = version >= 11;
}

void ServerRequest::AddField(field id, std::string_view name, std::string_view value) {
  if (fields_.empty()) fields_.reserve(24);
  const Span n = Append(name);
  const Span v = Append(value);
  fields_.push_back({id, n, v});
}

ServerRequest::Field ServerRequest::field_at(std::size_t i) const {
  const Stored& s = fields_[i];
  return {s.id, View(s.name), View(s.value)};
}

const ServerRequest::Stored* ServerRequest::Find(field id) const {
  for (const Stored& s : fields_) {
    if (s.id == id) return &s;
  }
  return nullptr;
}

const ServerRequest::Stored* ServerRequest::Find(std::string_view name) const {
  for (const Stored& s : fields_) {
    if (s.name.size == name.size() && boost::beast::iequals(View(s.name), name)) return &s;
  }
  return nullptr;
}

std::string_view ServerRequest::operator[](field id) const {
  const Stored* s = Find(id);
  return s ? View(s->value) : std::string_view();
}

std::string_view ServerRequest::operator[](std::string_view name) const {
  const Stored* s = Find(name);
  return s ? View(s->value) : std::string_view();
}

bool ServerRequest::has(field id) const { return Find(id) != nullptr; }
bool ServerRequest::has(std::string_view name) const { return Find(name) != nullptr; }

}  // namespace powerplane::net
