// 2-D pooling: the geometry shared with cuda/pool.h, and the CPU reference kernels (plain
// loops over contiguous NCHW planes; sums accumulated in double).
#pragma once

#include <cstdint>

#include "cugrad/dtype.h"
#include "cugrad/macros.h"

namespace cugrad {

/// Pooling of `planes` = N·C independent (h, w) planes into (out_h, out_w) planes. Window
/// (i, j) of max/avg pooling covers rows i·stride_h − pad_h + p·dil_h (p < kh) and columns
/// j·stride_w − pad_w + q·dil_w (q < kw); elements outside the plane are padding. Adaptive
/// pooling ignores kernel, stride, padding and dilation: its window (i, j) covers rows
/// [floor(i·h/out_h), ceil((i+1)·h/out_h)) and the same for columns (PyTorch's boundaries).
struct Pool2dGeometry {
  std::int64_t planes = 0, h = 0, w = 0;
  std::int64_t kh = 1, kw = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1;
  std::int64_t out_h = 0, out_w = 0;

  std::int64_t in_numel() const { return planes * h * w; }
  std::int64_t out_numel() const { return planes * out_h * out_w; }
  /// floor((in + 2·pad − dil·(k − 1) − 1) / stride) + 1, or 0 when the window does not fit.
  static std::int64_t out_size(std::int64_t in, std::int64_t k, std::int64_t stride, std::int64_t pad,
                               std::int64_t dil) {
    const std::int64_t span = in + 2 * pad - dil * (k - 1) - 1;
    return span < 0 ? 0 : span / stride + 1;
  }
};

namespace cpu {

// Pointers are to `dtype` elements (float32 or float64) unless typed; the geometry is valid
// (checked by the op). Every output element is written.

/// y = the maximum of each window's in-plane elements (padding is −inf, so it never wins).
/// indices (may be null): the flat in-plane index ih·w + iw of the chosen element. Window order
/// is row-major; a later element replaces the current choice when it is greater or NaN (so
/// ties keep the first maximum and a NaN wins, as in PyTorch). The first in-plane element is
/// chosen initially, so an all −inf window picks it; a window with no in-plane element (only
/// possible with dilation) gives −inf and index −1.
void max_pool2d_forward(DType dtype, const void* x, void* y, std::int64_t* indices, const Pool2dGeometry& g);

/// dx = Σ of dy over the outputs whose index points at each input element (others 0); outputs
/// with index −1 contribute nothing. Added in output order.
void max_pool2d_backward(DType dtype, const void* dy, const std::int64_t* indices, void* dx,
                         const Pool2dGeometry& g);

/// y = the sum of each window's in-plane elements divided by kh·kw (count_include_pad = true;
/// with ceil_mode false every window lies within the padded plane, so the divisor is constant).
/// Dilation must be 1.
void avg_pool2d_forward(DType dtype, const void* x, void* y, const Pool2dGeometry& g);

/// dx[e] = Σ over the windows containing e of dy / (kh·kw).
void avg_pool2d_backward(DType dtype, const void* dy, void* dx, const Pool2dGeometry& g);

/// y = the mean of each adaptive window.
void adaptive_avg_pool2d_forward(DType dtype, const void* x, void* y, const Pool2dGeometry& g);

/// dx[e] = Σ over the adaptive windows containing e of dy / (window size).
void adaptive_avg_pool2d_backward(DType dtype, const void* dy, void* dx, const Pool2dGeometry& g);

}  // namespace cpu

/// Adaptive window bounds along one axis (shared by the CPU loops and the CUDA kernels):
/// window i of `out` windows over `in` elements is [adaptive_start, adaptive_end).
CUGRAD_HOST_DEVICE inline std::int64_t adaptive_start(std::int64_t i, std::int64_t in, std::int64_t out) {
  return (i * in) / out;
}
CUGRAD_HOST_DEVICE inline std::int64_t adaptive_end(std::int64_t i, std::int64_t in, std::int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

}  // namespace cugrad
