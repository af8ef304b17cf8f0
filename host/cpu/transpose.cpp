// CPU reference for dimension swaps.
#include "host/cpu/transpose.h"

#include "host/tensor/dispatch.h"

namespace cugrad::cpu {
void permute_copy(DType dtype, const void* x, void* y, std::int64_t n, const PermuteIndex& index) {
  dispatch_dtype(dtype, "transpose", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* in = static_cast<const T*>(x);
    T* out = static_cast<T*>(y);
    for (std::int64_t i = 0; i < n; ++i) out[i] = in[index.in_offset(i)];
  });
}
}  // namespace cugrad::cpu
