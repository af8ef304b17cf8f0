// transpose(a, d0, d1): a contiguous copy with two dimensions swapped; differentiable.
#include <utility>

#include "cuda/transpose.h"
#include "host/autograd/functions.h"
#include "host/cpu/transpose.h"
#include "host/ops/op_util.h"

namespace cugrad {

Tensor transpose(const Tensor& a, std::int64_t d0, std::int64_t d1) {
  check_defined("transpose", a);
  const std::int64_t nd = a.dim();
  CUGRAD_CHECK(nd > 0 || (d0 == 0 && d1 == 0) || (d0 == -1 && d1 == -1), "transpose: dims ", d0, ", ", d1,
               " for a 0-dimensional tensor");
  if (nd == 0) return a.clone();
  const std::int64_t i = wrap_dim("transpose", d0, nd), j = wrap_dim("transpose", d1, nd);
  Shape out_shape = a.shape();
  std::swap(out_shape[static_cast<std::size_t>(i)], out_shape[static_cast<std::size_t>(j)]);
  PermuteIndex index;
  index.ndim = static_cast<int>(nd);
  std::int64_t in_strides[kMaxDims];
  std::int64_t stride = 1;
  for (std::int64_t d = nd - 1; d >= 0; --d) {
    in_strides[d] = stride;
    stride *= a.shape()[static_cast<std::size_t>(d)];
  }
  for (std::int64_t d = 0; d < nd; ++d) {
    index.out_shape[d] = out_shape[static_cast<std::size_t>(d)];
    index.in_stride[d] = in_strides[d];
  }
  std::swap(index.in_stride[i], index.in_stride[j]);
  Tensor out = empty(out_shape, a.device(), a.dtype());
  if (a.is_cuda()) {
    OpScope scope("transpose", a.device());
    scope.reads(a);
    scope.writes(out);
    cuda::permute_copy(a.dtype(), a.raw_data(), out.raw_data(), out.numel(), index, scope.stream());
  } else {
    cpu::permute_copy(a.dtype(), a.raw_data(), out.raw_data(), out.numel(), index);
  }
  autograd::record_lambda("TransposeBackward", {a}, {out}, [i, j](const TensorList& g, const TensorList&, const autograd::Node&) {
    return TensorList{transpose(g[0], i, j)};
  });
  return out;
}

Tensor Tensor::transpose(std::int64_t d0, std::int64_t d1) const { return cugrad::transpose(*this, d0, d1); }

}  // namespace cugrad
