// Elementwise ops: checks (shapes broadcast, same dtype and device, floating where the math
// needs it), dispatch to host/cpu or cuda/, and the in-place variants (which bump the
// storage's version counter).
#include <algorithm>
#include <cmath>
#include <limits>

#include "cuda/elementwise.h"
#include "host/autograd/functions.h"
#include "host/cpu/elementwise.h"
#include "host/ops/op_util.h"

namespace cugrad {

namespace {

const char* unary_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::neg: return "neg";
    case UnaryOp::exp: return "exp";
    case UnaryOp::log: return "log";
    case UnaryOp::sqrt: return "sqrt";
    case UnaryOp::rsqrt: return "rsqrt";
    case UnaryOp::abs: return "abs";
    case UnaryOp::sign: return "sign";
    case UnaryOp::relu: return "relu";
    case UnaryOp::pow: return "pow";
    case UnaryOp::clamp: return "clamp";
    case UnaryOp::add_scalar: return "add";
    case UnaryOp::mul_scalar: return "mul";
    case UnaryOp::rsub_scalar: return "rsub";
    case UnaryOp::rdiv_scalar: return "rdiv";
    case UnaryOp::sigmoid: return "sigmoid";
    case UnaryOp::tanh: return "tanh";
    case UnaryOp::leaky_relu: return "leaky_relu";
  }
  return "unary";
}

const char* binary_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::add: return "add";
    case BinaryOp::sub: return "sub";
    case BinaryOp::mul: return "mul";
    case BinaryOp::div: return "div";
    case BinaryOp::maximum: return "maximum";
    case BinaryOp::minimum: return "minimum";
    case BinaryOp::threshold_backward: return "threshold_backward";
    case BinaryOp::leaky_relu_backward: return "leaky_relu_backward";
    case BinaryOp::eq: return "eq";
    case BinaryOp::ne: return "ne";
    case BinaryOp::lt: return "lt";
    case BinaryOp::le: return "le";
    case BinaryOp::gt: return "gt";
    case BinaryOp::ge: return "ge";
  }
  return "binary";
}

void check_scalar_fits(const char* op, const Tensor& t, double v) {
  if (is_floating(t.dtype())) return;
  CUGRAD_CHECK(std::isfinite(v) && v == std::trunc(v), op, ": scalar ", v, " is not an integer, but the tensor is ",
               describe(t), " (convert it with .to(float32) first)");
}

// out = op(x) elementwise; out may be x (in place).
void run_unary(UnaryOp op, const Tensor& x, const Tensor& out, double a, double b) {
  const char* name = unary_name(op);
  if (needs_floating(op)) check_floating(name, x);
  if (x.is_cuda()) {
    OpScope scope(name, x.device());
    scope.reads(x);
    scope.writes(out);
    cuda::unary(op, x.dtype(), x.raw_data(), out.raw_data(), x.numel(), a, b, scope.stream());
  } else {
    cpu::unary(op, x.dtype(), x.raw_data(), out.raw_data(), x.numel(), a, b);
  }
}

using autograd::record_lambda;
using LambdaNodeFn = autograd::LambdaNode::Fn;

Tensor mask_of(const Tensor& m, const Tensor& like) { return m.to(like.dtype()); }

void run_binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out, double alpha);

// An activation's gradient in one pass from the incoming gradient g and the saved tensor s
// (BinaryOp::threshold_backward or leaky_relu_backward). Runs inside backward (grad mode off),
// so it records nothing.
Tensor activation_backward(BinaryOp op, const Tensor& g, const Tensor& s, double alpha = 1.0) {
  CUGRAD_CHECK(g.shape() == s.shape() && g.dtype() == s.dtype() && g.device() == s.device(), binary_name(op),
               ": gradient ", shape_str(g.shape()), " and saved tensor ", shape_str(s.shape()),
               " differ in shape, dtype or device");
  Tensor out = empty_like(g);
  run_binary(op, g, s, out, alpha);
  return out;
}

