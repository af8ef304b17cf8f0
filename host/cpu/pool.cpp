// CPU reference pooling: plain loops, one plane at a time. Backward passes scatter each output
// gradient to its window in output order, which is the order the CUDA gather kernels add in.
#include "host/cpu/pool.h"

#include <cmath>
#include <limits>

#include "cugrad/error.h"
#include "host/tensor/dispatch.h"

namespace cugrad::cpu {

namespace {

template <typename T>
void max_forward(const T* x, T* y, std::int64_t* indices, const Pool2dGeometry& g) {
  const std::int64_t hw = g.h * g.w, ohw = g.out_h * g.out_w;
  for (std::int64_t plane = 0; plane < g.planes; ++plane) {
    const T* in = x + plane * hw;
    for (std::int64_t i = 0; i < g.out_h; ++i) {
      for (std::int64_t j = 0; j < g.out_w; ++j) {
        T best = -std::numeric_limits<T>::infinity();
        std::int64_t best_index = -1;
        for (std::int64_t p = 0; p < g.kh; ++p) {
          const std::int64_t ih = i * g.stride_h - g.pad_h + p * g.dil_h;
          if (ih < 0 || ih >= g.h) continue;
          for (std::int64_t q = 0; q < g.kw; ++q) {
            const std::int64_t iw = j * g.stride_w - g.pad_w + q * g.dil_w;
            if (iw < 0 || iw >= g.w) continue;
            const T v = in[ih * g.w + iw];
            if (best_index < 0 || v > best || std::isnan(v)) {
              best = v;
              best_index = ih * g.w + iw;
            }
          }
        }
        const std::int64_t o = plane * ohw + i * g.out_w + j;
        y[o] = best;
        if (indices) indices[o] = best_index;
      }
    }
  }
}

template <typename T>
void max_backward(const T* dy, const std::int64_t* indices, T* dx, const Pool2dGeometry& g) {
  const std::int64_t hw = g.h * g.w, ohw = g.out_h * g.out_w;
  for (std::int64_t e = 0; e < g.in_numel(); ++e) dx[e] = T(0);
  for (std::int64_t plane = 0; plane < g.planes; ++plane) {
    for (std::int64_t k = 0; k < ohw; ++k) {
      const std::int64_t idx = indices[plane * ohw + k];
      if (idx >= 0) dx[plane * hw + idx] += dy[plane * ohw + k];
    }
  }
}

template <typename T>
void avg_forward(const T* x, T* y, const Pool2dGeometry& g) {
  const std::int64_t hw = g.h * g.w, ohw = g.out_h * g.out_w;
  const double divisor = static_cast<double>(g.kh * g.kw);
  for (std::int64_t plane = 0; plane < g.planes; ++plane) {
    const T* in = x + plane * hw;
    for (std::int64_t i = 0; i < g.out_h; ++i) {
      for (std::int64_t j = 0; j < g.out_w; ++j) {
        double sum = 0;
        for (std::int64_t p = 0; p < g.kh; ++p) {
          const std::int64_t ih = i * g.stride_h - g.pad_h + p;
          if (ih < 0 || ih >= g.h) continue;
          for (std::int64_t q = 0; q < g.kw; ++q) {
            const std::int64_t iw = j * g.stride_w - g.pad_w + q;
            if (iw >= 0 && iw < g.w) sum += static_cast<double>(in[ih * g.w + iw]);
          }
        }
        y[plane * ohw + i * g.out_w + j] = static_cast<T>(sum / divisor);
      }
    }
  }
}

template <typename T>
void avg_backward(const T* dy, T* dx, const Pool2dGeometry& g) {
  const std::int64_t hw = g.h * g.w, ohw = g.out_h * g.out_w;
  const double divisor = static_cast<double>(g.kh * g.kw);
  for (std::int64_t e = 0; e < g.in_numel(); ++e) dx[e] = T(0);
  for (std::int64_t plane = 0; plane < g.planes; ++plane) {
    T* out = dx + plane * hw;
    for (std::int64_t i = 0; i < g.out_h; ++i) {
      for (std::int64_t j = 0; j < g.out_w; ++j) {
        const T share = static_cast<T>(static_cast<double>(dy[plane * ohw + i * g.out_w + j]) / divisor);
        for (std::int64_t p = 0; p < g.kh; ++p) {
          const std::int64_t ih = i * g.stride_h - g.pad_h + p;
          if (ih < 0 || ih >= g.h) continue;
          for (std::int64_t q = 0; q < g.kw; ++q) {
            const std::int64_t iw = j * g.stride_w - g.pad_w + q;
            if (iw >= 0 && iw < g.w) out[ih * g.w + iw] += share;
          }
        }
      }
    }
  }
}

template <typename T>
void adaptive_forward(const T* x, T* y, const Pool2dGeometry& g) {
  const std::int64_t hw = g.h * g.w, ohw = g.out_h * g.out_w;
  for (std::int64_t plane = 0; plane < g.planes; ++plane) {
    const T* in = x + plane * hw;
    for (std::int64_t i = 0; i < g.out_h; ++i) {
      const std::int64_t h0 = adaptive_start(i, g.h, g.out_h), h1 = adaptive_end(i, g.h, g.out_h);
      for (std::int64_t j = 0; j < g.out_w; ++j) {
        const std::int64_t w0 = adaptive_start(j, g.w, g.out_w), w1 = adaptive_end(j, g.w, g.out_w);
        double sum = 0;
        for (std::int64_t ih = h0; ih < h1; ++ih)
          for (std::int64_t iw = w0; iw < w1; ++iw) sum += static_cast<double>(in[ih * g.w + iw]);
        y[plane * ohw + i * g.out_w + j] = static_cast<T>(sum / static_cast<double>((h1 - h0) * (w1 - w0)));
      }
    }
  }
}

template <typename T>
void adaptive_backward(const T* dy, T* dx, const Pool2dGeometry& g) {
  const std::int64_t hw = g.h * g.w, ohw = g.out_h * g.out_w;
  for (std::int64_t e = 0; e < g.in_numel(); ++e) dx[e] = T(0);
  for (std::int64_t plane = 0; plane < g.planes; ++plane) {
    T* out = dx + plane * hw;
    for (std::int64_t i = 0; i < g.out_h; ++i) {
      const std::int64_t h0 = adaptive_start(i, g.h, g.out_h), h1 = adaptive_end(i, g.h, g.out_h);
      for (std::int64_t j = 0; j < g.out_w; ++j) {
        const std::int64_t w0 = adaptive_start(j, g.w, g.out_w), w1 = adaptive_end(j, g.w, g.out_w);
        const T share = static_cast<T>(static_cast<double>(dy[plane * ohw + i * g.out_w + j]) /
                                       static_cast<double>((h1 - h0) * (w1 - w0)));
        for (std::int64_t ih = h0; ih < h1; ++ih)
          for (std::int64_t iw = w0; iw < w1; ++iw) out[ih * g.w + iw] += share;
      }
    }
  }
}

}  // namespace

void max_pool2d_forward(DType dtype, const void* x, void* y, std::int64_t* indices, const Pool2dGeometry& g) {
  dispatch_floating_dtype(dtype, "max_pool2d", [&](auto zero) {
    using T = decltype(zero);
    max_forward<T>(static_cast<const T*>(x), static_cast<T*>(y), indices, g);
  });
}

void max_pool2d_backward(DType dtype, const void* dy, const std::int64_t* indices, void* dx,
                         const Pool2dGeometry& g) {
  dispatch_floating_dtype(dtype, "max_pool2d_backward", [&](auto zero) {
    using T = decltype(zero);
    max_backward<T>(static_cast<const T*>(dy), indices, static_cast<T*>(dx), g);
  });
}

void avg_pool2d_forward(DType dtype, const void* x, void* y, const Pool2dGeometry& g) {
  dispatch_floating_dtype(dtype, "avg_pool2d", [&](auto zero) {
    using T = decltype(zero);
    avg_forward<T>(static_cast<const T*>(x), static_cast<T*>(y), g);
  });
}

void avg_pool2d_backward(DType dtype, const void* dy, void* dx, const Pool2dGeometry& g) {
  dispatch_floating_dtype(dtype, "avg_pool2d_backward", [&](auto zero) {
    using T = decltype(zero);
    avg_backward<T>(static_cast<const T*>(dy), static_cast<T*>(dx), g);
  });
}

void adaptive_avg_pool2d_forward(DType dtype, const void* x, void* y, const Pool2dGeometry& g) {
  dispatch_floating_dtype(dtype, "adaptive_avg_pool2d", [&](auto zero) {
    using T = decltype(zero);
    adaptive_forward<T>(static_cast<const T*>(x), static_cast<T*>(y), g);
  });
}

void adaptive_avg_pool2d_backward(DType dtype, const void* dy, void* dx, const Pool2dGeometry& g) {
  dispatch_floating_dtype(dtype, "adaptive_avg_pool2d_backward", [&](auto zero) {
    using T = decltype(zero);
    adaptive_backward<T>(static_cast<const T*>(dy), static_cast<T*>(dx), g);
  });
}

}  // namespace cugrad::cpu
