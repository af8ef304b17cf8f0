// The IDX parser core: header checks with overflow-checked sizes, zlib inflation bounded by what
// the compressed input can hold, and big-endian decoding. Trusts nothing in the buffer.
#include "host/data/idx_parse.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <sstream>

#include "cugrad/error.h"

namespace cugrad::data::idx {

namespace {

constexpr int kMaxDims = 8;  // cugrad's tensor rank limit
// zlib's documented bound: deflate never expands data by more than 1032:1.
constexpr std::uint64_t kMaxDeflateRatio = 1032;
// zlib counts bytes in uInt: feed and drain it in pieces it can represent.
constexpr std::size_t kZlibChunk = std::size_t{1} << 30;

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw Error(detail::cat("IDX: ", name, ": ", what));
}

struct Type {
  std::uint8_t code;
  const char* name;
  std::size_t file_bytes;  // element size in the file
  DType dtype;             // what it decodes to
};
constexpr Type kTypes[] = {
    {0x08, "unsigned byte", 1, DType::uint8}, {0x09, "signed byte", 1, DType::int32},
    {0x0B, "int16", 2, DType::int32},         {0x0C, "int32", 4, DType::int32},
    {0x0D, "float32", 4, DType::float32},     {0x0E, "float64", 8, DType::float64},
};

std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}
std::uint64_t be64(const std::uint8_t* p) { return (std::uint64_t{be32(p)} << 32) | be32(p + 4); }

std::string dims_str(const std::vector<std::int64_t>& shape) {
  std::ostringstream os;
  os << '[';
  for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

// The first 4 bytes: 0, 0, type code, number of dimensions.
const Type& check_magic(const std::string& name, const std::uint8_t* m) {
  if (m[0] != 0 || m[1] != 0)
    fail(name, detail::cat("bad magic number 0x", std::hex, be32(m),
                           ": an IDX file starts with two zero bytes (is this an IDX file?)"));
  for (const auto& t : kTypes)
    if (t.code == m[2]) {
      if (m[3] == 0 || m[3] > kMaxDims)
        fail(name,
             detail::cat("header declares ", int{m[3]}, " dimensions (1 to ", kMaxDims, " are supported)"));
      return t;
    }
  fail(name, detail::cat("unknown element type code 0x", std::hex, int{m[2]},
                         " (expected 0x08, 0x09, 0x0B, 0x0C, 0x0D or 0x0E)"));
}

struct Layout {
  Header header;
  std::uint64_t payload_bytes = 0;  // in the file
  const Type* type = nullptr;
};

// Sizes from the dimension words, every product checked for overflow. The element count is
// kept below 2^63 / 8 so that any byte size computed from it fits 64 bits.
Layout check_dims(const std::string& name, const Type& type, const std::uint8_t* dims, int ndims) {
  Layout l;
  l.type = &type;
  l.header.type_code = type.code;
  l.header.dtype = type.dtype;
  l.header.numel = 1;
  for (int d = 0; d < ndims; ++d) l.header.shape.push_back(be32(dims + 4 * d));
  for (std::int64_t s : l.header.shape) {
    if (__builtin_mul_overflow(l.header.numel, static_cast<std::uint64_t>(s), &l.header.numel) ||
        l.header.numel > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) / 8) {
      fail(name, detail::cat("dimensions ", dims_str(l.header.shape),
                             " overflow: the element count does not fit a 64-bit byte size"));
    }
  }
  l.payload_bytes = l.header.numel * type.file_bytes;
  return l;
}

std::string describe(const Layout& l) {
  return detail::cat(l.type->name, dims_str(l.header.shape), " (", l.payload_bytes, " bytes of data)");
}

void* destination_for(const std::string& name, const Layout& l,
                      const std::function<void*(const Header&)>& destination) {
  void* out = destination(l.header);
  if (!out && l.header.numel > 0) fail(name, "no memory to decode into");
  return out;
}

