// Helpers the optimizers share (sgd.cpp, adam.cpp): memory overlap of tensors, 0-d float64
// entries of a state dict, and "<prefix><i>" keys.
#pragma once

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <string>

#include "cugrad/tensor.h"
#include "host/tensor/tensor_impl.h"

namespace cugrad::optim::util {

/// Byte range of a tensor inside its storage (`index`: the parameter it belongs to).
struct StorageRange {
  const Storage* storage;
  std::int64_t begin, end;
  std::size_t index;
};

inline StorageRange range_of(const Tensor& t, std::size_t index) {
  const auto bytes = static_cast<std::int64_t>(element_size(t.dtype()));
  const std::int64_t begin = t.storage_offset() * bytes;
  return {t.impl()->storage.get(), begin, begin + t.numel() * bytes, index};
}

/// Whether a and b share at least one byte of memory.
inline bool overlap(const Tensor& a, const Tensor& b) {
  if (!a.shares_storage(b) || a.numel() == 0 || b.numel() == 0) return false;
  const StorageRange ra = range_of(a, 0), rb = range_of(b, 0);
  return ra.begin < rb.end && rb.begin < ra.end;
}

/// A 0-d float64 CPU tensor holding v (options in state dicts).
inline Tensor cpu_scalar(double v) { return full({}, v, Device::cpu(), DType::float64); }

/// "<prefix><i>".
inline std::string indexed_key(const char* prefix, std::size_t i) { return prefix + std::to_string(i); }

/// The index of a "<prefix><i>" key written as indexed_key writes it (no sign, no leading zeros).
inline bool parse_indexed_key(const std::string& key, const char* prefix_text, std::size_t& index) {
  const std::string prefix = prefix_text;
  if (key.size() <= prefix.size() || key.compare(0, prefix.size(), prefix) != 0) return false;
  const char* first = key.data() + prefix.size();
  const char* last = key.data() + key.size();
  const auto [end, ec] = std::from_chars(first, last, index);
  return ec == std::errc() && end == last && key == indexed_key(prefix_text, index);
}

}  // namespace cugrad::optim::util