// Records the backward of a unary op: out = op(x; a, b).
void record_unary(UnaryOp op, const Tensor& x, const Tensor& out, double a, double b) {
  const char* name = nullptr;
  LambdaNodeFn fn;
  TensorList saved;
  switch (op) {
    case UnaryOp::neg:
      name = "NegBackward";
      fn = [](const TensorList& g, const TensorList&, const autograd::Node&) { return TensorList{-g[0]}; };
      break;
    case UnaryOp::exp:
      name = "ExpBackward";
      saved = {out};
      fn = [](const TensorList& g, const TensorList& s, const autograd::Node&) { return TensorList{g[0] * s[0]}; };
      break;
    case UnaryOp::log:
      name = "LogBackward";
      saved = {x};
      fn = [](const TensorList& g, const TensorList& s, const autograd::Node&) { return TensorList{g[0] / s[0]}; };
      break;
    case UnaryOp::sqrt:
      name = "SqrtBackward";
      saved = {out};
      fn = [](const TensorList& g, const TensorList& s, const autograd::Node&) {
        return TensorList{g[0] / (s[0] * 2.0)};
      };
      break;
    case UnaryOp::rsqrt:
      name = "RsqrtBackward";
      saved = {out};
      fn = [](const TensorList& g, const TensorList& s, const autograd::Node&) {
        return TensorList{g[0] * s[0].pow(3.0) * -0.5};
      };
      break;
    case UnaryOp::abs:
      name = "AbsBackward";
      saved = {x};
      fn = [](const TensorList& g, const TensorList& s, const autograd::Node&) { return TensorList{g[0] * s[0].sign()}; };
      break;
    case UnaryOp::sign:
      name = "SignBackward";
      fn = [](const TensorList& g, const TensorList&, const autograd::Node&) { return TensorList{zeros_like(g[0])}; };
      break;
    case UnaryOp::relu:
      name = "ReluBackward";
      saved = {out};
      fn = [](const TensorList& g, const TensorList& s, const autograd::Node&) {
        return TensorList{activation_backward(BinaryOp::threshold_backward, g[0], s[0])};
      };
      break;
    case UnaryOp::pow:
      name = "PowBackward";
      saved = {x};
      fn = [a](const TensorList& g, const TensorList& s, const autograd::Node&) {
        if (a == 0.0) return TensorList{zeros_like(g[0])};
        return TensorList{g[0] * s[0].pow(a - 1.0) * a};
      };
      break;
    case UnaryOp::clamp:
      name = "ClampBackward";
      saved = {x};
      fn = [a, b](const TensorList& g, const TensorList& s, const autograd::Node&) {
        return TensorList{g[0] * mask_of(ge(s[0], a), g[0]) * mask_of(le(s[0], b), g[0])};
      };
      break;
    case UnaryOp::add_scalar:
      name = "AddBackward";
      fn = [](const TensorList& g, const TensorList&, const autograd::Node&) { return TensorList{g[0]}; };
      break;
    case UnaryOp::mul_scalar:
      name = "MulBackward";
      fn = [a](const TensorList& g, const TensorList&, const autograd::Node&) { return TensorList{g[0] * a}; };
      break;
    case UnaryOp::rsub_scalar:
      name = "RsubBackward";
      fn = [](const TensorList& g, const TensorList&, const autograd::Node&) { return TensorList{-g[0]}; };
      break;
    case UnaryOp::rdiv_scalar:
      name = "RdivBackward";
      saved = {x};
      fn = [a](const TensorList& g, const TensorList& s, const autograd::Node&) {
        return TensorList{g[0] * -a / (s[0] * s[0])};
      };
      break;
    case UnaryOp::sigmoid:  // y' = y (1 - y), from the saved output
      name = "SigmoidBackward";
      saved = {out};
      fn = [](const TensorList& g, const TensorList& s, const autograd::Node&) {
        return TensorList{g[0] * s[0] * (1.0 - s[0])};
      };
      break;
    case UnaryOp::tanh:  // y' = 1 - y², from the saved output
      name = "TanhBackward";
      saved = {out};
      fn = [](const TensorList& g, const TensorList& s, const autograd::Node&) {
        return TensorList{g[0] * (1.0 - s[0] * s[0])};
      };
      break;
    case UnaryOp::leaky_relu:
      // PyTorch: x > 0 -> 1, else slope (slope at 0). With a positive slope the output has the
      // sign of the input, so the output is saved (an in-place leaky_relu needs no copy of x).
      name = "LeakyReluBackward";
      saved = {a > 0.0 ? out : x};
      fn = [a](const TensorList& g, const TensorList& s, const autograd::Node&) {
        return TensorList{activation_backward(BinaryOp::leaky_relu_backward, g[0], s[0], a)};
      };
      break;
  }
  record_lambda(name, {x}, {out}, std::move(fn), saved);
}

