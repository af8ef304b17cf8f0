// nn::functional::batch_norm and batch_norm_relu: argument checks, dispatch to the CPU
// reference (host/cpu/batch_norm) or the fused CUDA kernels (cuda/batch_norm), the in-place
// update of the running statistics, and the backward node (dx, dweight, dbias, each only when
// needed).
//
// batch_norm_relu on CUDA runs the kernels' ReLU variants: the forward writes relu(y), and the
// backward recomputes y from x (training: with the folded scale the forward saved, C floats;
// eval: from the running statistics) to mask dy, never reading the output. On the CPU it is
// batch_norm, relu in place, and threshold_backward on the saved output before batch_norm's
// backward: the reference the CUDA path is tested against.
//
// Choices where PyTorch's functional form is silent:
//  - num_batches_tracked, when given in training mode, is incremented here by one before the
//    factor 1 / num_batches_tracked is taken (on the device for CUDA tensors, with no host
//    round trip), whether or not momentum is set, as PyTorch's BatchNorm modules do. It needs
//    the running statistics; in eval mode it is left alone.
//  - The running statistics are buffers: updated in place (their version counter is bumped),
//    never recorded by autograd, so they must not require grad.
//  - An empty input (a zero dimension) gives an empty output; the running statistics and
//    num_batches_tracked are left unchanged, and backward gives zero dweight and dbias.
//  - Eval-mode backward saves running_mean and running_var: updating them in place (a training
//    step) before that backward is reported as a modified saved tensor, as in PyTorch.
#include <cmath>

#include "cuda/batch_norm.h"
#include "cugrad/nn/functional.h"
#include "host/autograd/functions.h"
#include "host/cpu/batch_norm.h"
#include "host/ops/op_util.h"

