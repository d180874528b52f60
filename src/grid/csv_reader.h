#pragma once
// Internal to pp_grid: a minimal line/field splitter for the price CSV files (no quoting). Fields
// are views into the text given to the constructor, which must outlive the reader.

#include <string_view>
#include <vector>

namespace powerplane::grid {

class CsvReader {
 public:
  // Skips a leading UTF-8 byte-order mark.
  explicit CsvReader(std::string_view text);

  // Moves to the next non-blank line and splits it; false at the end of the text.
  bool Next();
  // 1-based physical line number of the current line (blank lines counted).
  int line_number() const { return line_number_; }
  // The current line's fields, spaces and tabs around each removed.
  const std::vector<std::string_view>& fields() const { return fields_; }

 private:
  std::string_view rest_;
  int line_number_ = 0;
  std::vector<std::string_view> fields_;
};

}  // namespace powerplane::grid