Tensor unary(UnaryOp op, const Tensor& x, double a = 0.0, double b = 0.0) {
  check_defined(unary_name(op), x);
  Tensor out = empty_like(x);
  run_unary(op, x, out, a, b);
  if (autograd::any_requires_grad({&x})) record_unary(op, x, out, a, b);
  return out;
}

Tensor& unary_(UnaryOp op, Tensor& x, double a = 0.0, double b = 0.0) {
  check_defined(unary_name(op), x);
  if (autograd::any_requires_grad({&x})) {
    autograd::check_inplace(unary_name(op), x);
    // Under autograd: compute out of place, then move values and history onto x. Ops whose
    // backward needs x's old value get a copy of it, since x is about to change.
    const bool saves_input = op == UnaryOp::log || op == UnaryOp::abs || op == UnaryOp::pow ||
                             op == UnaryOp::clamp || op == UnaryOp::rdiv_scalar ||
                             (op == UnaryOp::leaky_relu && a <= 0.0);
    const Tensor r = unary(op, saves_input ? x.clone() : x, a, b);
    {
      NoGradGuard ng;
      x.copy_(r);
    }
    autograd::rebase_history(x, r);
    return x;
  }
  run_unary(op, x, x, a, b);
  x.impl()->storage->bump_version();
  return x;
}

void run_binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out, double alpha) {
  const Shape* shapes[2] = {&a.shape(), &b.shape()};
  const BroadcastIndex index = make_broadcast_index(out.shape(), shapes, 2);
  const char* name = binary_name(op);
  if (a.is_cuda()) {
    OpScope scope(name, a.device());
    scope.reads(a);
    scope.reads(b);
    scope.writes(out);
    cuda::binary(op, a.dtype(), a.raw_data(), b.raw_data(), out.raw_data(), out.numel(), index, alpha, scope.stream());
  } else {
    cpu::binary(op, a.dtype(), a.raw_data(), b.raw_data(), out.raw_data(), out.numel(), index, alpha);
  }
}

void check_binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = binary_name(op);
  check_defined(name, a, "first operand");
  check_defined(name, b, "second operand");
  check_same_device(name, a, b);
  check_same_dtype(name, a, b);
  if (op == BinaryOp::div) check_floating(name, a);
}

// Records the backward of out = op(a, b) (broadcast gradients are summed back to each shape).
void record_binary(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out, double alpha) {
  const Shape sa = a.shape(), sb = b.shape();
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  const Tensor none;
  switch (op) {
    case BinaryOp::add:
      record_lambda("AddBackward", {a, b}, {out}, [sa, sb, alpha](const TensorList& g, const TensorList&, const autograd::Node& n) {
        return TensorList{n.needs_input_grad(0) ? sum_to(g[0], sa) : Tensor(),
                          n.needs_input_grad(1) ? sum_to(alpha == 1.0 ? g[0] : g[0] * alpha, sb) : Tensor()};
      });
      break;
    case BinaryOp::sub:
      record_lambda("SubBackward", {a, b}, {out}, [sa, sb](const TensorList& g, const TensorList&, const autograd::Node& n) {
        return TensorList{n.needs_input_grad(0) ? sum_to(g[0], sa) : Tensor(),
                          n.needs_input_grad(1) ? sum_to(-g[0], sb) : Tensor()};
      });
      break;
    case BinaryOp::mul:
      record_lambda("MulBackward", {a, b}, {out}, [sa, sb](const TensorList& g, const TensorList& s, const autograd::Node& n) {
        return TensorList{n.needs_input_grad(0) ? sum_to(g[0] * s[1], sa) : Tensor(),
                          n.needs_input_grad(1) ? sum_to(g[0] * s[0], sb) : Tensor()};
      }, {need_b ? a : none, need_a ? b : none});
      break;
    case BinaryOp::div:
      record_lambda("DivBackward", {a, b}, {out}, [sa, sb](const TensorList& g, const TensorList& s, const autograd::Node& n) {
        const Tensor gb = g[0] / s[1];
        return TensorList{n.needs_input_grad(0) ? sum_to(gb, sa) : Tensor(),
                          n.needs_input_grad(1) ? sum_to(-gb * s[0] / s[1], sb) : Tensor()};
      }, {need_b ? a : none, b});
      break;
    case BinaryOp::maximum:
    case BinaryOp::minimum: {
      const bool is_max = op == BinaryOp::maximum;
      record_lambda(is_max ? "MaximumBackward" : "MinimumBackward", {a, b}, {out},
                    [sa, sb, is_max](const TensorList& g, const TensorList& s, const autograd::Node& n) {
        // The larger (smaller) operand gets the gradient; ties split it evenly, as PyTorch.
        const Tensor wins_a = mask_of(is_max ? gt(s[0], s[1]) : lt(s[0], s[1]), g[0]);
        const Tensor ties = mask_of(eq(s[0], s[1]), g[0]) * 0.5;
        const Tensor share_a = wins_a + ties;
        return TensorList{n.needs_input_grad(0) ? sum_to(g[0] * share_a, sa) : Tensor(),
                          n.needs_input_grad(1) ? sum_to(g[0] * (1.0 - share_a), sb) : Tensor()};
      }, {a, b});
      break;
    }
    default:
      break;  // comparisons are not differentiable
  }
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b, double alpha = 1.0) {
  check_binary(op, a, b);
  const Shape shape = broadcast_shapes(binary_name(op), a.shape(), b.shape());
  Tensor out = empty(shape, a.device(), is_comparison(op) ? DType::uint8 : a.dtype());
  run_binary(op, a, b, out, alpha);
  if (!is_comparison(op) && autograd::any_requires_grad({&a, &b})) record_binary(op, a, b, out, alpha);
  return out;
}

