// conv2d: the geometry shared with cuda/conv.h, and the CPU reference kernels (im2col + GEMM
// through CBLAS for the forward pass and the weight gradient, GEMM + col2im for the input gradient).
#pragma once

#include <array>
#include <cstdint>

#include "cugrad/dtype.h"

namespace cugrad {

/// One 2-D convolution (cross-correlation) of contiguous NCHW tensors:
///   x (n, c_in, h, w), weight (c_out, c_in / groups, kh, kw), bias (c_out), y (n, c_out, out_h, out_w),
///   y[b, o, i, j] = bias[o] + Σ_{c, p, q} weight[o, c, p, q] ·
///                   x[b, g·c_in/groups + c, i·stride_h − pad_h + p·dil_h, j·stride_w − pad_w + q·dil_w]
/// where g = o / (c_out / groups) and x is zero outside the image.
struct Conv2dGeometry {
  std::int64_t n = 0, c_in = 0, h = 0, w = 0;
  std::int64_t c_out = 0, kh = 1, kw = 1;
  std::int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1;
  std::int64_t groups = 1;
  std::int64_t out_h = 0, out_w = 0;

  std::int64_t c_in_per_group() const { return c_in / groups; }
  std::int64_t c_out_per_group() const { return c_out / groups; }
  /// Rows of the im2col matrix of one group: (c_in / groups) · kh · kw.
  std::int64_t patch() const { return c_in_per_group() * kh * kw; }
  std::int64_t x_numel() const { return n * c_in * h * w; }
  std::int64_t w_numel() const { return c_out * patch(); }
  std::int64_t y_numel() const { return n * c_out * out_h * out_w; }
  /// out = floor((in + 2·pad − dil·(k − 1) − 1) / stride) + 1 (may be <= 0 for bad arguments).
  static std::int64_t out_size(std::int64_t in, std::int64_t k, std::int64_t stride, std::int64_t pad,
                               std::int64_t dil) {
    const std::int64_t span = in + 2 * pad - dil * (k - 1) - 1;
    return span < 0 ? 0 : span / stride + 1;
  }
  bool operator==(const Conv2dGeometry&) const = default;
  /// Every field, in declaration order (cache keys).
  std::array<std::int64_t, 16> fields() const {
    return {n,        c_in,  h,     w,     c_out, kh,     kw,    stride_h,
            stride_w, pad_h, pad_w, dil_h, dil_w, groups, out_h, out_w};
  }
};

namespace cpu {

// All pointers are to `dtype` elements (float32 or float64), contiguous NCHW. The geometry is
// valid (checked by the op): sizes >= 1 except n (>= 0), out_h, out_w >= 1, groups divide c_in
// and c_out. Products go through cpu::gemm (CBLAS), one image and one group at a time.

/// y = conv(x, weight) + bias; bias may be null.
void conv2d_forward(DType dtype, const void* x, const void* weight, const void* bias, void* y,
                    const Conv2dGeometry& g);

/// dx = ∂(Σ dy·y)/∂x: per image and group, col = weightᵀ · dy, then col2im adds each column
/// entry back to the input pixel it was read from. dx is fully written.
void conv2d_backward_input(DType dtype, const void* dy, const void* weight, void* dx,
                           const Conv2dGeometry& g);

/// dweight = Σ over images of dy · im2col(x)ᵀ (per group). Fully written (zeros when n == 0).
void conv2d_backward_weight(DType dtype, const void* x, const void* dy, void* dweight,
                            const Conv2dGeometry& g);

/// dbias[o] = Σ dy[b, o, i, j] over images and output pixels, accumulated in double.
void conv2d_backward_bias(DType dtype, const void* dy, void* dbias, const Conv2dGeometry& g);

}  // namespace cpu
}  // namespace cugrad
