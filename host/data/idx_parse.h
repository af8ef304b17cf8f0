// The IDX parser core: validation and decoding of a byte buffer, with no dependency on the rest
// of cugrad (only zlib and cugrad/error.h), so that the libFuzzer target can compile it alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cugrad/dtype.h"

namespace cugrad::data::idx {

/// A validated header: the element type code, the dtype it decodes to, and the sizes.
struct Header {
  std::uint8_t type_code = 0;
  DType dtype = DType::uint8;
  std::vector<std::int64_t> shape;
  std::uint64_t numel = 0;
};

/// Parses an IDX buffer (gzip or raw). After the header is validated, and before anything the
/// size of the data is allocated, calls `destination(header)` for header.numel elements of
/// header.dtype (in host byte order) to decode into; throws cugrad::Error on any problem.
Header parse(const std::uint8_t* data, std::size_t size, const std::string& name,
             const std::function<void*(const Header&)>& destination);

}  // namespace cugrad::data::idx
