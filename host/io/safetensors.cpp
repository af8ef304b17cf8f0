// safetensors reader and writer: an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the
// data section. The reader trusts nothing in the file.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <vector>

#include "cugrad/io.h"
#include "host/io/safetensors_parse.h"
#include "host/ops/op_util.h"

namespace cugrad::io {

namespace {

const char* name_of(DType t) {
  switch (t) {
    case DType::float32: return "F32";
    case DType::float64: return "F64";
    case DType::int64: return "I64";
    case DType::int32: return "I32";
    case DType::uint8: return "U8";
  }
  return "?";
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(cugrad::detail::cat("safetensors: ", path, ": ", what));
}

}  // namespace

SafetensorsFile parse_safetensors(const void* data, std::size_t size, const std::string& name) {
  const detail::SafetensorsLayout layout = detail::parse_safetensors_layout(data, size, name);
  const char* base = static_cast<const char*>(data) + layout.data_offset;
  SafetensorsFile result;
  result.metadata = layout.metadata;
  for (const auto& e : layout.entries) {
    if (result.tensors.count(e.name)) fail(name, cugrad::detail::cat("duplicate tensor '", e.name, "'"));
    result.tensors[e.name] = from_blob(base + e.begin, Shape(e.shape.begin(), e.shape.end()), e.dtype);
  }
  return result;
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!ec && std::filesystem::exists(status) && !std::filesystem::is_regular_file(status))
    fail(path, "not a regular file (a directory or a device)");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open the file");
  in.seekg(0, std::ios::end);
  const auto file_size = static_cast<std::uint64_t>(in.tellg());
  in.seekg(0);
  // Only the 8-byte length decides how much header to read; the whole file is then validated
  // in memory (a header length over the limit is rejected before anything large is read).
  if (file_size >= 8) {
    unsigned char len_bytes[8];
    in.read(reinterpret_cast<char*>(len_bytes), 8);
    if (!in) fail(path, "could not read the header length");
    std::uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
    if (header_len > detail::kMaxSafetensorsHeader)
      fail(path, cugrad::detail::cat("header length ", header_len, " exceeds the ", detail::kMaxSafetensorsHeader,
                             " byte limit"));
    in.seekg(0);
  }
  std::vector<char> bytes(static_cast<std::size_t>(file_size));
  in.read(bytes.data(), static_cast<std::streamsize>(file_size));
  if (!in) fail(path, "could not read the file");
  return parse_safetensors(bytes.data(), bytes.size(), path);
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
    if (!out) throw Error(cugrad::detail::cat("save_safetensors: cannot write ", tmp));
    unsigned char len[8];
    std::uint64_t n = text.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const Tensor& t : host) out.write(static_cast<const char*>(t.raw_data()), static_cast<std::streamsize>(t.nbytes()));
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      throw Error(cugrad::detail::cat("save_safetensors: writing ", tmp, " failed"));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(cugrad::detail::cat("save_safetensors: cannot rename ", tmp, " to ", path));
  }
}

}  // namespace cugrad::io
