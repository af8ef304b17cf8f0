// CsvWriter: writes metrics tables (one row per epoch or step) as RFC 4180 CSV, flushing
// each row so that a crashed or interrupted run still leaves a readable file.
#pragma once

#include <concepts>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cugrad::examples {

/// Quotes `field` if it holds a comma, a double quote, CR or LF (inner quotes doubled);
/// otherwise returns it unchanged.
std::string csv_escape(std::string_view field);

/// One CSV cell: text (quoted when needed) or a number (integers exactly, floating point as
/// the shortest text that reads back to the same value of its own type, so 0.1f is "0.1";
/// NaN as "nan", infinities as "inf" and "-inf").
class CsvField {
 public:
  CsvField(const char* text) : text_(csv_escape(text)) {}
  CsvField(std::string_view text) : text_(csv_escape(text)) {}
  CsvField(const std::string& text) : text_(csv_escape(text)) {}
  CsvField(double value);
  CsvField(float value);
  template <std::integral T>
    requires(!std::same_as<T, char> && !std::same_as<T, bool>)
  CsvField(T value) : text_(std::to_string(value)) {}
  CsvField(bool value) : text_(value ? "true" : "false") {}

  /// The cell as written to the file (already quoted/escaped).
  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

/// Writes a header row on construction, then rows of exactly as many fields.
///
///   CsvWriter csv("metrics.csv", {"epoch", "loss", "accuracy"});
///   csv.write_row({1, 0.4312, 0.8765});
class CsvWriter {
 public:
  /// Creates (truncates) `path` and writes the header. Throws cugrad::Error naming the path
  /// when it cannot be opened or written, cugrad::ValueError for an empty header.
  CsvWriter(std::string path, const std::vector<std::string>& header);
  CsvWriter(CsvWriter&&) noexcept = default;
  CsvWriter& operator=(CsvWriter&&) noexcept = default;
  ~CsvWriter() = default;

  /// Writes one row and flushes it. Throws cugrad::ValueError when the row does not have
  /// columns() fields, cugrad::Error on a write failure or after close().
  void write_row(const std::vector<CsvField>& row);
  /// Same as write_row.
  void row(const std::vector<CsvField>& fields) { write_row(fields); }
  /// Closes the file (reporting a failed final flush as cugrad::Error); idempotent.
  void close();

  const std::string& path() const { return path_; }
  std::size_t columns() const { return columns_; }
  std::size_t rows_written() const { return rows_; }

 private:
  struct Closer {
    void operator()(std::FILE* f) const noexcept { std::fclose(f); }
  };
  void write_line(const std::string& line);

  std::string path_;
  std::size_t columns_ = 0;
  std::size_t rows_ = 0;
  std::unique_ptr<std::FILE, Closer> file_;
};

}  // namespace cugrad::examples
