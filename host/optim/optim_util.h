// Helpers the optimizers share (sgd.cpp, adam.cpp): memory overlap of tensors, 0-d float64
// entries of a state dict, and "<prefix><i>" keys.
#pragma once

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "cugrad/autograd.h"
#include "cugrad/error.h"
#include "cugrad/io.h"
#include "cugrad/tensor.h"
#include "host/runtime/capture.h"
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

/// For an optimizer's step: false when parameter `p` (index i) has no gradient; otherwise checks
/// that p is still on `device`, that its gradient matches it (shape, dtype, device) and does not
/// overlap it (it would be read while written), throwing ValueError naming `where`, and returns true.
inline bool has_valid_gradient(const Tensor& p, std::size_t i, Device device, const std::string& where) {
  const Tensor g = p.grad();
  if (!g.defined()) return false;
  CUGRAD_CHECK(p.device() == device, where, ": parameter ", i, " is now ", describe(p),
               " but the optimizer was created for ", device);
  CUGRAD_CHECK(g.shape() == p.shape() && g.dtype() == p.dtype() && g.device() == p.device(), where,
               ": the gradient of parameter ", i, " is ", describe(g), " but the parameter is ", describe(p));
  CUGRAD_CHECK(!overlap(g, p), where, ": the gradient of parameter ", i, " overlaps the parameter's memory");
  return true;
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

/// Writes v into element k of the 1-D device tensor t (one fill kernel on the current stream,
/// ordered by the storage protocol with the kernels that read t).
inline void set_device_scalar(const Tensor& t, std::int64_t k, double v) {
  NoGradGuard no_grad;
  Tensor element = t.narrow(0, k, 1);
  element.fill_(v);
}

/// True when work queued now on the current stream of `device` is being captured into a CUDA graph.
inline bool capturing(Device device) {
  return device.is_cuda() && runtime::capture_underway() &&
         runtime::stream_is_capturing(Stream::current(device));
}

/// A capturable optimizer's hyperparameters are device memory the captured kernel reads: writing
/// them inside a capture would capture the write with its value. Throws (naming `where`) when
/// `device_scalars` is defined and the current stream of `device` is being captured.
inline void check_settable(const std::string& where, const Tensor& device_scalars, Device device) {
  CUGRAD_CHECK(!device_scalars.defined() || !capturing(device), where,
               ": cannot change a capturable optimizer's hyperparameters inside a CUDA-graph capture (the "
               "write would be captured with its value); change them between replays");
}

/// The entries of a state dict as load_state_dict reads them, with errors (ValueError) that
/// name `where` and the entry: missing, not one floating-point value, a flag other than 0 or 1.
class StateReader {
 public:
  StateReader(const StateDict& state, std::string where) : state_(state), where_(std::move(where)) {}

  const Tensor& entry(const std::string& key) const {
    const auto it = state_.find(key);
    CUGRAD_CHECK(it != state_.end() && it->second.defined(), where_, ": missing entry '", key, "'");
    return it->second;
  }
  double scalar(const std::string& key) const {
    const Tensor& t = entry(key);
    CUGRAD_CHECK(t.numel() == 1 && is_floating(t.dtype()), where_, ": entry '", key,
                 "' must hold one floating-point value, got ", describe(t));
    return t.item_double();
  }
  bool flag(const std::string& key) const {
    const double v = scalar(key);
    CUGRAD_CHECK(v == 0 || v == 1, where_, ": entry '", key, "' must be 0 or 1, got ", v);
    return v == 1;
  }

 private:
  const StateDict& state_;
  std::string where_;
};

}  // namespace cugrad::optim::util
