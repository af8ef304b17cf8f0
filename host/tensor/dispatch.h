// The one place that maps a runtime DType to a C++ type. Usage:
//   dispatch_dtype(t, "op", [&](auto tag) { using T = typename decltype(tag)::type; ... });
#pragma once

#include <cstdint>

#include "cugrad/dtype.h"
#include "cugrad/error.h"

namespace cugrad {

template <typename T> struct TypeTag { using type = T; };

template <typename F>
decltype(auto) dispatch_dtype(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::float32: return f(TypeTag<float>{});
    case DType::float64: return f(TypeTag<double>{});
    case DType::int64: return f(TypeTag<std::int64_t>{});
    case DType::int32: return f(TypeTag<std::int32_t>{});
    case DType::uint8: return f(TypeTag<std::uint8_t>{});
  }
  throw ValueError(detail::cat(op, ": unsupported dtype ", static_cast<int>(t)));
}

/// Dtypes a CUDA kernel is instantiated for (float64 lives on the CPU only).
template <typename F>
decltype(auto) dispatch_cuda_dtype(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::float32: return f(TypeTag<float>{});
    case DType::int64: return f(TypeTag<std::int64_t>{});
    case DType::int32: return f(TypeTag<std::int32_t>{});
    case DType::uint8: return f(TypeTag<std::uint8_t>{});
    default: break;
  }
  throw ValueError(detail::cat(op, ": dtype ", t, " is not supported on CUDA"));
}

/// For kernels written for float and double only: calls f(float{}) or f(double{}); any other
/// dtype is a ValueError naming `op`.
template <typename F>
decltype(auto) dispatch_floating_dtype(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::float32: return f(float{});
    case DType::float64: return f(double{});
    default: break;
  }
  throw ValueError(detail::cat(op, ": needs float32 or float64, got ", t));
}

}  // namespace cugrad
