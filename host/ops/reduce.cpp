// Reductions: sum, mean, amax, amin, argmax, var, std and norm, over all elements (a 0-dim
// result) or along one dimension (keepdim keeps it with size 1). Checks, result shape and
// dtype, then dispatch to host/cpu or cuda/. Semantics follow PyTorch:
//  - sum of an integer tensor is int64; argmax is int64; the others keep the input's dtype;
//  - mean, var, std and norm need a floating dtype;
//  - NaN propagates; amax/amin/argmax count NaN as the maximum (argmax: the first NaN), and
//    argmax returns the first index of the maximum;
//  - an empty reduction gives 0 for sum and norm, NaN for mean, var and std, and is an error
//    for amax, amin, argmax and norm(inf), which have no identity;
//  - var/std divide by n - 1 when unbiased (NaN for a single element), by n otherwise.
// Backward (every reduction but argmax is differentiable): sum and mean broadcast the
// gradient back; amax/amin (and norm(inf)) share it evenly among the tied extremes, as
// PyTorch does; var, std and norm use their closed forms, with a zero gradient where the
// result is zero (std, norm) instead of NaN.
#include <cmath>
#include <optional>

#include "cuda/reduce.h"
#include "host/autograd/functions.h"
#include "host/cpu/reduce.h"
#include "host/ops/op_util.h"

namespace cugrad {

namespace {

const char* reduce_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return "sum";
    case ReduceOp::mean:
      return "mean";
    case ReduceOp::amax:
      return "amax";
    case ReduceOp::amin:
      return "amin";
    case ReduceOp::argmax:
      return "argmax";
    case ReduceOp::var:
      return "var";
    case ReduceOp::std:
      return "std";
    case ReduceOp::norm:
      return "norm";
  }
  return "reduce";
}

bool needs_floating(ReduceOp op) {
  return op == ReduceOp::mean || op == ReduceOp::var || op == ReduceOp::std || op == ReduceOp::norm;
}

// Ops without an identity element: reducing zero elements into a result is an error.
bool needs_elements(ReduceOp op, const ReduceArgs& args) {
  return op == ReduceOp::amax || op == ReduceOp::amin || op == ReduceOp::argmax ||
         (op == ReduceOp::norm && std::isinf(args.p));
}

// The gradient of a reduced result, reshaped so that it broadcasts against the input.
Tensor expand_back(const Tensor& g, const Shape& in_shape, std::optional<std::int64_t> dim, bool keepdim) {
  if (!dim || in_shape.empty()) return g.reshape({});
  if (keepdim) return g;
  return g.unsqueeze(wrap_dim("reduce backward", *dim, static_cast<std::int64_t>(in_shape.size())));
}

// Divides num by den where den != 0, else gives 0 (the subgradient PyTorch picks at 0).
Tensor safe_div(const Tensor& num, const Tensor& den) {
  Tensor nz = ne(den, 0.0).to(num.dtype());
  return num * nz / (den + (1.0 - nz));
}

// Records the backward node of `out` = op(a) when autograd needs it.
void record_reduction(ReduceOp op, const Tensor& a, const Tensor& out, std::optional<std::int64_t> dim,
                      bool keepdim, const ReduceArgs& args, std::int64_t count) {
  if (op == ReduceOp::argmax || !is_floating(out.dtype())) return;
  static const char* const names[] = {"SumBackward", "MeanBackward", "AmaxBackward", "AminBackward",
                                      "ArgmaxBackward", "VarBackward", "StdBackward", "NormBackward"};
  const Shape in_shape = a.shape();
  autograd::record_lambda(
      names[static_cast<int>(op)], {a}, {out},
      [op, in_shape, dim, keepdim, args, count](const TensorList& g, const TensorList& s,
                                                const autograd::Node&) -> TensorList {
        const Tensor ge = expand_back(g[0], in_shape, dim, keepdim);
        const Tensor& x = s.empty() ? Tensor() : s[0];
        auto reduced = [&](const Tensor& t) { return expand_back(t, in_shape, dim, keepdim); };
        auto extreme_mask = [&](const Tensor& values, const Tensor& result) {
          Tensor mask = eq(values, reduced(result)).to(values.dtype());
          Tensor ties = dim ? sum(mask, *dim, true) : sum(mask).reshape({});
          return mask / ties;
        };
        switch (op) {
          case ReduceOp::sum:
            return {ge + zeros(in_shape, ge.device(), ge.dtype())};
          case ReduceOp::mean:
            return {ge / static_cast<double>(count) + zeros(in_shape, ge.device(), ge.dtype())};
          case ReduceOp::amax:
          case ReduceOp::amin:
            return {ge * extreme_mask(x, s[1])};
          case ReduceOp::var: {
            const Tensor centered = x - (dim ? mean(x, *dim, true) : mean(x).reshape({}));
            const double denom = static_cast<double>(count) - (args.unbiased ? 1.0 : 0.0);
            return {ge * centered * (2.0 / denom)};
          }
          case ReduceOp::std: {
            const Tensor centered = x - (dim ? mean(x, *dim, true) : mean(x).reshape({}));
            const double denom = static_cast<double>(count) - (args.unbiased ? 1.0 : 0.0);
            return {safe_div(ge * centered, reduced(s[1]) * denom)};
          }
          case ReduceOp::norm: {
            const Tensor n = reduced(s[1]);
            if (std::isinf(args.p)) return {ge * sign(x) * extreme_mask(abs(x), s[1])};
            if (args.p == 1.0) return {ge * sign(x)};
            if (args.p == 2.0) return {safe_div(ge * x, n)};
            return {safe_div(ge * sign(x) * pow(abs(x), args.p - 1.0), pow(n, args.p - 1.0))};
          }
          case ReduceOp::argmax:
            break;
        }
        return {Tensor()};
      },
      op == ReduceOp::sum || op == ReduceOp::mean ? TensorList{} : TensorList{a, out});
}