Tensor& binary_(BinaryOp op, Tensor& a, const Tensor& b, double alpha = 1.0) {
  check_binary(op, a, b);
  const Shape shape = broadcast_shapes(binary_name(op), a.shape(), b.shape());
  CUGRAD_CHECK(shape == a.shape(), binary_name(op), "_: the result of shape ", shape_str(shape),
               " does not fit the in-place operand ", describe(a));
  if (autograd::any_requires_grad({&a, &b})) {
    autograd::check_inplace(binary_name(op), a);
    // As for unary ops: a copy of a's old value when the backward needs it.
    const bool saves_a = op != BinaryOp::add && op != BinaryOp::sub;
    const Tensor r = binary(op, saves_a ? a.clone() : a, b, alpha);
    {
      NoGradGuard ng;
      a.copy_(r);
    }
    autograd::rebase_history(a, r);
    return a;
  }
  run_binary(op, a, b, a, alpha);
  a.impl()->storage->bump_version();
  return a;
}

Tensor compare_scalar(BinaryOp op, const Tensor& a, double b) {
  check_defined(binary_name(op), a);
  return binary(op, a, full({}, b, a.device(), a.dtype()));
}

// Clamp bounds; an absent bound becomes the dtype's extreme (for int64, +-9.2e18, which a
// double converts to int64 exactly; values beyond that are not expected in practice).
std::pair<double, double> clamp_bounds(const Tensor& x, std::optional<double> lo, std::optional<double> hi) {
  CUGRAD_CHECK(lo || hi, "clamp: at least one of min and max must be given");
  if (lo) check_scalar_fits("clamp", x, *lo);
  if (hi) check_scalar_fits("clamp", x, *hi);
  double dlo = -std::numeric_limits<double>::infinity(), dhi = std::numeric_limits<double>::infinity();
  switch (x.dtype()) {
    case DType::int64: dlo = -9.2e18; dhi = 9.2e18; break;
    case DType::int32: dlo = std::numeric_limits<std::int32_t>::min(); dhi = std::numeric_limits<std::int32_t>::max(); break;
    case DType::uint8: dlo = 0; dhi = 255; break;
    default: break;
  }
  return {lo ? std::clamp(*lo, dlo, dhi) : dlo, hi ? std::clamp(*hi, dlo, dhi) : dhi};
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b, double alpha) {
  if (alpha != 1.0) check_scalar_fits("add", a, alpha);
  return binary(BinaryOp::add, a, b, alpha);
}
Tensor sub(const Tensor& a, const Tensor& b) { return binary(BinaryOp::sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(BinaryOp::mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary(BinaryOp::div, a, b); }
Tensor maximum(const Tensor& a, const Tensor& b) { return binary(BinaryOp::maximum, a, b); }
Tensor minimum(const Tensor& a, const Tensor& b) { return binary(BinaryOp::minimum, a, b); }
Tensor eq(const Tensor& a, const Tensor& b) { return binary(BinaryOp::eq, a, b); }
Tensor ne(const Tensor& a, const Tensor& b) { return binary(BinaryOp::ne, a, b); }
Tensor lt(const Tensor& a, const Tensor& b) { return binary(BinaryOp::lt, a, b); }
Tensor le(const Tensor& a, const Tensor& b) { return binary(BinaryOp::le, a, b); }
Tensor gt(const Tensor& a, const Tensor& b) { return binary(BinaryOp::gt, a, b); }
Tensor ge(const Tensor& a, const Tensor& b) { return binary(BinaryOp::ge, a, b); }
Tensor eq(const Tensor& a, double b) { return compare_scalar(BinaryOp::eq, a, b); }
Tensor ne(const Tensor& a, double b) { return compare_scalar(BinaryOp::ne, a, b); }
Tensor lt(const Tensor& a, double b) { return compare_scalar(BinaryOp::lt, a, b); }
Tensor le(const Tensor& a, double b) { return compare_scalar(BinaryOp::le, a, b); }
Tensor gt(const Tensor& a, double b) { return compare_scalar(BinaryOp::gt, a, b); }
Tensor ge(const Tensor& a, double b) { return compare_scalar(BinaryOp::ge, a, b); }

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_defined("where", cond, "condition");
  check_defined("where", a, "first operand");
  check_defined("where", b, "second operand");
  CUGRAD_CHECK(cond.dtype() == DType::uint8, "where: the condition must be uint8 (as comparisons return), got ",
               describe(cond));
  check_same_device("where", cond, a);
  check_same_device("where", a, b);
  check_same_dtype("where", a, b);
  const Shape shape = broadcast_shapes("where", cond.shape(), broadcast_shapes("where", a.shape(), b.shape()));
  Tensor out = empty(shape, a.device(), a.dtype());
  const Shape* shapes[3] = {&cond.shape(), &a.shape(), &b.shape()};
  const BroadcastIndex index = make_broadcast_index(shape, shapes, 3);
  const auto* c = static_cast<const std::uint8_t*>(cond.raw_data());
  if (a.is_cuda()) {
    OpScope scope("where", a.device());
    scope.reads(cond);
    scope.reads(a);
    scope.reads(b);
    scope.writes(out);
    cuda::where(a.dtype(), c, a.raw_data(), b.raw_data(), out.raw_data(), out.numel(), index, scope.stream());
  } else {
    cpu::where(a.dtype(), c, a.raw_data(), b.raw_data(), out.raw_data(), out.numel(), index);
  }
  if (autograd::any_requires_grad({&a, &b})) {
    const Shape sa = a.shape(), sb = b.shape();
    autograd::record_lambda("WhereBackward", {a, b}, {out},
                            [sa, sb](const TensorList& g, const TensorList& s, const autograd::Node& n) {
      const Tensor zero = zeros({}, g[0].device(), g[0].dtype());
      return TensorList{n.needs_input_grad(0) ? sum_to(where(s[0], g[0], zero), sa) : Tensor(),
                        n.needs_input_grad(1) ? sum_to(where(s[0], zero, g[0]), sb) : Tensor()};
    }, {cond});
  }
  return out;
}

Tensor add(const Tensor& a, double b) {
  check_defined("add", a);
  check_scalar_fits("add", a, b);
  return unary(UnaryOp::add_scalar, a, b);
}
Tensor sub(const Tensor& a, double b) {
  check_defined("sub", a);
  check_scalar_fits("sub", a, b);
  return unary(UnaryOp::add_scalar, a, -b);
}
Tensor rsub(const Tensor& a, double b) {
  check_defined("rsub", a);
  check_scalar_fits("rsub", a, b);
  return unary(UnaryOp::rsub_scalar, a, b);
}
Tensor mul(const Tensor& a, double b) {
  check_defined("mul", a);
  check_scalar_fits("mul", a, b);
  return unary(UnaryOp::mul_scalar, a, b);
}
Tensor div(const Tensor& a, double b) {
  check_defined("div", a);
  check_floating("div", a);
  return unary(UnaryOp::mul_scalar, a, 1.0 / b);
}
Tensor rdiv(const Tensor& a, double b) { return unary(UnaryOp::rdiv_scalar, a, b); }

Tensor neg(const Tensor& a) { return unary(UnaryOp::neg, a); }
Tensor exp(const Tensor& a) { return unary(UnaryOp::exp, a); }
Tensor log(const Tensor& a) { return unary(UnaryOp::log, a); }
Tensor sqrt(const Tensor& a) { return unary(UnaryOp::sqrt, a); }
Tensor rsqrt(const Tensor& a) { return unary(UnaryOp::rsqrt, a); }
Tensor abs(const Tensor& a) { return unary(UnaryOp::abs, a); }
Tensor sign(const Tensor& a) { return unary(UnaryOp::sign, a); }
Tensor relu(const Tensor& a) { return unary(UnaryOp::relu, a); }

Tensor threshold_backward(const Tensor& g, const Tensor& y) {
  return activation_backward(BinaryOp::threshold_backward, g, y);
}
Tensor sigmoid(const Tensor& a) { return unary(UnaryOp::sigmoid, a); }
Tensor tanh(const Tensor& a) { return unary(UnaryOp::tanh, a); }
Tensor leaky_relu(const Tensor& a, double negative_slope) {
  check_defined("leaky_relu", a);
  CUGRAD_CHECK(std::isfinite(negative_slope), "leaky_relu: negative_slope must be finite, got ", negative_slope,
               " for ", describe(a));
  return unary(UnaryOp::leaky_relu, a, negative_slope);
}
Tensor pow(const Tensor& a, double exponent) { return unary(UnaryOp::pow, a, exponent); }
Tensor clamp(const Tensor& a, std::optional<double> min, std::optional<double> max) {
  check_defined("clamp", a);
  const auto [lo, hi] = clamp_bounds(a, min, max);
  return unary(UnaryOp::clamp, a, lo, hi);
}

Tensor Tensor::neg() const { return cugrad::neg(*this); }
Tensor Tensor::exp() const { return cugrad::exp(*this); }
Tensor Tensor::log() const { return cugrad::log(*this); }
Tensor Tensor::sqrt() const { return cugrad::sqrt(*this); }
Tensor Tensor::rsqrt() const { return cugrad::rsqrt(*this); }
Tensor Tensor::abs() const { return cugrad::abs(*this); }
Tensor Tensor::sign() const { return cugrad::sign(*this); }
Tensor Tensor::relu() const { return cugrad::relu(*this); }
Tensor Tensor::sigmoid() const { return cugrad::sigmoid(*this); }
Tensor Tensor::tanh() const { return cugrad::tanh(*this); }
Tensor Tensor::leaky_relu(double negative_slope) const { return cugrad::leaky_relu(*this, negative_slope); }
Tensor Tensor::pow(double e) const { return cugrad::pow(*this, e); }
Tensor Tensor::clamp(std::optional<double> lo, std::optional<double> hi) const { return cugrad::clamp(*this, lo, hi); }

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  if (alpha != 1.0) check_scalar_fits("add_", *this, alpha);
  return binary_(BinaryOp::add, *this, other, alpha);
}
Tensor& Tensor::sub_(const Tensor& other) { return binary_(BinaryOp::sub, *this, other); }
Tensor& Tensor::mul_(const Tensor& other) { return binary_(BinaryOp::mul, *this, other); }
Tensor& Tensor::div_(const Tensor& other) { return binary_(BinaryOp::div, *this, other); }
Tensor& Tensor::add_(double v) {
  check_defined("add_", *this);
  check_scalar_fits("add_", *this, v);
  return unary_(UnaryOp::add_scalar, *this, v);
}
Tensor& Tensor::mul_(double v) {
  check_defined("mul_", *this);
  check_scalar_fits("mul_", *this, v);
  return unary_(UnaryOp::mul_scalar, *this, v);
}
Tensor& Tensor::neg_() { return unary_(UnaryOp::neg, *this); }
Tensor& Tensor::relu_() { return unary_(UnaryOp::relu, *this); }
Tensor& Tensor::sigmoid_() { return unary_(UnaryOp::sigmoid, *this); }
Tensor& Tensor::tanh_() { return unary_(UnaryOp::tanh, *this); }
Tensor& Tensor::leaky_relu_(double negative_slope) {
  check_defined("leaky_relu_", *this);
  CUGRAD_CHECK(std::isfinite(negative_slope), "leaky_relu_: negative_slope must be finite, got ", negative_slope);
  return unary_(UnaryOp::leaky_relu, *this, negative_slope);
}
Tensor& Tensor::exp_() { return unary_(UnaryOp::exp, *this); }
Tensor& Tensor::clamp_(std::optional<double> lo, std::optional<double> hi) {
  check_defined("clamp_", *this);
  const auto [a, b] = clamp_bounds(*this, lo, hi);
  return unary_(UnaryOp::clamp, *this, a, b);
}

}  // namespace cugrad
