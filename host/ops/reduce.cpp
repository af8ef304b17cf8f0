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
#include <cmath>
#include <optional>

#include "cuda/reduce.h"
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
  if (out.numel() == 0) return out;
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
