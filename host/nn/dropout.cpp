// nn::functional::dropout: one fused pass each way (cuda/dropout.cu, host/cpu/dropout.cpp).
//
// The mask is drawn from the global generator exactly as rand_like(x) would (same numbers, the
// generator advanced by the same amount), an element is kept when its draw is >= p (compared in
// x's dtype), and kept elements are multiplied by scale = 1/(1-p) rounded to x's dtype: the
// values of the composite ge(rand_like(x), p) · scale · x this replaced, bit for bit. The node
// saves a one-byte mask; its backward is dy · (mask ? scale : 0). p == 1 gives zeros (with a
// zero gradient), !training or p == 0 returns x itself.
#include "cuda/dropout.h"
#include "cugrad/nn/functional.h"
#include "host/autograd/functions.h"
#include "host/cpu/dropout.h"
#include "host/ops/op_util.h"
#include "host/runtime/capture.h"
#include "host/runtime/generator.h"
#include "host/runtime/philox.h"

namespace cugrad::nn::functional {

namespace {

constexpr const char* kDropout = "dropout";
constexpr const char* kBackward = "DropoutBackward";

Tensor dropout_backward(const Tensor& dy, const Tensor& mask, double scale) {
  CUGRAD_CHECK(dy.shape() == mask.shape() && dy.device() == mask.device(), kBackward,
               ": the output gradient ", describe(dy), " does not match the mask ", describe(mask));
  Tensor dx = empty_like(dy);
  if (dy.is_cuda()) {
    OpScope scope(kBackward, dy.device());
    scope.reads(dy);
    scope.reads(mask);
    scope.writes(dx);
    cuda::dropout_backward(dy.data_ptr<float>(), mask.data_ptr<std::uint8_t>(), dx.data_ptr<float>(),
                           dy.numel(), static_cast<float>(scale), scope.stream());
  } else {
    cpu::dropout_backward(dy.dtype(), dy.raw_data(), mask.data_ptr<std::uint8_t>(), dx.raw_data(), dy.numel(),
                          scale);
  }
  return dx;
}

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training) {
  check_defined(kDropout, x);
  CUGRAD_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability must be in [0, 1], got ", p, " for ", describe(x));
  CUGRAD_CHECK(is_floating(x.dtype()), "dropout: needs a floating-point input, got ", describe(x));
  if (!training || p == 0.0) return x;
  if (p == 1.0) return x * 0.0;  // zeros, and a zero gradient
  const double scale = 1.0 / (1.0 - p);
  Tensor y = empty_like(x);
  Tensor mask = empty(x.shape(), x.device(), DType::uint8);
  const runtime::DeviceDraw g =
      runtime::reserve_device_random(x.device(), philox::blocks_for(x.numel(), 4));  // as rand_like(x)
  if (x.is_cuda()) {
    OpScope scope(kDropout, x.device());
    scope.reads(x);
    scope.writes(y);
    scope.writes(mask);
    cuda::dropout_forward(x.data_ptr<float>(), y.data_ptr<float>(), mask.data_ptr<std::uint8_t>(), x.numel(),
                          g.seed, g.offset, g.state, static_cast<float>(p), static_cast<float>(scale),
                          scope.stream());
  } else {
    cpu::dropout_forward(x.dtype(), x.raw_data(), y.raw_data(), mask.data_ptr<std::uint8_t>(), x.numel(),
                         g.seed, g.offset, p, scale);
  }
  if (autograd::any_requires_grad({&x})) {
    autograd::record_lambda(kBackward, {x}, {y},
                            [scale](const TensorList& grads, const TensorList& saved, const autograd::Node&) {
                              return TensorList{dropout_backward(grads[0], saved[0], scale)};
                            },
                            {mask});
  }
  return y;
}

}  // namespace cugrad::nn::functional
