// nn::functional::conv2d: argument checks, the output geometry, dispatch to the CPU reference
// (host/cpu/conv: im2col + GEMM) or CUDA (cuda/conv: cuDNN, or cugrad's direct kernels of
// cuda/conv_direct for few input taps), and the backward node, which computes the input, weight
// and bias gradients each only when an input that needs it asks for it.
// nn::functional::conv2d_relu is the same op with its ReLU fused into the bias pass (forward)
// and into the bias gradient's channel sums (backward, on CUDA).
//
// Choices where PyTorch is more permissive or silent:
//  - Only batched 4-D input (N, C_in, H, W); a 3-D unbatched input is an error (unsqueeze(0)).
//  - At least one input channel (PyTorch returns an odd empty result for C_in = 0). N = 0 gives
//    an empty output, and backward gives zero weight and bias gradients.
//  - The backward node saves x only when the weight requires grad and the weight only when x
//    does: a frozen convolution does not keep its input alive for backward.
#include "host/ops/conv.h"

#include <atomic>

#include "cuda/conv.h"
#include "cuda/conv_direct.h"
#include "cugrad/nn/functional.h"
#include "host/autograd/functions.h"
#include "host/cpu/conv.h"
#include "host/ops/op_util.h"
#include "host/runtime/cuda_context.h"

