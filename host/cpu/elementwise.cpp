// CPU reference loops for elementwise ops; the math is elementwise_math.h, shared with CUDA.
#include "host/cpu/elementwise.h"

#include "host/tensor/dispatch.h"

namespace cugrad::cpu {

void unary(UnaryOp op, DType dtype, const void* x, void* y, std::int64_t n, double a, double b) {
  dispatch_dtype(dtype, "unary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* in = static_cast<const T*>(x);
    T* out = static_cast<T*>(y);
    const T ta = static_cast<T>(a), tb = static_cast<T>(b);
    for (std::int64_t i = 0; i < n; ++i) out[i] = apply_unary<T>(op, in[i], ta, tb);
  });
}

void binary(BinaryOp op, DType dtype, const void* x, const void* y, void* out, std::int64_t n,
            const BroadcastIndex& index, double alpha) {
  dispatch_dtype(dtype, "binary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* a = static_cast<const T*>(x);
    const T* b = static_cast<const T*>(y);
    if (is_comparison(op)) {
      auto* o = static_cast<std::uint8_t*>(out);
      for (std::int64_t i = 0; i < n; ++i) o[i] = apply_compare<T>(op, a[index.offset(0, i)], b[index.offset(1, i)]);
    } else {
      T* o = static_cast<T*>(out);
      const T al = static_cast<T>(alpha);
      for (std::int64_t i = 0; i < n; ++i) o[i] = apply_binary<T>(op, a[index.offset(0, i)], b[index.offset(1, i)], al);
    }
  });
}

void where(DType dtype, const std::uint8_t* cond, const void* a, const void* b, void* out,
           std::int64_t n, const BroadcastIndex& index) {
  dispatch_dtype(dtype, "where", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* pa = static_cast<const T*>(a);
    const T* pb = static_cast<const T*>(b);
    T* o = static_cast<T*>(out);
    for (std::int64_t i = 0; i < n; ++i)
      o[i] = cond[index.offset(0, i)] ? pa[index.offset(1, i)] : pb[index.offset(2, i)];
  });
}

void cast(DType from, DType to, const void* x, void* y, std::int64_t n) {
  dispatch_dtype(from, "cast", [&](auto tin) {
    using Tin = typename decltype(tin)::type;
    dispatch_dtype(to, "cast", [&](auto tout) {
      using Tout = typename decltype(tout)::type;
      const Tin* in = static_cast<const Tin*>(x);
      Tout* out = static_cast<Tout*>(y);
      for (std::int64_t i = 0; i < n; ++i) out[i] = convert<Tout>(in[i]);
    });
  });
}

void fill(DType dtype, void* y, std::int64_t n, double value) {
  dispatch_dtype(dtype, "fill", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* out = static_cast<T*>(y);
    const T v = convert<T>(value);
    for (std::int64_t i = 0; i < n; ++i) out[i] = v;
  });
}

void arange(DType dtype, void* y, std::int64_t n, double start, double step) {
  dispatch_dtype(dtype, "arange", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* out = static_cast<T*>(y);
    for (std::int64_t i = 0; i < n; ++i) out[i] = convert<T>(start + static_cast<double>(i) * step);
  });
}

}  // namespace cugrad::cpu
