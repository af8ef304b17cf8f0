// nn::functional::cross_entropy: input checks, dispatch to the fused CUDA kernels or the CPU
// reference (host/cpu/cross_entropy.h has the math), and its autograd node.
//
// Autograd: when the logits need a gradient, the forward pass computes it for an upstream
// gradient of 1 (on CUDA in the same pass that computes the loss) and the node keeps it.
// The first backward hands that buffer on, scaled in place by the actual upstream gradient
// (on CUDA without a host synchronization: the kernel reads the upstream value itself and
// does nothing when it is 1), so loss.backward() costs no further pass over the logits. A
// later backward through the same graph (retain_graph) recomputes the gradient from the
// saved logits. Holding the gradient and the logits until backward costs about what
// PyTorch's saved log-softmax and its backward's gradient buffer cost.
#include <cstdint>
#include <limits>
#include <memory>

#include "cuda/cross_entropy.h"
#include "cugrad/autograd.h"
#include "cugrad/nn/functional.h"
#include "host/autograd/node.h"
#include "host/cpu/cross_entropy.h"
#include "host/ops/op_util.h"
#include "host/runtime/device_errors.h"

namespace cugrad::nn::functional {

namespace {

constexpr const char* kOp = "cross_entropy";

CrossEntropyProblem check_inputs(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& o) {
  check_defined(kOp, logits, "logits");
  check_defined(kOp, target, "target");
  CUGRAD_CHECK(is_floating(logits.dtype()), kOp, ": logits must be float32 (or float64 on the CPU), got ",
               describe(logits));
  CUGRAD_CHECK(!(logits.is_cuda() && logits.dtype() != DType::float32), kOp,
               ": CUDA logits must be float32 (float64 is supported on the CPU), got ", describe(logits));
  CUGRAD_CHECK(logits.dim() == 2, kOp, ": logits must be 2-D (N, C), got ", describe(logits));
  CUGRAD_CHECK(logits.size(1) >= 1, kOp, ": logits need at least one class, got ", describe(logits));
  CUGRAD_CHECK(target.dtype() == DType::int64, kOp, ": target must hold int64 class indices, got ",
               describe(target));
  CUGRAD_CHECK(target.dim() == 1 && target.size(0) == logits.size(0), kOp, ": target must be (N) = (",
               logits.size(0), ") for logits ", describe(logits), ", got ", describe(target));
  CUGRAD_CHECK(target.device() == logits.device(), kOp,
               ": logits and target are on different devices: ", describe(logits), " and ", describe(target));
  const Tensor& w = o.weight;
  if (w.defined()) {
    CUGRAD_CHECK(w.dim() == 1 && w.size(0) == logits.size(1), kOp, ": weight must be (C) = (", logits.size(1),
                 ") for logits ", describe(logits), ", got ", describe(w));
    CUGRAD_CHECK(w.dtype() == logits.dtype(), kOp, ": weight and logits must have the same dtype, got ",
                 describe(w), " and ", describe(logits));
    CUGRAD_CHECK(w.device() == logits.device(), kOp,
                 ": weight and logits are on different devices: ", describe(w), " and ", describe(logits));
    CUGRAD_CHECK(
        !(is_grad_enabled() && w.requires_grad()), kOp, ": weight ", describe(w),
        " requires grad, but the gradient with respect to the class weights is not implemented (as in "
        "PyTorch); pass weight.detach()");
  }
  CUGRAD_CHECK(o.label_smoothing >= 0.0 && o.label_smoothing <= 1.0, kOp,
               ": label_smoothing must be in [0, 1], got ", o.label_smoothing);
  CUGRAD_CHECK(
      o.reduction == Reduction::None || o.reduction == Reduction::Mean || o.reduction == Reduction::Sum, kOp,
      ": unknown reduction ", static_cast<int>(o.reduction));
  CUGRAD_CHECK(!(logits.is_cuda() && logits.size(1) > std::numeric_limits<std::int32_t>::max()), kOp,
               ": at most 2^31 - 1 classes on CUDA, got ", describe(logits));
  CrossEntropyProblem p;
  p.n = logits.size(0);
  p.k = logits.size(1);
  p.ignore_index = o.ignore_index;
  p.label_smoothing = o.label_smoothing;
  p.reduction = o.reduction;
  return p;
}

struct Forward {
  Tensor loss;
  Tensor grad;  // for an upstream gradient of 1, when asked for
};

Forward run_forward(const Tensor& logits, const Tensor& target, const Tensor& weight,
                    const CrossEntropyProblem& p, bool want_grad) {
  const Shape loss_shape = p.reduction == Reduction::None ? Shape{p.n} : Shape{};
  const Device dev = logits.device();
  Forward f;
  if (dev.is_cuda()) {
    OpScope scope(kOp, dev);
    f.loss = empty(loss_shape, dev, logits.dtype());
    if (want_grad) f.grad = empty(logits.shape(), dev, logits.dtype());
    if (p.n == 0) {
      if (p.reduction != Reduction::None)
        f.loss.fill_(p.reduction == Reduction::Mean ? std::numeric_limits<double>::quiet_NaN() : 0.0);
      return f;
    }
    scope.reads(logits);
    scope.reads(target);
    if (weight.defined()) scope.reads(weight);
    scope.writes(f.loss);
    if (want_grad) scope.writes(f.grad);
    const std::size_t bytes = cuda::cross_entropy_workspace_bytes(p);
    Tensor workspace;
    if (bytes > 0) {
      // Stream-ordered: freed when this function returns, after the queued kernels.
      workspace = empty({static_cast<std::int64_t>(bytes)}, dev, DType::uint8);
      scope.writes(workspace);
    }
    cuda::cross_entropy_forward(logits.data_ptr<float>(), target.data_ptr<std::int64_t>(),
                                weight.defined() ? weight.data_ptr<float>() : nullptr, p,
                                f.loss.data_ptr<float>(), want_grad ? f.grad.data_ptr<float>() : nullptr,
                                workspace.defined() ? workspace.raw_data() : nullptr, bytes,
                                runtime::device_error_sink(dev), scope.stream());
    return f;
  }
  const auto* t = target.data_ptr<std::int64_t>();
  const std::int64_t bad = cpu::cross_entropy_first_bad_target(t, p);
  CUGRAD_CHECK(bad < 0, kOp, ": target ", t[bad < 0 ? 0 : bad], " at row ", bad, " is out of range for ", p.k,
               " classes (expected 0 <= target < ", p.k, ", or ignore_index ", p.ignore_index, ")");
  f.loss = empty(loss_shape, dev, logits.dtype());
  if (want_grad) f.grad = empty(logits.shape(), dev, logits.dtype());
  cpu::cross_entropy_forward(logits.dtype(), logits.raw_data(), t,
                             weight.defined() ? weight.raw_data() : nullptr, p, f.loss.raw_data(),
                             want_grad ? f.grad.raw_data() : nullptr);
  return f;
}

// grad *= upstream (a scalar for mean/sum, per row for none), in place.
void scale_grad(const Tensor& grad, const Tensor& upstream, const Tensor& target,
                const CrossEntropyProblem& p) {
  const std::int64_t expected = p.reduction == Reduction::None ? p.n : 1;
  CUGRAD_CHECK(upstream.defined() && upstream.numel() == expected && upstream.dtype() == grad.dtype() &&
                   upstream.device() == grad.device(),
               kOp, ": backward got the upstream gradient ", describe(upstream), " for a loss of ", expected,
               " element", expected == 1 ? "" : "s");
  if (p.n == 0) return;
  if (grad.is_cuda()) {
    OpScope scope(kOp, grad.device());
    scope.reads(upstream);
    scope.reads(target);
    scope.writes(grad);
    cuda::cross_entropy_scale_grad(grad.data_ptr<float>(), upstream.data_ptr<float>(),
                                   target.data_ptr<std::int64_t>(), p, scope.stream());
  } else {
    cpu::cross_entropy_scale_grad(grad.dtype(), grad.raw_data(), upstream.raw_data(),
                                  target.data_ptr<std::int64_t>(), p);
  }
}

class CrossEntropyBackward : public autograd::Node {
 public:
  CrossEntropyBackward(Tensor grad, const Tensor& logits, const Tensor& target, const Tensor& weight,
                       const CrossEntropyProblem& p)
      : grad_(std::move(grad)), logits_(logits), target_(target), weight_(weight), problem_(p) {
    has_saved_ = true;
  }

