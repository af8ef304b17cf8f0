// IDX public API: parse_idx/read_idx (the parser core in idx_parse.cpp decodes straight into a
// new CPU tensor) and write_idx (raw or gzip through zlib, written atomically).
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cugrad/data.h"
#include "host/data/idx_parse.h"
#include "host/tensor/tensor_impl.h"

namespace cugrad::data {

namespace {

// zlib counts bytes in uInt: feed and drain it in pieces it can represent.
constexpr std::size_t kZlibChunk = std::size_t{1} << 30;

// ---- writer ----

void put_be32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  out.push_back(static_cast<std::uint8_t>(v >> 24));
  out.push_back(static_cast<std::uint8_t>(v >> 16));
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v));
}

std::vector<std::uint8_t> encode(const Tensor& t) {
  std::uint8_t code = 0;
  switch (t.dtype()) {
    case DType::uint8:
      code = 0x08;
      break;
    case DType::int32:
      code = 0x0C;
      break;
    case DType::float32:
      code = 0x0D;
      break;
    case DType::float64:
      code = 0x0E;
      break;
    default:
      throw ValueError(detail::cat("write_idx: IDX has no ", t.dtype(),
                                   " type (uint8, int32, float32 and float64 "
                                   "can be written); convert with .to(dtype)"));
  }
  CUGRAD_CHECK(t.dim() >= 1 && t.dim() <= kMaxDims, "write_idx: needs 1 to ", kMaxDims, " dimensions, got ",
               t.dtype(), shape_str(t.shape()));
  for (std::int64_t s : t.shape())
    CUGRAD_CHECK(s <= std::int64_t{0xFFFFFFFF}, "write_idx: dimension ", s, " of ", shape_str(t.shape()),
                 " does not fit IDX's 32-bit sizes");
  const Tensor c = t.cpu();
  const std::size_t es = element_size(t.dtype());
  std::vector<std::uint8_t> out;
  out.reserve(4 + 4 * static_cast<std::size_t>(t.dim()) + c.nbytes());
  out.insert(out.end(), {0, 0, code, static_cast<std::uint8_t>(t.dim())});
  for (std::int64_t s : t.shape()) put_be32(out, static_cast<std::uint32_t>(s));
  const auto* src = static_cast<const std::uint8_t*>(c.raw_data());
  const std::size_t n = static_cast<std::size_t>(c.numel());
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t b = 0; b < es; ++b) out.push_back(src[i * es + (es - 1 - b)]);  // little -> big endian
  static_assert(std::endian::native == std::endian::little, "the IDX writer assumes a little-endian host");
  return out;
}

std::vector<std::uint8_t> gzip_bytes(const std::vector<std::uint8_t>& raw, const std::string& path) {
  z_stream z;
  std::memset(&z, 0, sizeof z);
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw Error(detail::cat("write_idx: ", path, ": zlib: deflateInit2 failed"));
  std::vector<std::uint8_t> out(deflateBound(&z, static_cast<uLong>(raw.size())) + 64);
  z.next_in = const_cast<Bytef*>(raw.data());
  std::size_t fed = 0;
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    if (z.avail_in == 0 && fed < raw.size()) {
      const std::size_t k = std::min(raw.size() - fed, kZlibChunk);
      z.next_in = const_cast<Bytef*>(raw.data() + fed);
      z.avail_in = static_cast<uInt>(k);
      fed += k;
    }
    if (out.size() - z.total_out < 1024) out.resize(out.size() * 2);
    z.next_out = out.data() + z.total_out;
    z.avail_out = static_cast<uInt>(std::min(out.size() - z.total_out, kZlibChunk));
    rc = deflate(&z, fed == raw.size() && z.avail_in == 0 ? Z_FINISH : Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
      deflateEnd(&z);
      throw Error(detail::cat("write_idx: ", path, ": zlib: deflate failed (", rc, ")"));
    }
  }
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

}  // namespace

Tensor parse_idx(const void* data, std::size_t size, const std::string& name) {
  Tensor out;
  idx::parse(static_cast<const std::uint8_t*>(data), size, name, [&](const idx::Header& h) {
    out = make_tensor(Shape(h.shape.begin(), h.shape.end()), h.dtype, Device::cpu());
    return out.raw_data();
  });
  return out;
}

Tensor read_idx(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!ec && std::filesystem::exists(status) && !std::filesystem::is_regular_file(status))
    throw Error(detail::cat("IDX: ", path, ": not a regular file (a directory or a device)"));
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(detail::cat("IDX: ", path, ": cannot open the file (", std::strerror(errno), ")"));
  in.seekg(0, std::ios::end);
  const std::streamoff end = in.tellg();
  if (end < 0)
    throw Error(detail::cat("IDX: ", path, ": cannot determine the file's size (not a regular file?)"));
  in.seekg(0);
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(end));
  if (!bytes.empty()) in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(end));
  if (!in) throw Error(detail::cat("IDX: ", path, ": read error"));
  return parse_idx(bytes.data(), bytes.size(), path);
}

void write_idx(const Tensor& tensor, const std::string& path, bool gzip) {
  CUGRAD_CHECK(tensor.defined(), "write_idx: undefined tensor");
  std::vector<std::uint8_t> bytes = encode(tensor);
  if (gzip) bytes = gzip_bytes(bytes, path);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out)
      throw Error(detail::cat("write_idx: ", path, ": cannot create ", tmp, " (", std::strerror(errno), ")"));
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      throw Error(detail::cat("write_idx: ", path, ": write error"));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw Error(detail::cat("write_idx: ", path, ": cannot rename ", tmp, " (", std::strerror(e), ")"));
  }
}

}  // namespace cugrad::data
