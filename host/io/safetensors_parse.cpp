// The safetensors validator (see safetensors_parse.h).
#include "host/io/safetensors_parse.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cugrad/error.h"

namespace cugrad::io::detail {

namespace {

constexpr int kMaxDims = 8;

struct DTypeName {
  const char* name;
  DType dtype;
};
constexpr DTypeName kDTypes[] = {{"F32", DType::float32}, {"F64", DType::float64}, {"I64", DType::int64},
                                 {"I32", DType::int32},   {"U8", DType::uint8}};

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(cugrad::detail::cat("safetensors: ", path, ": ", what));
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

}  // namespace

SafetensorsLayout parse_safetensors_layout(const void* bytes, std::size_t size, const std::string& path) {
  using cugrad::detail::cat;
  const auto* p = static_cast<const unsigned char*>(bytes);
  const auto file_size = static_cast<std::uint64_t>(size);
  if (file_size < 8) fail(path, cat("file of ", file_size, " bytes is too short for a header length"));
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | p[i];
  if (header_len > kMaxSafetensorsHeader)
    fail(path, cat("header length ", header_len, " exceeds the ", kMaxSafetensorsHeader, " byte limit"));
  if (header_len > file_size - 8)
    fail(path, cat("header length ", header_len, " runs past the end of the file (", file_size, " bytes)"));

  nlohmann::json j;
  try {
    j = nlohmann::json::parse(p + 8, p + 8 + header_len);
  } catch (const std::exception& e) {
    fail(path, cat("header is not valid JSON: ", e.what()));
  }
  if (!j.is_object()) fail(path, "header is not a JSON object");

  SafetensorsLayout layout;
  layout.data_offset = 8 + header_len;
  layout.data_size = file_size - 8 - header_len;
  const std::uint64_t data_size = layout.data_size;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) fail(path, "__metadata__ is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) fail(path, cat("metadata value '", m.key(), "' is not a string"));
        layout.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const auto& v = it.value();
    const std::string& name = it.key();
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      fail(path, cat("tensor '", name, "' needs dtype, shape and data_offsets"));
    if (!v["dtype"].is_string()) fail(path, cat("tensor '", name, "': dtype is not a string"));
    const std::string dt = v["dtype"].get<std::string>();
    const DTypeName* found = nullptr;
    for (const auto& d : kDTypes)
      if (dt == d.name) found = &d;
    if (!found) fail(path, cat("tensor '", name, "': unsupported dtype ", dt, " (F32, F64, I64, I32, U8)"));
    if (!v["shape"].is_array() || v["shape"].size() > static_cast<std::size_t>(kMaxDims))
      fail(path, cat("tensor '", name, "': shape must be an array of at most ", kMaxDims, " sizes"));
    SafetensorsEntry e{name, found->dtype, {}, 0, 0};
    std::uint64_t need = element_size(found->dtype);
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) fail(path, cat("tensor '", name, "': shape entries must be non-negative integers"));
      const auto s = d.get<std::uint64_t>();
      if (s > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) ||
          (s != 0 && need > std::numeric_limits<std::uint64_t>::max() / s))
        fail(path, cat("tensor '", name, "': shape overflows"));
      need *= s;
      e.shape.push_back(static_cast<std::int64_t>(s));
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(path, cat("tensor '", name, "': data_offsets must be two non-negative integers"));
    e.begin = off[0].get<std::uint64_t>();
    e.end = off[1].get<std::uint64_t>();
    if (e.begin > e.end || e.end > data_size)
      fail(path, cat("tensor '", name, "': data_offsets [", e.begin, ", ", e.end,
                     ") out of range of the data section (", data_size, " bytes)"));
    if (e.end - e.begin != need)
      fail(path, cat("tensor '", name, "': ", e.end - e.begin, " bytes of data for ", dt, shape_text(e.shape),
                     ", which needs ", need));
    layout.entries.push_back(std::move(e));
  }
  // The data section must be covered exactly once, in offset order.
  std::sort(layout.entries.begin(), layout.entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t pos = 0;
  for (const SafetensorsEntry& e : layout.entries) {
    if (e.begin != pos)
      fail(path, cat("tensor '", e.name, "' starts at ", e.begin, " but the previous data ends at ", pos,
                     e.begin < pos ? " (overlap)" : " (gap)"));
    pos = e.end;
  }
  if (pos != data_size) fail(path, cat("the tensors cover ", pos, " bytes but the data section has ", data_size));
  return layout;
}

}  // namespace cugrad::io::detail