// Big-endian elements of the file type into host-order elements of the dtype.
void decode(const Layout& l, const std::uint8_t* src, void* dst) {
  const std::uint64_t n = l.header.numel;
  switch (l.type->code) {
    case 0x08:
      if (n) std::memcpy(dst, src, n);
      break;
    case 0x09: {
      auto* d = static_cast<std::int32_t*>(dst);
      for (std::uint64_t i = 0; i < n; ++i) d[i] = static_cast<std::int8_t>(src[i]);
      break;
    }
    case 0x0B: {
      auto* d = static_cast<std::int32_t*>(dst);
      for (std::uint64_t i = 0; i < n; ++i)
        d[i] = static_cast<std::int16_t>(static_cast<std::uint16_t>((src[2 * i] << 8) | src[2 * i + 1]));
      break;
    }
    case 0x0C: {
      auto* d = static_cast<std::int32_t*>(dst);
      for (std::uint64_t i = 0; i < n; ++i) d[i] = static_cast<std::int32_t>(be32(src + 4 * i));
      break;
    }
    case 0x0D: {
      auto* d = static_cast<float*>(dst);
      for (std::uint64_t i = 0; i < n; ++i) {
        const std::uint32_t bits = be32(src + 4 * i);
        std::memcpy(&d[i], &bits, 4);
      }
      break;
    }
    case 0x0E: {
      auto* d = static_cast<double*>(dst);
      for (std::uint64_t i = 0; i < n; ++i) {
        const std::uint64_t bits = be64(src + 8 * i);
        std::memcpy(&d[i], &bits, 8);
      }
      break;
    }
  }
}

Header parse_raw(const std::uint8_t* data, std::size_t size, const std::string& name,
                 const std::function<void*(const Header&)>& destination) {
  if (size == 0) fail(name, "the file is empty");
  if (size < 4)
    fail(name, detail::cat("truncated header: ", size, " bytes, fewer than the 4-byte magic number"));
  const Type& type = check_magic(name, data);
  const int ndims = data[3];
  const std::size_t header = 4 + 4 * static_cast<std::size_t>(ndims);
  if (size < header)
    fail(name, detail::cat("truncated header: ", size, " bytes, but ", ndims, " dimensions need a ", header,
                           "-byte header"));
  const Layout l = check_dims(name, type, data + 4, ndims);
  const std::uint64_t have = size - header;
  if (have < l.payload_bytes)
    fail(name, detail::cat("truncated data: the header declares ", describe(l), " but only ", have,
                           " bytes follow it"));
  if (have > l.payload_bytes)
    fail(name, detail::cat(have - l.payload_bytes, " trailing bytes after the data: the header declares ",
                           describe(l), " and ", have, " bytes follow it"));
  decode(l, data + header, destination_for(name, l, destination));
  return l.header;
}

// Streaming gzip inflation into caller-sized pieces, so that the header is read and checked
// before the payload is allocated.
class Inflater {
 public:
  Inflater(const std::uint8_t* data, std::size_t size, const std::string& name)
      : data_(data), size_(size), name_(name) {
    std::memset(&z_, 0, sizeof z_);
    // 15 + 16: expect a gzip wrapper; zlib then checks its CRC-32 and length trailer.
    if (inflateInit2(&z_, 15 + 16) != Z_OK) fail(name_, "zlib: inflateInit2 failed (out of memory?)");
    feed();
  }
  ~Inflater() { inflateEnd(&z_); }
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;

  /// Fills out[0, n); returns how many bytes it got before the (last) gzip member ended.
  std::size_t read(std::uint8_t* out, std::size_t n) {
    std::size_t got = 0;
    while (got < n) {
      if (ended_ && !next_member()) break;
      const std::size_t want = std::min(n - got, kZlibChunk);
      z_.next_out = out + got;
      z_.avail_out = static_cast<uInt>(want);
      const int rc = inflate(&z_, Z_NO_FLUSH);
      got += want - z_.avail_out;
      check(rc);
      feed();
      if (rc == Z_STREAM_END) {
        ended_ = true;
      } else if (rc == Z_BUF_ERROR && z_.avail_in == 0 && consumed() == size_) {
        // zlib could make no progress and there is no input left: the stream was cut short.
        fail(name_, detail::cat("truncated gzip data: the compressed stream ends early (all ", size_,
                                " bytes used, ", total_out(), " bytes inflated, no end-of-stream marker)"));
      }
    }
    return got;
  }

  /// After the payload: the input must hold nothing but the end of the stream.
  void expect_end(std::uint64_t payload_end) {
    std::uint8_t extra[4096];
    std::uint64_t total = 0;
    for (;;) {  // counts them all for the message (bounded: the input inflates to at most 1032x)
      const std::size_t k = read(extra, sizeof extra);
      if (k == 0) break;
      total += k;
    }
    if (total > 0)
      fail(name_, detail::cat(total, " trailing bytes after the data: the header's data ends at byte ",
                              payload_end, " of the inflated file, which has ", payload_end + total));
  }