// Reduces `a` over all elements (dim empty) or along `dim`.
Tensor run_reduction(ReduceOp op, const Tensor& a, std::optional<std::int64_t> dim, bool keepdim,
                     const ReduceArgs& args = {}) {
  const char* name = reduce_name(op);
  check_defined(name, a);
  if (needs_floating(op))
    CUGRAD_CHECK(is_floating(a.dtype()), name, ": needs a floating-point tensor, got ", describe(a),
                 " (convert it with .to(float32) first)");
  if (op == ReduceOp::norm)
    CUGRAD_CHECK(args.p > 0, "norm: the order p must be positive or +inf, got ", args.p, " for ",
                 describe(a));

  ReduceLayout layout;
  Shape out_shape;
  const Shape& shape = a.shape();
  if (!dim) {
    layout.reduce = a.numel();
  } else {
    const std::int64_t d = wrap_dim(name, *dim, a.dim());
    if (a.dim() > 0) {  // a 0-dim tensor reduces along its one implicit dimension to itself
      const auto du = static_cast<std::size_t>(d);
      for (std::size_t k = 0; k < du; ++k) layout.outer *= shape[k];
      layout.reduce = shape[du];
      for (std::size_t k = du + 1; k < shape.size(); ++k) layout.inner *= shape[k];
      out_shape = shape;
      if (keepdim)
        out_shape[du] = 1;
      else
        out_shape.erase(out_shape.begin() + static_cast<std::ptrdiff_t>(d));
    }
  }
  if (needs_elements(op, args) && layout.reduce == 0 && layout.outer * layout.inner > 0) {
    throw ValueError(detail::cat(
        name, op == ReduceOp::norm ? "(p=inf)" : "", ": cannot reduce ", describe(a),
        dim ? detail::cat(" along dimension ", *dim, ", which is empty") : std::string(" (no elements)"),
        ": the operation has no identity"));
  }

  Tensor out = empty(out_shape, a.device(), reduce_result_dtype(op, a.dtype()));
  if (out.numel() == 0) {
    record_reduction(op, a, out, dim, keepdim, args, layout.reduce);
    return out;
  }
  if (a.is_cuda()) {
    OpScope scope(name, a.device());
    scope.reads(a);
    scope.writes(out);
    const std::size_t bytes = cuda::reduce_workspace_bytes(op, a.dtype(), layout, args);
    Tensor workspace;
    if (bytes > 0) {
      // Stream-ordered: freed when this function returns, after the queued kernels.
      workspace = empty({static_cast<std::int64_t>(bytes)}, a.device(), DType::uint8);
      scope.writes(workspace);
    }
    cuda::reduce(op, a.dtype(), a.raw_data(), out.raw_data(), layout, args,
                 workspace.defined() ? workspace.raw_data() : nullptr, bytes, scope.stream());
  } else {
    cpu::reduce(op, a.dtype(), a.raw_data(), out.raw_data(), layout, args);
  }
  record_reduction(op, a, out, dim, keepdim, args, layout.reduce);
  return out;
}

