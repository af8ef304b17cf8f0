// What the optimizer tests share (sgd_test, adam_test): leaf parameters, and CUDA float32
// parameters with float64 CPU copies ("twins") for the GPU suites' comparisons.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "cugrad/cugrad.h"

namespace cugrad::testing {

/// A detached copy of t that requires grad (a leaf parameter).
inline Tensor leaf(const Tensor& t) {
  Tensor p = t.detach();
  p.requires_grad_(true);
  return p;
}

/// CUDA float32 parameters and their float64 CPU copies, index for index.
struct Twin {
  TensorList gpu, cpu;
};

/// Random CUDA parameters of `shapes` with float64 CPU copies.
inline Twin make_twin(const std::vector<Shape>& shapes) {
  Twin t;
  for (const auto& s : shapes) {
    t.gpu.push_back(leaf(randn(s, Device::cuda(0))));
    t.cpu.push_back(leaf(t.gpu.back().cpu().to(DType::float64)));
  }
  return t;
}

/// Awkward sizes (`large` elements among them), the boundaries of a kernel's `chunk`, an empty
/// tensor, and parameters that are views of one storage at offsets that are not multiples of 4
/// elements (16 bytes), so vector accesses must fall back.
inline Twin make_awkward_twin(std::int64_t chunk, std::int64_t large) {
  Twin t = make_twin({{1}, {7}, {33}, {large}, {4}, {chunk}, {chunk + 1}, {2 * chunk + 5}, {3, 5, 7}, {0}});
  const Tensor arena = randn({5000}, Device::cuda(0));
  const std::pair<std::int64_t, std::int64_t> views[] = {{1, 1001}, {1003, 7}, {1012, 4}, {1016, 3 * 677}};
  for (const auto& [offset, n] : views) {
    t.gpu.push_back(leaf(arena.narrow(0, offset, n)));
    t.cpu.push_back(leaf(t.gpu.back().cpu().to(DType::float64)));
  }
  return t;
}

}  // namespace cugrad::testing
