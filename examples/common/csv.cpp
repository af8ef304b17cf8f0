// CsvWriter and CSV field formatting (RFC 4180 quoting, round-trip floating point).
#include "examples/common/csv.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>

#include "cugrad/error.h"

namespace cugrad::examples {

std::string csv_escape(std::string_view field) {
  if (field.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(field);
  std::string out;
  out.reserve(field.size() + 2);
  out.push_back('"');
  for (char c : field) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

namespace {
template <typename T>
std::string format_floating(T value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, value);  // shortest round trip
  return std::string(buf, res.ptr);
}
}  // namespace

CsvField::CsvField(double value) : text_(format_floating(value)) {}
CsvField::CsvField(float value) : text_(format_floating(value)) {}

CsvWriter::CsvWriter(std::string path, const std::vector<std::string>& header)
    : path_(std::move(path)), columns_(header.size()) {
  CUGRAD_CHECK(!header.empty(), "CsvWriter: '", path_, "' needs at least one column in its header");
  file_.reset(std::fopen(path_.c_str(), "wb"));
  if (!file_) throw Error("CsvWriter: cannot open '" + path_ + "' for writing (" + std::strerror(errno) + ")");
  std::string line;
  for (std::size_t i = 0; i < header.size(); ++i) {
    if (i) line.push_back(',');
    line += csv_escape(header[i]);
  }
  write_line(line);
}

void CsvWriter::write_line(const std::string& line) {
  if (std::fwrite(line.data(), 1, line.size(), file_.get()) != line.size() ||
      std::fputc('\n', file_.get()) == EOF || std::fflush(file_.get()) != 0)
    throw Error("CsvWriter: cannot write to '" + path_ + "' (" + std::strerror(errno) + ")");
}

void CsvWriter::write_row(const std::vector<CsvField>& row) {
  if (!file_) throw Error("CsvWriter: '" + path_ + "' is closed");
  CUGRAD_CHECK(row.size() == columns_, "CsvWriter: '", path_, "' has ", columns_, " columns but the row has ",
               row.size(), " fields");
  std::string line;
  for (std::size_t i = 0; i < row.size(); ++i) {
    if (i) line.push_back(',');
    line += row[i].text();
  }
  write_line(line);
  ++rows_;
}

void CsvWriter::close() {
  if (!file_) return;
  std::FILE* f = file_.release();
  if (std::fclose(f) != 0) throw Error("CsvWriter: closing '" + path_ + "' failed (" + std::strerror(errno) + ")");
}

}  // namespace cugrad::examples