  std::string name() const override { return "CrossEntropyBackward"; }

  TensorList apply(TensorList grad_outputs) override {
    CUGRAD_CHECK(!released_, name(),
                 ": trying to backward through the graph a second time (its saved tensors ",
                 "were freed by the previous backward); call backward with retain_graph=true the first time");
    if (!needs_input_grad(0)) return {Tensor()};
    const Tensor target = target_.unpack(name());
    Tensor g;
    if (grad_.defined()) {
      // The forward's buffer, handed on: nobody else holds it, so it is scaled in place and
      // a leaf can take it as its .grad without a copy.
      g = std::move(grad_);
      grad_ = Tensor();
    } else {
      g = run_forward(logits_.unpack(name()), target, weight_.unpack(name()), problem_, true).grad;
    }
    scale_grad(g, grad_outputs.at(0), target, problem_);
    return {g};
  }

  void release_saved() override {
    grad_ = Tensor();
    logits_.reset();
    target_.reset();
    weight_.reset();
  }

 private:
  Tensor grad_;  // for an upstream gradient of 1; given away by the first backward
  autograd::SavedTensor logits_, target_, weight_;
  CrossEntropyProblem problem_;
};

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& target, const CrossEntropyOptions& options) {
  // Out-of-range targets seen by earlier kernels (on any device) are reported here at the
  // latest; host memory reads only.
  runtime::check_device_errors();
  const CrossEntropyProblem p = check_inputs(logits, target, options);
  const bool want_grad = autograd::any_requires_grad({&logits});
  Forward f = run_forward(logits, target, options.weight, p, want_grad);
  if (want_grad) {
    auto node = std::make_shared<CrossEntropyBackward>(std::move(f.grad), logits, target, options.weight, p);
    autograd::record(node, {logits}, {f.loss});
  }
  return f.loss;
}

}  // namespace cugrad::nn::functional
