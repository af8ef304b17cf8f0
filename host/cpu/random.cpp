// CPU random fills over the shared Philox mapping (host/runtime/philox.h).
#include "host/cpu/random.h"

#include <cmath>

#include "host/runtime/philox.h"
#include "host/tensor/dispatch.h"

namespace cugrad::cpu {

using std::cos;
using std::log;
using std::sin;
using std::sqrt;

void uniform(DType dtype, void* y, std::int64_t n, std::uint64_t seed, std::uint64_t offset) {
  dispatch_dtype(dtype, "rand", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_floating_point_v<T>) {
      T* out = static_cast<T*>(y);
      for (std::int64_t i = 0; i < n; ++i) out[i] = philox::uniform_at<T>(seed, offset, i);
    } else {
      throw ValueError(detail::cat("rand: dtype ", dtype, " is not floating point"));
    }
  });
}

void normal(DType dtype, void* y, std::int64_t n, std::uint64_t seed, std::uint64_t offset) {
  dispatch_dtype(dtype, "randn", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_floating_point_v<T>) {
      T* out = static_cast<T*>(y);
      for (std::int64_t i = 0; i < n; ++i) out[i] = philox::normal_at<T>(seed, offset, i);
    } else {
      throw ValueError(detail::cat("randn: dtype ", dtype, " is not floating point"));
    }
  });
}

void randint(DType dtype, void* y, std::int64_t n, std::uint64_t seed, std::uint64_t offset,
             std::int64_t low, std::uint64_t range) {
  dispatch_dtype(dtype, "randint", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* out = static_cast<T*>(y);
    for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(philox::randint_at(seed, offset, i, low, range));
  });
}

}  // namespace cugrad::cpu