namespace cugrad::nn::functional {

namespace {

constexpr const char* kBackward = "BatchNormBackward";
constexpr const char* kReluBackward = "BatchNormReluBackward";

void check_per_channel(const char* op, const Tensor& t, const char* what, const Tensor& x,
                       std::int64_t channels) {
  if (!t.defined()) return;
  CUGRAD_CHECK(t.dim() == 1 && t.size(0) == channels, op, ": ", what, " must have shape [", channels,
               "] (one value per channel of the input ", describe(x), "), got ", describe(t));
  CUGRAD_CHECK(t.device() == x.device(), op, ": ", what, " is on ", t.device(), " but the input is on ",
               x.device(), ": ", describe(t), " vs ", describe(x));
  CUGRAD_CHECK(t.dtype() == x.dtype(), op, ": ", what, " is ", t.dtype(), " but the input is ", x.dtype(),
               ": ", describe(t), " vs ", describe(x), " (convert it with .to(dtype))");
}

BatchNormDims dims_of(const Tensor& x) {
  return {x.size(0), x.size(1), x.dim() == 4 ? x.size(2) * x.size(3) : 1};
}

const void* cptr(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }
void* mptr(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }
const float* cf32(const Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }
float* mf32(const Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

void bump_version(const Tensor& t) {
  if (t.defined()) t.impl()->storage->bump_version();
}

// Gradients of y = batch_norm(x, ...) with respect to (x, weight, bias) for the output
// gradient dy; undefined where not wanted. training: (mean, second) = (save_mean,
// save_invstd); eval: (running_mean, running_var).
// relu (batch_norm_relu): `relu_terms` are, on CUDA, {bias, the folded scale (training)} for
// the kernels' recomputed mask; on the CPU, {the op's output relu(y)}, whose threshold_backward
// is taken first.
TensorList batch_norm_grads(const Tensor& dy_in, const Tensor& x, const Tensor& weight, const Tensor& mean,
                            const Tensor& second, bool training, double eps, bool need_x, bool need_w,
                            bool need_b, bool relu = false, const TensorList& relu_terms = {}) {
  const char* name = relu ? kReluBackward : kBackward;
  CUGRAD_CHECK(dy_in.shape() == x.shape() && dy_in.dtype() == x.dtype() && dy_in.device() == x.device(), name,
               ": the output gradient ", describe(dy_in), " does not match the input ", describe(x));
  const bool cuda_relu = relu && x.is_cuda();
  const Tensor dy = relu && !x.is_cuda() ? threshold_backward(dy_in, relu_terms[0]) : dy_in;
  const BatchNormDims d = dims_of(x);
  const Device dev = x.device();
  Tensor dx = need_x ? empty(x.shape(), dev, x.dtype()) : Tensor();
  Tensor dw = need_w ? empty({d.c}, dev, x.dtype()) : Tensor();
  Tensor db = need_b ? empty({d.c}, dev, x.dtype()) : Tensor();
  if (x.numel() == 0) {
    if (dw.defined()) dw.zero_();
    if (db.defined()) db.zero_();
    return {dx, dw, db};
  }
  if (!need_x && !need_w && !need_b) return {dx, dw, db};
  if (x.is_cuda()) {
    OpScope scope(name, dev);
    for (const Tensor* t : {&dy, &x, &weight, &mean, &second})
      if (t->defined()) scope.reads(*t);
    for (const Tensor& t : relu_terms)
      if (t.defined()) scope.reads(t);
    for (const Tensor* t : {&dx, &dw, &db})
      if (t->defined()) scope.writes(*t);
    Tensor workspace;
    std::size_t bytes = 0;
    if (need_w || need_b || (training && need_x)) {
      bytes = cuda::batch_norm_backward_workspace_bytes(d);
      workspace = empty({static_cast<std::int64_t>(bytes)}, dev, DType::uint8);
    }
    cuda::BatchNormRelu mask;
    if (cuda_relu) {
      mask.bias = cf32(relu_terms[0]);
      mask.scale = training ? cf32(relu_terms[1]) : nullptr;
    }
    cuda::batch_norm_backward(cf32(x), cf32(dy), cf32(weight), cf32(mean), cf32(second), training, eps, d,
                              mf32(dx), mf32(dw), mf32(db), mptr(workspace), bytes, scope.stream(),
                              cuda_relu ? &mask : nullptr);
  } else {
    cpu::batch_norm_backward(x.dtype(), x.raw_data(), dy.raw_data(), d, cptr(weight), mean.raw_data(),
                             second.raw_data(), training, eps, mptr(dx), mptr(dw), mptr(db));
  }
  return {dx, dw, db};
}

Tensor batch_norm_impl(const char* op, const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                       const Tensor& weight, const Tensor& bias, bool training, std::optional<double> momentum,
                       double eps, const Tensor& num_batches_tracked, bool relu) {
  check_defined(op, x);
  CUGRAD_CHECK(x.dim() == 2 || x.dim() == 4, op, ": expected a 2-D (N, C) or 4-D (N, C, H, W) input, got ",
               describe(x));
  CUGRAD_CHECK(x.dtype() == DType::float32 || (x.dtype() == DType::float64 && x.device().is_cpu()), op,
               ": needs a float32 input (float64 on the CPU), got ", describe(x));
  const std::int64_t channels = x.size(1);
  check_per_channel(op, weight, "weight", x, channels);
  check_per_channel(op, bias, "bias", x, channels);
  check_per_channel(op, running_mean, "running_mean", x, channels);
  check_per_channel(op, running_var, "running_var", x, channels);
  CUGRAD_CHECK(running_mean.defined() == running_var.defined(), op,
               ": running_mean and running_var must be given together, got only ",
               running_mean.defined() ? "running_mean" : "running_var");
  const bool has_running = running_mean.defined();
  CUGRAD_CHECK(
      training || has_running, op,
      ": eval mode (training = false) normalizes with running_mean and running_var, which are missing");
  CUGRAD_CHECK(std::isfinite(eps) && eps >= 0, op, ": eps must be finite and >= 0, got ", eps);
  CUGRAD_CHECK(!momentum || std::isfinite(*momentum), op, ": momentum must be finite, got ",
               momentum.value_or(0));
  const Tensor& nbt = num_batches_tracked;
  if (nbt.defined()) {
    CUGRAD_CHECK(nbt.dtype() == DType::int64 && nbt.numel() == 1, op,
                 ": num_batches_tracked must be an int64 scalar tensor, got ", describe(nbt));
    CUGRAD_CHECK(nbt.device() == x.device(), op, ": num_batches_tracked is on ", nbt.device(),
                 " but the input is on ", x.device());
    CUGRAD_CHECK(has_running, op, ": num_batches_tracked is given without running_mean and running_var");
  }
  const BatchNormDims d = dims_of(x);
  const bool update_running = training && has_running && x.numel() > 0;
  if (training) {
    CUGRAD_CHECK(d.per_channel() != 1, op,
                 ": expected more than 1 value per channel when training, got input of shape ",
                 shape_str(x.shape()), " (N * H * W = 1)");
    if (has_running) {
      CUGRAD_CHECK(momentum || nbt.defined(), op,
                   ": momentum unset (a cumulative average) needs num_batches_tracked");
      CUGRAD_CHECK(!running_mean.requires_grad() && !running_var.requires_grad(), op,
                   ": running_mean and running_var are buffers updated in place and must not require grad");
    }
  }

  const Device dev = x.device();
  Tensor y = empty(x.shape(), dev, x.dtype());
  Tensor saved_mean, saved_second;  // what backward needs beside x and weight
  Tensor saved_scale;               // batch_norm_relu on CUDA, training: the folded scale
  if (x.numel() > 0 && training) {
    saved_mean = empty({channels}, dev, x.dtype());
    saved_second = empty({channels}, dev, x.dtype());  // invstd
    if (x.is_cuda()) {
      // The fused backward's mask needs the folded scale; with no backward to come it stays in
      // the workspace.
      if (relu && autograd::any_requires_grad({&x, &weight, &bias}))
        saved_scale = empty({channels}, dev, x.dtype());
      OpScope scope(op, dev);
      for (const Tensor* t : {&x, &weight, &bias})
        if (t->defined()) scope.reads(*t);
      for (const Tensor* t : {&y, &saved_mean, &saved_second, &saved_scale})
        if (t->defined()) scope.writes(*t);
      cuda::BatchNormRunning running;
      if (update_running) {
        scope.writes(running_mean);
        scope.writes(running_var);
        running.mean = running_mean.data_ptr<float>();
        running.var = running_var.data_ptr<float>();
        if (nbt.defined()) {
          scope.writes(nbt);
          running.num_batches_tracked = nbt.data_ptr<std::int64_t>();
        }
        running.cumulative = !momentum.has_value();
        running.momentum = momentum.value_or(0.0);
      }
      const std::size_t bytes = cuda::batch_norm_train_forward_workspace_bytes(d);
      Tensor workspace = empty({static_cast<std::int64_t>(bytes)}, dev, DType::uint8);
      cuda::batch_norm_train_forward(cf32(x), mf32(y), cf32(weight), cf32(bias), eps, d, mf32(saved_mean),
                                     mf32(saved_second), running, workspace.raw_data(), bytes,
                                     scope.stream(), relu, mf32(saved_scale));
    } else {
      double factor = 0.0;
      if (update_running) {
        if (nbt.defined()) *nbt.data_ptr<std::int64_t>() += 1;
        factor = momentum ? *momentum : 1.0 / static_cast<double>(*nbt.data_ptr<std::int64_t>());
      }
      cpu::batch_norm_train_forward(x.dtype(), x.raw_data(), y.raw_data(), d, cptr(weight), cptr(bias), eps,
                                    saved_mean.raw_data(), saved_second.raw_data(),
                                    update_running ? running_mean.raw_data() : nullptr,
                                    update_running ? running_var.raw_data() : nullptr, factor);
    }
    if (update_running) {
      bump_version(running_mean);
      bump_version(running_var);
      bump_version(nbt);
    }
  } else if (x.numel() > 0) {
    saved_mean = running_mean;
    saved_second = running_var;
    if (x.is_cuda()) {
      OpScope scope(op, dev);
      for (const Tensor* t : {&x, &weight, &bias, &running_mean, &running_var})
        if (t->defined()) scope.reads(*t);
      scope.writes(y);
      cuda::batch_norm_eval_forward(cf32(x), mf32(y), cf32(weight), cf32(bias), cf32(running_mean),
                                    cf32(running_var), eps, d, scope.stream(), relu);
    } else {
      cpu::batch_norm_eval_forward(x.dtype(), x.raw_data(), y.raw_data(), d, cptr(weight), cptr(bias),
                                   running_mean.raw_data(), running_var.raw_data(), eps);
    }
  }

  if (relu && !x.is_cuda()) {
    NoGradGuard no_grad;
    y.relu_();
  }

  if (autograd::any_requires_grad({&x, &weight, &bias})) {
    TensorList saved{x, saved_mean, saved_second, weight};
    if (relu && x.is_cuda()) {
      saved.push_back(bias);
      saved.push_back(saved_scale);
    } else if (relu) {
      saved.push_back(y);
    }
    autograd::record_lambda(
        relu ? kReluBackward : kBackward, {x, weight, bias}, {y},
        [training, eps, relu](const TensorList& g, const TensorList& s, const autograd::Node& node) {
          return batch_norm_grads(g[0], s[0], s[3], s[1], s[2], training, eps, node.needs_input_grad(0),
                                  node.needs_input_grad(1), node.needs_input_grad(2), relu,
                                  TensorList(s.begin() + 4, s.end()));
        },
        saved);
  }
  return y;
}

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, std::optional<double> momentum,
                  double eps, const Tensor& num_batches_tracked) {
  return batch_norm_impl("batch_norm", x, running_mean, running_var, weight, bias, training, momentum, eps,
                         num_batches_tracked, false);
}

Tensor batch_norm_relu(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                       const Tensor& weight, const Tensor& bias, bool training, std::optional<double> momentum,
                       double eps, const Tensor& num_batches_tracked) {
  return batch_norm_impl("batch_norm_relu", x, running_mean, running_var, weight, bias, training, momentum,
                         eps, num_batches_tracked, true);
}

}  // namespace cugrad::nn::functional
