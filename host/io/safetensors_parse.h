// The safetensors validator, on bytes in memory: checks the header length, the JSON header and
// every tensor entry (dtype, shape with overflow checks, offsets in range, contiguous,
// non-overlapping, covering the data section exactly) and returns the layout. Depends only on
// headers (cugrad/error.h, cugrad/dtype.h) and nlohmann-json, so the fuzz target builds it alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "cugrad/dtype.h"

namespace cugrad::io::detail {

struct SafetensorsEntry {
  std::string name;
  DType dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;  // byte offsets within the data section
};

struct SafetensorsLayout {
  std::uint64_t data_offset = 0;  // where the data section starts (8 + header length)
  std::uint64_t data_size = 0;
  std::vector<SafetensorsEntry> entries;  // sorted by offset
  std::map<std::string, std::string> metadata;
};

/// The largest header accepted (a larger one is an error, not an allocation): 100,000,000
/// bytes, the limit of the reference implementation (huggingface/safetensors), so that a file
/// cugrad accepts PyTorch's loader accepts too.
inline constexpr std::uint64_t kMaxSafetensorsHeader = 100'000'000;

/// Validates `size` bytes at `data` as a whole safetensors file; `name` (the path) is named in
/// every error, a cugrad::Error.
SafetensorsLayout parse_safetensors_layout(const void* data, std::size_t size, const std::string& name);

}  // namespace cugrad::io::detail