ReduceArgs variance_args(bool unbiased) {
  ReduceArgs args;
  args.unbiased = unbiased;
  return args;
}

ReduceArgs norm_args(double p) {
  ReduceArgs args;
  args.p = p;
  return args;
}

}  // namespace

Tensor sum(const Tensor& a) { return run_reduction(ReduceOp::sum, a, std::nullopt, false); }
Tensor sum(const Tensor& a, std::int64_t dim, bool keepdim) {
  return run_reduction(ReduceOp::sum, a, dim, keepdim);
}
Tensor mean(const Tensor& a) { return run_reduction(ReduceOp::mean, a, std::nullopt, false); }
Tensor mean(const Tensor& a, std::int64_t dim, bool keepdim) {
  return run_reduction(ReduceOp::mean, a, dim, keepdim);
}
Tensor amax(const Tensor& a) { return run_reduction(ReduceOp::amax, a, std::nullopt, false); }
Tensor amax(const Tensor& a, std::int64_t dim, bool keepdim) {
  return run_reduction(ReduceOp::amax, a, dim, keepdim);
}
Tensor amin(const Tensor& a) { return run_reduction(ReduceOp::amin, a, std::nullopt, false); }
Tensor amin(const Tensor& a, std::int64_t dim, bool keepdim) {
  return run_reduction(ReduceOp::amin, a, dim, keepdim);
}
Tensor argmax(const Tensor& a) { return run_reduction(ReduceOp::argmax, a, std::nullopt, false); }
Tensor argmax(const Tensor& a, std::int64_t dim, bool keepdim) {
  return run_reduction(ReduceOp::argmax, a, dim, keepdim);
}
Tensor var(const Tensor& a, bool unbiased) {
  return run_reduction(ReduceOp::var, a, std::nullopt, false, variance_args(unbiased));
}
Tensor var(const Tensor& a, std::int64_t dim, bool unbiased, bool keepdim) {
  return run_reduction(ReduceOp::var, a, dim, keepdim, variance_args(unbiased));
}
Tensor std(const Tensor& a, bool unbiased) {
  return run_reduction(ReduceOp::std, a, std::nullopt, false, variance_args(unbiased));
}
Tensor std(const Tensor& a, std::int64_t dim, bool unbiased, bool keepdim) {
  return run_reduction(ReduceOp::std, a, dim, keepdim, variance_args(unbiased));
}
Tensor norm(const Tensor& a, double p) {
  return run_reduction(ReduceOp::norm, a, std::nullopt, false, norm_args(p));
}
Tensor norm(const Tensor& a, double p, std::int64_t dim, bool keepdim) {
  return run_reduction(ReduceOp::norm, a, dim, keepdim, norm_args(p));
}

Tensor Tensor::sum() const { return cugrad::sum(*this); }
Tensor Tensor::sum(std::int64_t dim, bool keepdim) const { return cugrad::sum(*this, dim, keepdim); }
Tensor Tensor::mean() const { return cugrad::mean(*this); }
Tensor Tensor::mean(std::int64_t dim, bool keepdim) const { return cugrad::mean(*this, dim, keepdim); }
Tensor Tensor::max() const { return cugrad::amax(*this); }
Tensor Tensor::max(std::int64_t dim, bool keepdim) const { return cugrad::amax(*this, dim, keepdim); }
Tensor Tensor::min() const { return cugrad::amin(*this); }
Tensor Tensor::min(std::int64_t dim, bool keepdim) const { return cugrad::amin(*this, dim, keepdim); }
Tensor Tensor::argmax() const { return cugrad::argmax(*this); }
Tensor Tensor::argmax(std::int64_t dim, bool keepdim) const { return cugrad::argmax(*this, dim, keepdim); }
Tensor Tensor::var(bool unbiased) const { return cugrad::var(*this, unbiased); }
Tensor Tensor::var(std::int64_t dim, bool unbiased, bool keepdim) const {
  return cugrad::var(*this, dim, unbiased, keepdim);
}
Tensor Tensor::std(bool unbiased) const { return cugrad::std(*this, unbiased); }
Tensor Tensor::std(std::int64_t dim, bool unbiased, bool keepdim) const {
  return cugrad::std(*this, dim, unbiased, keepdim);
}
Tensor Tensor::norm(double p) const { return cugrad::norm(*this, p); }
Tensor Tensor::norm(double p, std::int64_t dim, bool keepdim) const {
  return cugrad::norm(*this, p, dim, keepdim);
}

}  // namespace cugrad
