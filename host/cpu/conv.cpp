// CPU reference conv2d: im2col + GEMM (CBLAS) one image and one group at a time. A 1x1
// convolution with stride 1 and no padding reads the image directly (its im2col matrix is the
// image itself), so pointwise layers skip the copy.
#include "host/cpu/conv.h"

#include <algorithm>
#include <vector>

#include "cugrad/error.h"
#include "host/cpu/matmul.h"
#include "host/tensor/dispatch.h"

namespace cugrad::cpu {

namespace {

// True when im2col(x) is x itself: every output pixel reads exactly its own input pixel.
bool is_pointwise(const Conv2dGeometry& g) {
  return g.kh == 1 && g.kw == 1 && g.stride_h == 1 && g.stride_w == 1 && g.pad_h == 0 && g.pad_w == 0;
}

// The im2col matrix of one image's group slice x (c_in/groups, h, w): row (c·kh + p)·kw + q,
// column i·out_w + j holds x[c, i·stride_h − pad_h + p·dil_h, j·stride_w − pad_w + q·dil_w], or 0
// outside the image. col is (patch, out_h·out_w).
template <typename T>
void im2col(const T* x, const Conv2dGeometry& g, T* col) {
  const std::int64_t ohw = g.out_h * g.out_w;
  for (std::int64_t c = 0; c < g.c_in_per_group(); ++c) {
    const T* plane = x + c * g.h * g.w;
    for (std::int64_t p = 0; p < g.kh; ++p) {
      for (std::int64_t q = 0; q < g.kw; ++q) {
        T* row = col + ((c * g.kh + p) * g.kw + q) * ohw;
        for (std::int64_t i = 0; i < g.out_h; ++i) {
          T* out = row + i * g.out_w;
          const std::int64_t ih = i * g.stride_h - g.pad_h + p * g.dil_h;
          if (ih < 0 || ih >= g.h) {
            std::fill(out, out + g.out_w, T(0));
            continue;
          }
          const T* src = plane + ih * g.w;
          for (std::int64_t j = 0; j < g.out_w; ++j) {
            const std::int64_t iw = j * g.stride_w - g.pad_w + q * g.dil_w;
            out[j] = (iw >= 0 && iw < g.w) ? src[iw] : T(0);
          }
        }
      }
    }
  }
}

// The adjoint of im2col: adds each entry of col to the input pixel it was read from (dx must
// hold the running sum; entries read from the padding are dropped).
template <typename T>
void col2im_add(const T* col, const Conv2dGeometry& g, T* dx) {
  const std::int64_t ohw = g.out_h * g.out_w;
  for (std::int64_t c = 0; c < g.c_in_per_group(); ++c) {
    T* plane = dx + c * g.h * g.w;
    for (std::int64_t p = 0; p < g.kh; ++p) {
      for (std::int64_t q = 0; q < g.kw; ++q) {
        const T* row = col + ((c * g.kh + p) * g.kw + q) * ohw;
        for (std::int64_t i = 0; i < g.out_h; ++i) {
          const std::int64_t ih = i * g.stride_h - g.pad_h + p * g.dil_h;
          if (ih < 0 || ih >= g.h) continue;
          T* dst = plane + ih * g.w;
          const T* in = row + i * g.out_w;
          for (std::int64_t j = 0; j < g.out_w; ++j) {
            const std::int64_t iw = j * g.stride_w - g.pad_w + q * g.dil_w;
            if (iw >= 0 && iw < g.w) dst[iw] += in[j];
          }
        }
      }
    }
  }
}

// Calls fn(b, grp, cols) for every image b and group grp, where cols is that group's input as
// im2col columns (patch, out_h * out_w), or the input itself for a pointwise convolution.
template <typename T, class Fn>
void for_each_group_columns(const T* x, const Conv2dGeometry& g, Fn fn) {
  const std::int64_t hw = g.h * g.w, ohw = g.out_h * g.out_w, cg = g.c_in_per_group();
  const bool direct = is_pointwise(g);
  std::vector<T> col(direct ? 0 : static_cast<std::size_t>(g.patch() * ohw));
  for (std::int64_t b = 0; b < g.n; ++b) {
    for (std::int64_t grp = 0; grp < g.groups; ++grp) {
      const T* xg = x + (b * g.c_in + grp * cg) * hw;
      if (!direct) im2col(xg, g, col.data());
      fn(b, grp, direct ? xg : col.data());
    }
  }
}

template <typename T>
void forward(const T* x, const T* weight, const T* bias, T* y, const Conv2dGeometry& g) {
  const std::int64_t ohw = g.out_h * g.out_w, og = g.c_out_per_group(), patch = g.patch();
  for_each_group_columns(x, g, [&](std::int64_t b, std::int64_t grp, const T* cols) {
    T* yg = y + (b * g.c_out + grp * og) * ohw;
    gemm(dtype_of<T>, false, false, og, ohw, patch, 1.0, weight + grp * og * patch, patch, cols, ohw, 0.0, yg,
         ohw);
    if (bias) {
      for (std::int64_t o = 0; o < og; ++o) {
        const T v = bias[grp * og + o];
        T* row = yg + o * ohw;
        for (std::int64_t k = 0; k < ohw; ++k) row[k] += v;
      }
    }
  });
}

template <typename T>
void backward_input(const T* dy, const T* weight, T* dx, const Conv2dGeometry& g) {
  const std::int64_t hw = g.h * g.w, ohw = g.out_h * g.out_w;
  const std::int64_t cg = g.c_in_per_group(), og = g.c_out_per_group(), patch = g.patch();
  const bool direct = is_pointwise(g);
  std::vector<T> col(direct ? 0 : static_cast<std::size_t>(patch * ohw));
  if (!direct) std::fill(dx, dx + g.x_numel(), T(0));
  for (std::int64_t b = 0; b < g.n; ++b) {
    for (std::int64_t grp = 0; grp < g.groups; ++grp) {
      const T* dyg = dy + (b * g.c_out + grp * og) * ohw;
      const T* wg = weight + grp * og * patch;
      T* dxg = dx + (b * g.c_in + grp * cg) * hw;
      // (patch, ohw) = wgᵀ (patch, og) · dyg (og, ohw); pointwise: straight into dx.
      T* out = direct ? dxg : col.data();
      gemm(dtype_of<T>, true, false, patch, ohw, og, 1.0, wg, patch, dyg, ohw, 0.0, out, ohw);
      if (!direct) col2im_add(col.data(), g, dxg);
    }
  }
}

template <typename T>
void backward_weight(const T* x, const T* dy, T* dweight, const Conv2dGeometry& g) {
  const std::int64_t ohw = g.out_h * g.out_w, og = g.c_out_per_group(), patch = g.patch();
  if (g.n == 0) {
    std::fill(dweight, dweight + g.w_numel(), T(0));
    return;
  }
  for_each_group_columns(x, g, [&](std::int64_t b, std::int64_t grp, const T* cols) {
    const T* dyg = dy + (b * g.c_out + grp * og) * ohw;
    // (og, patch) += dyg (og, ohw) · colsᵀ (ohw, patch); the first image overwrites.
    gemm(dtype_of<T>, false, true, og, patch, ohw, 1.0, dyg, ohw, cols, ohw, b == 0 ? 0.0 : 1.0,
         dweight + grp * og * patch, patch);
  });
}

template <typename T>
void backward_bias(const T* dy, T* dbias, const Conv2dGeometry& g) {
  const std::int64_t ohw = g.out_h * g.out_w;
  for (std::int64_t o = 0; o < g.c_out; ++o) {
    double sum = 0;
    for (std::int64_t b = 0; b < g.n; ++b) {
      const T* row = dy + (b * g.c_out + o) * ohw;
      for (std::int64_t k = 0; k < ohw; ++k) sum += static_cast<double>(row[k]);
    }
    dbias[o] = static_cast<T>(sum);
  }
}

}  // namespace

void conv2d_forward(DType dtype, const void* x, const void* weight, const void* bias, void* y,
                    const Conv2dGeometry& g) {
  dispatch_floating_dtype(dtype, "conv2d", [&](auto zero) {
    using T = decltype(zero);
    forward<T>(static_cast<const T*>(x), static_cast<const T*>(weight), static_cast<const T*>(bias),
               static_cast<T*>(y), g);
  });
}

void conv2d_backward_input(DType dtype, const void* dy, const void* weight, void* dx,
                           const Conv2dGeometry& g) {
  dispatch_floating_dtype(dtype, "conv2d_backward_input", [&](auto zero) {
    using T = decltype(zero);
    backward_input<T>(static_cast<const T*>(dy), static_cast<const T*>(weight), static_cast<T*>(dx), g);
  });
}

void conv2d_backward_weight(DType dtype, const void* x, const void* dy, void* dweight,
                            const Conv2dGeometry& g) {
  dispatch_floating_dtype(dtype, "conv2d_backward_weight", [&](auto zero) {
    using T = decltype(zero);
    backward_weight<T>(static_cast<const T*>(x), static_cast<const T*>(dy), static_cast<T*>(dweight), g);
  });
}

void conv2d_backward_bias(DType dtype, const void* dy, void* dbias, const Conv2dGeometry& g) {
  dispatch_floating_dtype(dtype, "conv2d_backward_bias", [&](auto zero) {
    using T = decltype(zero);
    backward_bias<T>(static_cast<const T*>(dy), static_cast<T*>(dbias), g);
  });
}

}  // namespace cugrad::cpu