namespace cugrad {

namespace {

std::atomic<std::uint64_t> g_input_grads{0}, g_weight_grads{0}, g_bias_grads{0};

}  // namespace

Conv2dBackwardCounts conv2d_backward_counts() {
  return {g_input_grads.load(), g_weight_grads.load(), g_bias_grads.load()};
}

namespace nn::functional {

namespace {

constexpr const char* kOp = "conv2d";
constexpr const char* kBackward = "Conv2dBackward";
constexpr const char* kReluOp = "conv2d_relu";
constexpr const char* kReluBackward = "Conv2dReluBackward";

std::string pair_str(Int2 v) { return detail::cat("(", v.h, ", ", v.w, ")"); }

Conv2dGeometry check_conv(const Tensor& x, const Tensor& weight, const Tensor& bias, Int2 stride,
                          Int2 padding, Int2 dilation, std::int64_t groups) {
  check_defined(kOp, x);
  check_defined(kOp, weight, "weight");
  CUGRAD_CHECK(x.dim() == 4, kOp, ": expected a 4-D input (N, C_in, H, W), got ", describe(x),
               x.dim() == 3 ? " (add the batch dimension with unsqueeze(0))" : "");
  CUGRAD_CHECK(weight.dim() == 4, kOp, ": expected a 4-D weight (C_out, C_in / groups, kH, kW), got ",
               describe(weight));
  CUGRAD_CHECK(is_floating(x.dtype()), kOp,
               ": needs a floating-point input (float32; float64 on the CPU), got ", describe(x));
  CUGRAD_CHECK(!(x.is_cuda() && x.dtype() != DType::float32), kOp,
               ": only float32 is supported on CUDA, got ", describe(x));
  CUGRAD_CHECK(weight.device() == x.device(), kOp, ": weight is on ", weight.device(),
               " but the input is on ", x.device(), ": ", describe(weight), " vs ", describe(x));
  CUGRAD_CHECK(weight.dtype() == x.dtype(), kOp, ": weight is ", weight.dtype(), " but the input is ",
               x.dtype(), ": ", describe(weight), " vs ", describe(x), " (convert it with .to(dtype))");
  CUGRAD_CHECK(stride.h >= 1 && stride.w >= 1, kOp, ": stride must be >= 1, got ", pair_str(stride));
  CUGRAD_CHECK(padding.h >= 0 && padding.w >= 0, kOp, ": padding must be >= 0, got ", pair_str(padding));
  CUGRAD_CHECK(dilation.h >= 1 && dilation.w >= 1, kOp, ": dilation must be >= 1, got ", pair_str(dilation));
  CUGRAD_CHECK(groups >= 1, kOp, ": groups must be >= 1, got ", groups);

  Conv2dGeometry g;
  g.n = x.size(0);
  g.c_in = x.size(1);
  g.h = x.size(2);
  g.w = x.size(3);
  g.c_out = weight.size(0);
  g.kh = weight.size(2);
  g.kw = weight.size(3);
  CUGRAD_CHECK(g.c_in >= 1, kOp, ": the input needs at least one channel, got ", describe(x));
  CUGRAD_CHECK(
      g.c_out >= 1 && g.kh >= 1 && g.kw >= 1 && weight.size(1) >= 1, kOp,
      ": the weight needs at least one output channel, input channel and kernel row and column, got ",
      describe(weight));
  CUGRAD_CHECK(g.c_in % groups == 0, kOp, ": input channels (", g.c_in, ") must be divisible by groups (",
               groups, "), input ", describe(x));
  CUGRAD_CHECK(g.c_out % groups == 0, kOp, ": output channels (", g.c_out, ", weight dimension 0) must be ",
               "divisible by groups (", groups, "), weight ", describe(weight));
  CUGRAD_CHECK(weight.size(1) * groups == g.c_in, kOp, ": weight ", describe(weight), " with groups=", groups,
               " expects ", weight.size(1) * groups, " input channels, but the input ", describe(x), " has ",
               g.c_in);
  if (bias.defined()) {
    CUGRAD_CHECK(bias.dim() == 1 && bias.size(0) == g.c_out, kOp, ": bias must have shape [", g.c_out,
                 "] (one value per output channel), got ", describe(bias));
    CUGRAD_CHECK(bias.device() == x.device(), kOp, ": bias is on ", bias.device(), " but the input is on ",
                 x.device(), ": ", describe(bias), " vs ", describe(x));
    CUGRAD_CHECK(bias.dtype() == x.dtype(), kOp, ": bias is ", bias.dtype(), " but the input is ", x.dtype(),
                 ": ", describe(bias), " vs ", describe(x), " (convert it with .to(dtype))");
  }
  g.stride_h = stride.h;
  g.stride_w = stride.w;
  g.pad_h = padding.h;
  g.pad_w = padding.w;
  g.dil_h = dilation.h;
  g.dil_w = dilation.w;
  g.groups = groups;
  g.out_h = Conv2dGeometry::out_size(g.h, g.kh, g.stride_h, g.pad_h, g.dil_h);
  g.out_w = Conv2dGeometry::out_size(g.w, g.kw, g.stride_w, g.pad_w, g.dil_w);
  CUGRAD_CHECK(g.out_h >= 1 && g.out_w >= 1, kOp, ": the padded input (", g.h + 2 * g.pad_h, " x ",
               g.w + 2 * g.pad_w, ") is smaller than the dilated kernel (", g.dil_h * (g.kh - 1) + 1, " x ",
               g.dil_w * (g.kw - 1) + 1, "): input ", describe(x), ", weight ", describe(weight),
               ", padding ", pair_str(padding), ", dilation ", pair_str(dilation));
  return g;
}

Shape output_shape(const Conv2dGeometry& g) { return {g.n, g.c_out, g.out_h, g.out_w}; }

const float* cf32(const Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }
const void* cptr(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }

// Gradients of y = conv2d(x, weight, bias) (relu_y undefined) or of y = relu(conv2d(...))
// (relu_y = that output, whose mask applies to dy first) for the output gradient dy: (dx,
// dweight, dbias), undefined where not wanted. x is needed only for dweight, weight only for dx.
// On CUDA, the parameter gradients of a convolution with few input taps come from the direct
// kernel in one pass (dweight and dbias, through the ReLU's mask when no input gradient needs
// the masked gradient written); otherwise cuDNN's weight gradient and cugrad's channel sums (the
// mask fused with them). Every way gives the same bits as threshold_backward followed by the
// unfused convolution's backward.
TensorList conv2d_grads(const Tensor& dy, const Tensor& relu_y, const Tensor& x, const Tensor& weight,
                        const Conv2dGeometry& g, const Device dev, DType dtype, bool need_x, bool need_w,
                        bool need_b) {
  const char* name = relu_y.defined() ? kReluBackward : kBackward;
  CUGRAD_CHECK(dy.shape() == output_shape(g) && dy.dtype() == dtype && dy.device() == dev, name,
               ": the output gradient ", describe(dy), " does not match the output ", dtype,
               shape_str(output_shape(g)), " on ", dev);
  Tensor dx = need_x ? empty({g.n, g.c_in, g.h, g.w}, dev, dtype) : Tensor();
  Tensor dw = need_w ? empty({g.c_out, g.c_in_per_group(), g.kh, g.kw}, dev, dtype) : Tensor();
  Tensor db = need_b ? empty({g.c_out}, dev, dtype) : Tensor();
  if (need_x) ++g_input_grads;
  if (need_w) ++g_weight_grads;
  if (need_b) ++g_bias_grads;
  if (g.n == 0) {  // dx is empty; the parameters' gradients are sums over nothing
    if (dw.defined()) dw.zero_();
    if (db.defined()) db.zero_();
    return {dx, dw, db};
  }
  if (!dev.is_cuda()) {
    const Tensor dz = relu_y.defined() ? threshold_backward(dy, relu_y) : dy;
    if (need_x) cpu::conv2d_backward_input(dtype, dz.raw_data(), weight.raw_data(), dx.raw_data(), g);
    if (need_w) cpu::conv2d_backward_weight(dtype, x.raw_data(), dz.raw_data(), dw.raw_data(), g);
    if (need_b) cpu::conv2d_backward_bias(dtype, dz.raw_data(), db.raw_data(), g);
    return {dx, dw, db};
  }
  const bool direct = need_w && cuda::direct_convolutions() && cuda::direct_conv_supported(g);
  const Stream stream = Stream::current(dev);
  // dz: the gradient at the convolution's output, written only when something reads it.
  Tensor dz = dy;
  bool bias_done = false, mask_in_params = false;
  if (relu_y.defined()) {
    if (need_x || (!direct && (need_w || need_b))) {
      if (need_b && !direct) {  // the mask and the bias sums in one pass
        dz = empty(output_shape(g), dev, dtype);
        OpScope scope(name, dev);
        scope.reads(dy);
        scope.reads(relu_y);
        scope.writes(dz);
        scope.writes(db);
        cuda::conv2d_backward_bias_relu_f32(cf32(dy), cf32(relu_y), dz.data_ptr<float>(),
                                            db.data_ptr<float>(), g, stream);
        bias_done = true;
      } else {
        dz = threshold_backward(dy, relu_y);
      }
    } else {
      mask_in_params = true;  // direct: the parameter pass masks dy itself
    }
  }
  OpScope scope(name, dev);
  scope.reads(dz);
  if (mask_in_params) scope.reads(relu_y);
  if (need_x) {
    scope.reads(weight);
    scope.writes(dx);
    cuda::conv2d_backward_input_f32(cf32(dz), cf32(weight), dx.data_ptr<float>(), g, stream);
  }
  if (direct) {
    scope.reads(x);
    scope.writes(dw);
    if (need_b && !bias_done) scope.writes(db);
    const cuda::DirectConvPlan plan =
        cuda::direct_conv_plan(g, runtime::device_properties(dev.index()).multiProcessorCount);
    const Tensor ws =
        empty({static_cast<std::int64_t>(plan.workspace_bytes / sizeof(float))}, dev, DType::float32);
    cuda::direct_conv2d_backward_params_f32(
        cf32(x), cf32(dz), mask_in_params ? cf32(relu_y) : nullptr, dw.data_ptr<float>(),
        need_b && !bias_done ? db.data_ptr<float>() : nullptr, g, plan, ws.data_ptr<float>(), scope.stream());
    bias_done = bias_done || need_b;
  } else if (need_w) {
    scope.reads(x);
    scope.writes(dw);
    cuda::conv2d_backward_weight_f32(cf32(x), cf32(dz), dw.data_ptr<float>(), g, stream);
  }
  if (need_b && !bias_done) {
    scope.writes(db);
    cuda::conv2d_backward_bias_f32(cf32(dz), db.data_ptr<float>(), g, stream);
  }
  return {dx, dw, db};
}

// conv2d, and conv2d_relu when `relu`: the forward writes relu(conv + bias) in the bias pass,
// and the backward masks dy with the saved output (fused with the bias gradient on CUDA).
Tensor conv2d_impl(const Tensor& x, const Tensor& weight, const Tensor& bias, Int2 stride, Int2 padding,
                   Int2 dilation, std::int64_t groups, bool relu) {
  const char* op = relu ? kReluOp : kOp;
  const Conv2dGeometry g = check_conv(x, weight, bias, stride, padding, dilation, groups);
  const Device dev = x.device();
  Tensor y = empty(output_shape(g), dev, x.dtype());
  if (g.n > 0) {
    if (dev.is_cuda()) {
      OpScope scope(op, dev);
      scope.reads(x);
      scope.reads(weight);
      if (bias.defined()) scope.reads(bias);
      scope.writes(y);
      cuda::conv2d_forward_f32(cf32(x), cf32(weight), cf32(bias), y.data_ptr<float>(), g,
                               Stream::current(dev), relu);
    } else {
      cpu::conv2d_forward(x.dtype(), x.raw_data(), weight.raw_data(), cptr(bias), y.raw_data(), g);
      if (relu) {
        NoGradGuard no_grad;  // the node below records the whole op
        y.relu_();
      }
    }
  }

  if (autograd::any_requires_grad({&x, &weight, &bias})) {
    const DType dtype = x.dtype();
    // dweight needs x and dx needs the weight; the fused ReLU's mask needs the output.
    const Tensor saved_x = weight.requires_grad() ? x : Tensor();
    const Tensor saved_w = x.requires_grad() ? weight : Tensor();
    autograd::record_lambda(
        relu ? kReluBackward : kBackward, {x, weight, bias}, {y},
        [g, dev, dtype, relu](const TensorList& grads, const TensorList& saved, const autograd::Node& node) {
          return conv2d_grads(grads[0], relu ? saved[2] : Tensor(), saved[0], saved[1], g, dev, dtype,
                              node.needs_input_grad(0), node.needs_input_grad(1), node.needs_input_grad(2));
        },
        relu ? TensorList{saved_x, saved_w, y} : TensorList{saved_x, saved_w});
  }
  return y;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Int2 stride, Int2 padding,
              Int2 dilation, std::int64_t groups) {
  return conv2d_impl(x, weight, bias, stride, padding, dilation, groups, false);
}

Tensor conv2d_relu(const Tensor& x, const Tensor& weight, const Tensor& bias, Int2 stride, Int2 padding,
                   Int2 dilation, std::int64_t groups) {
  return conv2d_impl(x, weight, bias, stride, padding, dilation, groups, true);
}

}  // namespace nn::functional
}  // namespace cugrad
