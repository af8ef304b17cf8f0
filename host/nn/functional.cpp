// nn::functional::linear and the elementwise activations: checks, dispatch of the
// linear GEMMs to CBLAS or cuBLAS (with transpose flags, so no transposed copy is made), and
// the linear backward node (dx, dweight, dbias, each only when needed).
//
// Choices where PyTorch is silent or differs by version:
//  - linear accepts x of any rank >= 1: the leading dimensions are flattened into rows of one
//    GEMM and restored on the output (a 1-D x gives a 1-D output, as PyTorch).
#include <cmath>

#include "cuda/blas.h"
#include "cugrad/nn/functional.h"
#include "host/autograd/functions.h"
#include "host/cpu/matmul.h"
#include "host/ops/op_util.h"

namespace cugrad::nn::functional {

namespace {

constexpr const char* kLinear = "linear";

// Row-major C (m x n) = op(A) @ op(B) on the device of the tensors (see cpu::gemm for the
// layout); c must be fresh. An empty inner dimension (k == 0) gives zeros.
void gemm_into(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, std::int64_t m, std::int64_t n,
               std::int64_t k, Tensor& c) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    c.zero_();
    return;
  }
  const std::int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n;
  if (a.is_cuda()) {
    OpScope scope(kLinear, a.device());
    scope.reads(a);
    scope.reads(b);
    scope.writes(c);
    cuda::gemm_f32(trans_a, trans_b, m, n, k, 1.0f, a.data_ptr<float>(), lda, b.data_ptr<float>(), ldb, 0.0f,
                   c.data_ptr<float>(), n, scope.stream());
  } else {
    cpu::gemm(a.dtype(), trans_a, trans_b, m, n, k, 1.0, a.raw_data(), lda, b.raw_data(), ldb, 0.0,
              c.raw_data(), n);
  }
}

void check_operand(const Tensor& t, const char* what, const Tensor& x) {
  CUGRAD_CHECK(t.device() == x.device(), kLinear, ": ", what, " is on ", t.device(), " but the input is on ",
               x.device(), ": ", describe(t), " vs ", describe(x));
  CUGRAD_CHECK(t.dtype() == x.dtype(), kLinear, ": ", what, " is ", t.dtype(), " but the input is ",
               x.dtype(), ": ", describe(t), " vs ", describe(x), " (convert it with .to(dtype))");
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_defined(kLinear, x);
  check_defined(kLinear, weight, "weight");
  CUGRAD_CHECK(x.dim() >= 1, kLinear, ": the input needs at least one dimension (*, in_features), got ",
               describe(x));
  CUGRAD_CHECK(weight.dim() == 2, kLinear, ": weight must be 2-D (out_features, in_features), got ",
               describe(weight));
  CUGRAD_CHECK(x.dtype() == DType::float32 || (x.dtype() == DType::float64 && x.device().is_cpu()), kLinear,
               ": needs a float32 input (float64 on the CPU), got ", describe(x));
  check_operand(weight, "weight", x);
  const std::int64_t in = weight.size(1), out = weight.size(0);
  CUGRAD_CHECK(x.size(-1) == in, kLinear, ": the input's last dimension (", x.size(-1),
               ") must equal weight's in_features (", in, "): input ", describe(x), ", weight ",
               describe(weight));
  if (bias.defined()) {
    check_operand(bias, "bias", x);
    CUGRAD_CHECK(bias.dim() == 1 && bias.size(0) == out, kLinear, ": bias must have shape [", out,
                 "] (out_features of weight ", describe(weight), "), got ", describe(bias));
  }

  const std::int64_t rows =
      in == 0 ? shape_numel(Shape(x.shape().begin(), x.shape().end() - 1)) : x.numel() / in;
  Shape out_shape = x.shape();
  out_shape.back() = out;
  Tensor y = empty(out_shape, x.device(), x.dtype());
  gemm_into(x, false, weight, true, rows, out, in, y);  // y = x @ weightᵀ
  if (bias.defined() && y.numel() > 0) {
    NoGradGuard ng;  // the node below records the whole op
    Tensor rows_view = y.reshape({rows, out});
    rows_view.add_(bias);
  }

  if (autograd::any_requires_grad({&x, &weight, &bias})) {
    const Shape x_shape = x.shape();
    autograd::record_lambda(
        "LinearBackward", {x, weight, bias}, {y},
        [x_shape, rows, in, out](const TensorList& g, const TensorList& s, const autograd::Node& node) {
          const Tensor& dy = g[0];  // (*, out), contiguous
          Tensor dx, dw, db;
          if (node.needs_input_grad(0)) {  // dx = dy @ weight
            dx = empty(x_shape, dy.device(), dy.dtype());
            gemm_into(dy, false, s[1], false, rows, in, out, dx);
          }
          if (node.needs_input_grad(1)) {  // dweight = dyᵀ @ x
            dw = empty({out, in}, dy.device(), dy.dtype());
            gemm_into(dy, true, s[0], false, out, in, rows, dw);
          }
          if (node.needs_input_grad(2))
            db = rows == 0 ? zeros({out}, dy.device(), dy.dtype()) : dy.reshape({rows, out}).sum(0);
          return TensorList{dx, dw, db};
        },
        {weight.requires_grad() ? x : Tensor(), x.requires_grad() ? weight : Tensor()});
  }
  return y;
}

Tensor leaky_relu(const Tensor& x, double negative_slope) { return cugrad::leaky_relu(x, negative_slope); }
Tensor sigmoid(const Tensor& x) { return cugrad::sigmoid(x); }
Tensor tanh(const Tensor& x) { return cugrad::tanh(x); }

}  // namespace cugrad::nn::functional
