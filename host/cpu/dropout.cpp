// CPU reference of the fused dropout (see host/cpu/dropout.h).
#include "host/cpu/dropout.h"

#include "host/runtime/philox.h"
#include "host/tensor/dispatch.h"

namespace cugrad::cpu {

void dropout_forward(DType dtype, const void* x, void* y, std::uint8_t* mask, std::int64_t n,
                     std::uint64_t seed, std::uint64_t offset, double p, double scale) {
  dispatch_dtype(dtype, "dropout", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_floating_point_v<T>) {
      const T* in = static_cast<const T*>(x);
      T* out = static_cast<T*>(y);
      const T pt = static_cast<T>(p), st = static_cast<T>(scale);
      for (std::int64_t i = 0; i < n; ++i) {
        const bool keep = philox::uniform_at<T>(seed, offset, i) >= pt;
        mask[i] = keep ? 1 : 0;
        out[i] = in[i] * (keep ? st : T(0));
      }
    } else {
      throw ValueError(detail::cat("dropout: dtype ", dtype, " is not floating point"));
    }
  });
}

void dropout_backward(DType dtype, const void* dy, const std::uint8_t* mask, void* dx, std::int64_t n,
                      double scale) {
  dispatch_dtype(dtype, "dropout_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_floating_point_v<T>) {
      const T* g = static_cast<const T*>(dy);
      T* out = static_cast<T*>(dx);
      const T st = static_cast<T>(scale);
      for (std::int64_t i = 0; i < n; ++i) out[i] = g[i] * (mask[i] ? st : T(0));
    } else {
      throw ValueError(detail::cat("dropout_backward: dtype ", dtype, " is not floating point"));
    }
  });
}

}  // namespace cugrad::cpu
