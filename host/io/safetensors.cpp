// safetensors reader and writer: an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the
// data section. The reader trusts nothing in the file.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <vector>

#include "cugrad/io.h"
#include "host/ops/op_util.h"

namespace cugrad::io {

namespace {

constexpr std::uint64_t kMaxHeader = 100ull << 20;

struct DTypeName {
  const char* name;
  DType dtype;
};
constexpr DTypeName kDTypes[] = {{"F32", DType::float32}, {"F64", DType::float64}, {"I64", DType::int64},
                                 {"I32", DType::int32},   {"U8", DType::uint8}};

const char* name_of(DType t) {
  for (const auto& d : kDTypes)
    if (d.dtype == t) return d.name;
  return "?";
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(detail::cat("safetensors: ", path, ": ", what));
}

}  // namespace

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open the file");
  in.seekg(0, std::ios::end);
  const auto file_size = static_cast<std::uint64_t>(in.tellg());
  in.seekg(0);
  if (file_size < 8) fail(path, detail::cat("file of ", file_size, " bytes is too short for a header length"));
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > kMaxHeader) fail(path, detail::cat("header length ", header_len, " exceeds the ", kMaxHeader, " byte limit"));
  if (header_len > file_size - 8)
    fail(path, detail::cat("header length ", header_len, " runs past the end of the file (", file_size, " bytes)"));
  std::string header(static_cast<std::size_t>(header_len), '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_len));
  if (!in) fail(path, "could not read the header");

  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const std::exception& e) {
    fail(path, detail::cat("header is not valid JSON: ", e.what()));
  }
  if (!j.is_object()) fail(path, "header is not a JSON object");

  const std::uint64_t data_size = file_size - 8 - header_len;
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    std::uint64_t begin, end;
  };
  std::vector<Entry> entries;
  SafetensorsFile result;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) fail(path, "__metadata__ is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) fail(path, detail::cat("metadata value '", m.key(), "' is not a string"));
        result.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const auto& v = it.value();
    const std::string& name = it.key();
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      fail(path, detail::cat("tensor '", name, "' needs dtype, shape and data_offsets"));
    if (!v["dtype"].is_string()) fail(path, detail::cat("tensor '", name, "': dtype is not a string"));
    const std::string dt = v["dtype"].get<std::string>();
    const DTypeName* found = nullptr;
    for (const auto& d : kDTypes)
      if (dt == d.name) found = &d;
    if (!found) fail(path, detail::cat("tensor '", name, "': unsupported dtype ", dt, " (F32, F64, I64, I32, U8)"));
    if (!v["shape"].is_array() || v["shape"].size() > static_cast<std::size_t>(kMaxDims))
      fail(path, detail::cat("tensor '", name, "': shape must be an array of at most ", kMaxDims, " sizes"));
    Entry e{name, found->dtype, {}, 0, 0};
    std::uint64_t bytes = element_size(found->dtype);
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) fail(path, detail::cat("tensor '", name, "': shape entries must be non-negative integers"));
      const auto s = d.get<std::uint64_t>();
      if (s > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) ||
          (s != 0 && bytes > std::numeric_limits<std::uint64_t>::max() / s))
        fail(path, detail::cat("tensor '", name, "': shape overflows"));
      bytes *= s;
      e.shape.push_back(static_cast<std::int64_t>(s));
    }
    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(path, detail::cat("tensor '", name, "': data_offsets must be two non-negative integers"));
    e.begin = off[0].get<std::uint64_t>();
    e.end = off[1].get<std::uint64_t>();
    if (e.begin > e.end || e.end > data_size)
      fail(path, detail::cat("tensor '", name, "': data_offsets [", e.begin, ", ", e.end,
                             ") out of range of the data section (", data_size, " bytes)"));
    if (e.end - e.begin != bytes)
      fail(path, detail::cat("tensor '", name, "': ", e.end - e.begin, " bytes of data for ", dt, shape_str(e.shape),
                             ", which needs ", bytes));
    entries.push_back(std::move(e));
  }
  // The data section must be covered exactly once, in offset order.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t pos = 0;
  for (const Entry& e : entries) {
    if (e.begin != pos)
      fail(path, detail::cat("tensor '", e.name, "' starts at ", e.begin, " but the previous data ends at ", pos,
                             e.begin < pos ? " (overlap)" : " (gap)"));
    pos = e.end;
  }
  if (pos != data_size)
    fail(path, detail::cat("the tensors cover ", pos, " bytes but the data section has ", data_size));

  std::vector<char> data(static_cast<std::size_t>(data_size));
  in.read(data.data(), static_cast<std::streamsize>(data_size));
  if (!in) fail(path, "could not read the data section");
  for (const Entry& e : entries) {
    if (result.tensors.count(e.name)) fail(path, detail::cat("duplicate tensor '", e.name, "'"));
    result.tensors[e.name] = from_blob(data.data() + e.begin, e.shape, e.dtype);
  }
  return result;
}

StateDict load_safetensors(const std::string& path, Device device) {
  StateDict out;
  for (auto& [name, t] : read_safetensors(path).tensors) out[name] = t.to(device);
  return out;
}

void save_safetensors(const StateDict& tensors, const std::string& path,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<Tensor> host;
  std::uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    CUGRAD_CHECK(t.defined(), "save_safetensors: tensor '", name, "' is undefined");
    CUGRAD_CHECK(name != "__metadata__", "save_safetensors: '__metadata__' is reserved");
    host.push_back(t.detach().cpu());
    std::vector<std::int64_t> shape(t.shape().begin(), t.shape().end());
    header[name] = {{"dtype", name_of(t.dtype())}, {"shape", shape}, {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string text = header.dump();
  while (text.size() % 8) text.push_back(' ');  // keep the data section 8-byte aligned
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(detail::cat("save_safetensors: cannot write ", tmp));
    unsigned char len[8];
    std::uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const Tensor& t : host) out.write(static_cast<const char*>(t.raw_data()), static_cast<std::streamsize>(t.nbytes()));
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      throw Error(detail::cat("save_safetensors: writing ", tmp, " failed"));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(detail::cat("save_safetensors: cannot rename ", tmp, " to ", path));
  }
}

}  // namespace cugrad::io