 private:
  std::size_t consumed() const { return fed_ - z_.avail_in; }
  std::uint64_t total_out() const { return out_before_ + z_.total_out; }

  void feed() {
    if (z_.avail_in == 0 && fed_ < size_) {
      const std::size_t k = std::min(size_ - fed_, kZlibChunk);
      z_.next_in = const_cast<Bytef*>(data_ + fed_);
      z_.avail_in = static_cast<uInt>(k);
      fed_ += k;
    }
  }

  void check(int rc) {
    if (rc == Z_OK || rc == Z_STREAM_END || rc == Z_BUF_ERROR) return;
    if (rc == Z_MEM_ERROR) fail(name_, "zlib: out of memory while inflating");
    fail(name_, detail::cat("corrupt gzip data (zlib: ", z_.msg ? z_.msg : "error code ",
                            z_.msg ? std::string() : std::to_string(rc), ") after ", total_out(),
                            " inflated bytes"));
  }

  // After one gzip member another may follow (concatenated members, as gzip -d accepts);
  // anything else is an error.
  bool next_member() {
    feed();
    const std::size_t left = size_ - consumed();
    if (left == 0) return false;
    const std::uint8_t* p = data_ + consumed();
    if (left < 2 || p[0] != 0x1f || p[1] != 0x8b)
      fail(name_, detail::cat(left, " bytes of garbage after the end of the gzip stream"));
    out_before_ += z_.total_out;
    if (inflateReset(&z_) != Z_OK) fail(name_, "zlib: inflateReset failed");
    ended_ = false;
    return true;
  }

  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t fed_ = 0;
  std::uint64_t out_before_ = 0;
  const std::string& name_;
  z_stream z_;
  bool ended_ = false;
};

Header parse_gzip(const std::uint8_t* data, std::size_t size, const std::string& name,
                  const std::function<void*(const Header&)>& destination) {
  Inflater in(data, size, name);
  std::uint8_t magic[4];
  const std::size_t got = in.read(magic, 4);
  if (got == 0) fail(name, "the file is empty (a gzip stream of no data)");
  if (got < 4)
    fail(name, detail::cat("truncated header: ", got, " bytes, fewer than the 4-byte magic number"));
  const Type& type = check_magic(name, magic);
  const int ndims = magic[3];
  std::uint8_t dims[4 * kMaxDims];
  const std::size_t want = 4 * static_cast<std::size_t>(ndims);
  const std::size_t dims_got = in.read(dims, want);
  if (dims_got < want)
    fail(name, detail::cat("truncated header: ", 4 + dims_got, " bytes, but ", ndims, " dimensions need a ",
                           4 + want, "-byte header"));
  const Layout l = check_dims(name, type, dims, ndims);
  const std::uint64_t header = 4 + want;
  // Refuse, before allocating, a payload the compressed input cannot hold.
  std::uint64_t bound = 0;
  if (__builtin_mul_overflow(static_cast<std::uint64_t>(size), kMaxDeflateRatio, &bound))
    bound = std::numeric_limits<std::uint64_t>::max();
  if (l.payload_bytes > bound - std::min(bound, header))
    fail(name,
         detail::cat("truncated or corrupt: the header declares ", describe(l), ", more than ", size,
                     " bytes of gzip data can hold (deflate expands at most ", kMaxDeflateRatio, ":1)"));
  std::vector<std::uint8_t> payload;
  std::uint8_t* raw = nullptr;
  void* dst = nullptr;
  if (l.type->code == 0x08) {
    raw = static_cast<std::uint8_t*>(dst = destination_for(name, l, destination));  // bytes need no decoding
  } else {
    payload.resize(static_cast<std::size_t>(l.payload_bytes));
    raw = payload.data();
  }
  const auto n = static_cast<std::size_t>(l.payload_bytes);
  const std::size_t have = n ? in.read(raw, n) : 0;
  if (have < n)
    fail(name, detail::cat("truncated data: the header declares ", describe(l),
                           " but the gzip stream ends after ", have, " of them"));
  in.expect_end(header + l.payload_bytes);
  if (l.type->code != 0x08) decode(l, raw, destination_for(name, l, destination));
  return l.header;
}

}  // namespace

Header parse(const std::uint8_t* data, std::size_t size, const std::string& name,
             const std::function<void*(const Header&)>& destination) {
  if (size > 0 && !data) fail(name, "null data pointer");
  if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b) return parse_gzip(data, size, name, destination);
  return parse_raw(data, size, name, destination);
}

}  // namespace cugrad::data::idx
