#include "grid/csv_reader.h"

#include <cstring>

namespace powerplane::grid {
namespace {

bool IsBlank(char c) { return c == ' ' || c == '\t'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsBlank(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsBlank(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace

CsvReader::CsvReader(std::string_view text) : rest_(text) {
  if (rest_.starts_with("\xEF\xBB\xBF")) rest_.remove_prefix(3);
}

bool CsvReader::Next() {
  while (!rest_.empty()) {
    const void* nl = std::memchr(rest_.data(), '\n', rest_.size());
    const std::size_t len =
        nl == nullptr ? rest_.size()
                      : static_cast<std::size_t>(static_cast<const char*>(nl) - rest_.data());
    std::string_view line = rest_.substr(0, len);
    rest_.remove_prefix(nl == nullptr ? len : len + 1);
    ++line_number_;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (Trim(line).empty()) continue;

    fields_.clear();
    while (true) {
      const std::size_t comma = line.find(',');
      if (comma == std::string_view::npos) {
        fields_.push_back(Trim(line));
        break;
      }
      fields_.push_back(Trim(line.substr(0, comma)));
      line.remove_prefix(comma + 1);
    }
    return true;
  }
  return false;
}

}  // namespace powerplane::grid
