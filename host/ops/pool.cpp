// nn::functional::max_pool2d, bias_max_pool2d, avg_pool2d and adaptive_avg_pool2d: argument checks (PyTorch's
// rules and messages), the output geometry, dispatch to the CPU loops (host/cpu/pool) or the
// CUDA kernels (cuda/pool), and the backward nodes.
//
// Choices where PyTorch is more permissive or silent:
//  - Only batched 4-D input (N, C, H, W); N may be 0 (an empty output), C, H and W may not.
//  - max_pool2d stores the int64 argmax indices (flat in-plane h·W + w, as PyTorch's
//    return_indices) only when the input requires grad; inference stores none.
//  - A max-pooling window that holds no input element (possible only with dilation) gives -inf
//    and passes no gradient.
//  - adaptive_avg_pool2d needs an output size >= 1 in both dimensions.
#include "cuda/pool.h"
#include "cuda/conv.h"
#include "cugrad/nn/functional.h"
#include "host/autograd/functions.h"
#include "host/cpu/conv.h"
#include "host/cpu/pool.h"
#include "host/ops/op_util.h"

namespace cugrad::nn::functional {

namespace {

std::string pair_str(Int2 v) { return detail::cat("(", v.h, ", ", v.w, ")"); }

// The plane layout of a pooling input: checks dims, dtype and emptiness.
Pool2dGeometry check_input(const char* op, const Tensor& x) {
  check_defined(op, x);
  CUGRAD_CHECK(x.dim() == 4, op, ": expected a 4-D input (N, C, H, W), got ", describe(x),
               x.dim() == 3 ? " (add the batch dimension with unsqueeze(0))" : "");
  CUGRAD_CHECK(is_floating(x.dtype()), op,
               ": needs a floating-point input (float32; float64 on the CPU), got ", describe(x));
  CUGRAD_CHECK(!(x.is_cuda() && x.dtype() != DType::float32), op, ": only float32 is supported on CUDA, got ",
               describe(x));
  CUGRAD_CHECK(x.size(1) >= 1 && x.size(2) >= 1 && x.size(3) >= 1, op,
               ": expected non-zero channels, height and width (only the batch may be empty), got ",
               describe(x));
  Pool2dGeometry g;
  g.planes = x.size(0) * x.size(1);
  g.h = x.size(2);
  g.w = x.size(3);
  return g;
}

// Kernel, stride, padding and dilation of max/avg pooling, and the output size (ceil_mode false).
void set_window(const char* op, const Tensor& x, Pool2dGeometry& g, Int2 kernel, Int2 stride, Int2 padding,
                Int2 dilation) {
  CUGRAD_CHECK(kernel.h >= 1 && kernel.w >= 1, op, ": kernel_size must be >= 1, got ", pair_str(kernel));
  CUGRAD_CHECK(stride.h >= 1 && stride.w >= 1, op, ": stride must be >= 1, got ", pair_str(stride));
  CUGRAD_CHECK(dilation.h >= 1 && dilation.w >= 1, op, ": dilation must be >= 1, got ", pair_str(dilation));
  CUGRAD_CHECK(padding.h >= 0 && padding.w >= 0 && padding.h <= kernel.h / 2 && padding.w <= kernel.w / 2, op,
               ": padding must be >= 0 and at most half of the kernel size, got padding ", pair_str(padding),
               " and kernel_size ", pair_str(kernel));
  g.kh = kernel.h;
  g.kw = kernel.w;
  g.stride_h = stride.h;
  g.stride_w = stride.w;
  g.pad_h = padding.h;
  g.pad_w = padding.w;
  g.dil_h = dilation.h;
  g.dil_w = dilation.w;
  g.out_h = Pool2dGeometry::out_size(g.h, g.kh, g.stride_h, g.pad_h, g.dil_h);
  g.out_w = Pool2dGeometry::out_size(g.w, g.kw, g.stride_w, g.pad_w, g.dil_w);
  CUGRAD_CHECK(g.out_h >= 1 && g.out_w >= 1, op, ": the output would be empty (", g.out_h, " x ", g.out_w,
               ") for input ", describe(x), " with kernel_size ", pair_str(kernel), ", stride ",
               pair_str(stride), ", padding ", pair_str(padding), ", dilation ", pair_str(dilation),
               ": the output size is too small");
}

Shape out_shape(const Tensor& x, const Pool2dGeometry& g) { return {x.size(0), x.size(1), g.out_h, g.out_w}; }

void check_grad(const char* name, const Tensor& dy, const Shape& shape, DType dtype, Device dev) {
  CUGRAD_CHECK(dy.shape() == shape && dy.dtype() == dtype && dy.device() == dev, name,
               ": the output gradient ", describe(dy), " does not match the output ", dtype, shape_str(shape),
               " on ", dev);
}

const float* cf32(const Tensor& t) { return static_cast<const float*>(t.raw_data(DType::float32)); }
float* mf32(const Tensor& t) { return static_cast<float*>(t.raw_data(DType::float32)); }

}  // namespace

// ---- max_pool2d ----

namespace {

constexpr const char* kMaxOp = "max_pool2d";
constexpr const char* kMaxBackward = "MaxPool2dBackward";

Tensor max_pool2d_grad(const Tensor& dy, const Tensor& indices, const Shape& in_shape,
                       const Pool2dGeometry& g) {
  Tensor dx = empty(in_shape, dy.device(), dy.dtype());
  if (dx.numel() == 0) return dx;
  if (dy.is_cuda()) {
    OpScope scope(kMaxBackward, dy.device());
    scope.reads(dy);
    scope.reads(indices);
    scope.writes(dx);
    cuda::max_pool2d_backward_f32(cf32(dy), indices.data_ptr<std::int64_t>(), mf32(dx), g, scope.stream());
  } else {
    cpu::max_pool2d_backward(dy.dtype(), dy.raw_data(), indices.data_ptr<std::int64_t>(), dx.raw_data(), g);
  }
  return dx;
}

}  // namespace

// ---- bias_max_pool2d: max_pool2d(x + bias) with the bias added inside the pool ----

namespace {

constexpr const char* kBiasMaxOp = "bias_max_pool2d";
constexpr const char* kBiasMaxBackward = "BiasMaxPool2dBackward";

// Σ of g over images and pixels per channel: a convolution's bias gradient, computed by the same
// code as conv2d's (cuda::conv2d_backward_bias_f32 / cpu::conv2d_backward_bias), so the same bits.
Tensor channel_sums(const Tensor& g) {
  Conv2dGeometry geo;
  geo.n = g.size(0);
  geo.c_out = g.size(1);
  geo.out_h = g.size(2);
  geo.out_w = g.size(3);
  Tensor db = empty({geo.c_out}, g.device(), g.dtype());
  if (g.is_cuda()) {
    OpScope scope(kBiasMaxBackward, g.device());
    scope.reads(g);
    scope.writes(db);
    cuda::conv2d_backward_bias_f32(cf32(g), mf32(db), geo, Stream::current(g.device()));
  } else if (geo.n == 0) {
    db.zero_();
  } else {
    cpu::conv2d_backward_bias(g.dtype(), g.raw_data(), db.raw_data(), geo);
  }
  return db;
}

// max_pool2d (bias undefined) and bias_max_pool2d: the pool of x (+ bias[channel]), the argmax
// indices when a gradient is needed, and the node (dx; dbias the channel sums of dx).
Tensor max_pool_impl(const char* op, const char* backward, Pool2dGeometry g, const Tensor& x,
                     const Tensor& bias) {
  const Device dev = x.device();
  const Shape shape = out_shape(x, g);
  Tensor y = empty(shape, dev, x.dtype());
  const bool record = autograd::any_requires_grad({&x, &bias});
  Tensor indices = record ? empty(shape, dev, DType::int64) : Tensor();
  std::int64_t* idx = record ? indices.data_ptr<std::int64_t>() : nullptr;
  if (y.numel() > 0) {
    if (dev.is_cuda()) {
      OpScope scope(op, dev);
      scope.reads(x);
      if (bias.defined()) scope.reads(bias);
      scope.writes(y);
      if (record) scope.writes(indices);
      cuda::max_pool2d_forward_f32(cf32(x), mf32(y), idx, g, scope.stream(),
                                   bias.defined() ? cf32(bias) : nullptr, x.size(1));
    } else if (bias.defined()) {
      NoGradGuard no_grad;  // the node below records the whole op
      const Tensor biased = x + bias.reshape({1, x.size(1), 1, 1});
      cpu::max_pool2d_forward(x.dtype(), biased.raw_data(), y.raw_data(), idx, g);
    } else {
      cpu::max_pool2d_forward(x.dtype(), x.raw_data(), y.raw_data(), idx, g);
    }
  }
  if (record) {
    const Shape in_shape = x.shape();
    const DType dtype = x.dtype();
    autograd::record_lambda(
        backward, {x, bias}, {y},
        [g, in_shape, shape, dtype, dev, backward](const TensorList& grads, const TensorList& saved,
                                                   const autograd::Node& node) {
          check_grad(backward, grads[0], shape, dtype, dev);
          const Tensor dx = max_pool2d_grad(grads[0], saved[0], in_shape, g);
          return TensorList{node.needs_input_grad(0) ? dx : Tensor(),
                            node.needs_input_grad(1) ? channel_sums(dx) : Tensor()};
        },
        {indices});
  }
  return y;
}

}  // namespace

Tensor max_pool2d(const Tensor& x, Int2 kernel_size, std::optional<Int2> stride, Int2 padding,
                  Int2 dilation) {
  Pool2dGeometry g = check_input(kMaxOp, x);
  set_window(kMaxOp, x, g, kernel_size, stride.value_or(kernel_size), padding, dilation);
  return max_pool_impl(kMaxOp, kMaxBackward, g, x, Tensor());
}

Tensor bias_max_pool2d(const Tensor& x, const Tensor& bias, Int2 kernel_size, std::optional<Int2> stride,
                       Int2 padding, Int2 dilation) {
  Pool2dGeometry g = check_input(kBiasMaxOp, x);
  set_window(kBiasMaxOp, x, g, kernel_size, stride.value_or(kernel_size), padding, dilation);
  check_defined(kBiasMaxOp, bias, "bias");
  const std::int64_t channels = x.size(1);
  CUGRAD_CHECK(bias.dim() == 1 && bias.size(0) == channels, kBiasMaxOp, ": bias must have shape [", channels,
               "] (one value per channel of the input ", describe(x), "), got ", describe(bias));
  CUGRAD_CHECK(bias.device() == x.device() && bias.dtype() == x.dtype(), kBiasMaxOp, ": bias ",
               describe(bias), " must have the input's device and dtype, input ", describe(x));
  return max_pool_impl(kBiasMaxOp, kBiasMaxBackward, g, x, bias);
}

// ---- avg_pool2d ----

namespace {

constexpr const char* kAvgOp = "avg_pool2d";
constexpr const char* kAvgBackward = "AvgPool2dBackward";

}  // namespace

Tensor avg_pool2d(const Tensor& x, Int2 kernel_size, std::optional<Int2> stride, Int2 padding) {
  Pool2dGeometry g = check_input(kAvgOp, x);
  set_window(kAvgOp, x, g, kernel_size, stride.value_or(kernel_size), padding, 1);
  const Device dev = x.device();
  Tensor y = empty(out_shape(x, g), dev, x.dtype());
  if (y.numel() > 0) {
    if (dev.is_cuda()) {
      OpScope scope(kAvgOp, dev);
      scope.reads(x);
      scope.writes(y);
      cuda::avg_pool2d_forward_f32(cf32(x), mf32(y), g, scope.stream());
    } else {
      cpu::avg_pool2d_forward(x.dtype(), x.raw_data(), y.raw_data(), g);
    }
  }
  if (autograd::any_requires_grad({&x})) {
    const Shape in_shape = x.shape(), shape = y.shape();
    const DType dtype = x.dtype();
    autograd::record_lambda(
        kAvgBackward, {x}, {y},
        [g, in_shape, shape, dtype, dev](const TensorList& grads, const TensorList&, const autograd::Node&) {
          const Tensor& dy = grads[0];
          check_grad(kAvgBackward, dy, shape, dtype, dev);
          Tensor dx = empty(in_shape, dev, dtype);
          if (dx.numel() == 0) return TensorList{dx};
          if (dev.is_cuda()) {
            OpScope scope(kAvgBackward, dev);
            scope.reads(dy);
            scope.writes(dx);
            cuda::avg_pool2d_backward_f32(cf32(dy), mf32(dx), g, scope.stream());
          } else {
            cpu::avg_pool2d_backward(dtype, dy.raw_data(), dx.raw_data(), g);
          }
          return TensorList{dx};
        });
  }
  return y;
}

// ---- adaptive_avg_pool2d ----

namespace {

constexpr const char* kAdaptiveOp = "adaptive_avg_pool2d";
constexpr const char* kAdaptiveBackward = "AdaptiveAvgPool2dBackward";

}  // namespace

Tensor adaptive_avg_pool2d(const Tensor& x, Int2 output_size) {
  Pool2dGeometry g = check_input(kAdaptiveOp, x);
  CUGRAD_CHECK(output_size.h >= 1 && output_size.w >= 1, kAdaptiveOp, ": output_size must be >= 1, got ",
               pair_str(output_size));
  g.out_h = output_size.h;
  g.out_w = output_size.w;
  const Device dev = x.device();
  Tensor y = empty(out_shape(x, g), dev, x.dtype());
  if (y.numel() > 0) {
    if (dev.is_cuda()) {
      OpScope scope(kAdaptiveOp, dev);
      scope.reads(x);
      scope.writes(y);
      cuda::adaptive_avg_pool2d_forward_f32(cf32(x), mf32(y), g, scope.stream());
    } else {
      cpu::adaptive_avg_pool2d_forward(x.dtype(), x.raw_data(), y.raw_data(), g);
    }
  }
  if (autograd::any_requires_grad({&x})) {
    const Shape in_shape = x.shape(), shape = y.shape();
    const DType dtype = x.dtype();
    autograd::record_lambda(
        kAdaptiveBackward, {x}, {y},
        [g, in_shape, shape, dtype, dev](const TensorList& grads, const TensorList&, const autograd::Node&) {
          const Tensor& dy = grads[0];
          check_grad(kAdaptiveBackward, dy, shape, dtype, dev);
          Tensor dx = empty(in_shape, dev, dtype);
          if (dx.numel() == 0) return TensorList{dx};
          if (dev.is_cuda()) {
            OpScope scope(kAdaptiveBackward, dev);
            scope.reads(dy);
            scope.writes(dx);
            cuda::adaptive_avg_pool2d_backward_f32(cf32(dy), mf32(dx), g, scope.stream());
          } else {
            cpu::adaptive_avg_pool2d_backward(dtype, dy.raw_data(), dx.raw_data(), g);
          }
          return TensorList{dx};
        });
  }
  return y;
}

}  // namespace cugrad::nn::functional
