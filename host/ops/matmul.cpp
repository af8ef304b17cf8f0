// matmul: checks (2-D or 3-D operands, inner and batch dimensions, one floating dtype and
// one device), the output shape, and dispatch to the CPU GEMM (CBLAS) or cuBLAS.
//
// Supported: (M,K)@(K,N) -> (M,N); (B,M,K)@(B,K,N) -> (B,M,N); and, as in PyTorch, a batch
// dimension that is absent or 1 on one side is shared by every product: (B,M,K)@(K,N),
// (M,K)@(B,K,N), (1,M,K)@(B,K,N) -> (B,M,N). Float32 on the CPU and CUDA (strict float32 on
// CUDA unless set_allow_tf32(true)); float64 on the CPU. An empty product (K == 0) gives
// zeros; an empty output gives an empty tensor.
#include "host/cpu/matmul.h"
#include "cuda/blas.h"
#include "host/autograd/functions.h"
#include "host/ops/op_util.h"

namespace cugrad {

namespace {

constexpr const char* kOp = "matmul";

std::string operands(const Tensor& a, const Tensor& b) {
  return detail::cat(describe(a), " @ ", describe(b));
}

// out = a @ b as `batch` products of (m,k)@(k,n); operand i of the batch starts stride_a
// (stride_b) elements after operand i-1, 0 when one matrix is shared by the whole batch.
struct MatmulPlan {
  std::int64_t batch = 1, m = 0, k = 0, n = 0;
  std::int64_t stride_a = 0, stride_b = 0;
  Shape out;
};

MatmulPlan plan_matmul(const Tensor& a, const Tensor& b) {
  check_defined(kOp, a, "first operand");
  check_defined(kOp, b, "second operand");
  CUGRAD_CHECK((a.dim() == 2 || a.dim() == 3) && (b.dim() == 2 || b.dim() == 3), kOp,
               ": operands must be 2-D (M,K)/(K,N) or 3-D (B,M,K)/(B,K,N), got ", operands(a, b));
  CUGRAD_CHECK(a.device() == b.device(), kOp, ": operands are on different devices: ", operands(a, b));
  CUGRAD_CHECK(a.dtype() == b.dtype(), kOp, ": dtype mismatch: ", operands(a, b),
               " (convert one with .to(dtype))");
  CUGRAD_CHECK(is_floating(a.dtype()), kOp,
               ": needs floating-point operands (float32; float64 on the CPU), got ", operands(a, b));
  CUGRAD_CHECK(!(a.is_cuda() && a.dtype() != DType::float32), kOp,
               ": only float32 is supported on CUDA, got ", operands(a, b));

  MatmulPlan p;
  p.m = a.size(-2);
  p.k = a.size(-1);
  p.n = b.size(-1);
  CUGRAD_CHECK(b.size(-2) == p.k, kOp, ": inner dimensions differ (", p.k, " vs ", b.size(-2),
               "): ", operands(a, b));
  const std::int64_t batch_a = a.dim() == 3 ? a.size(0) : 1, batch_b = b.dim() == 3 ? b.size(0) : 1;
  CUGRAD_CHECK(batch_a == batch_b || batch_a == 1 || batch_b == 1, kOp, ": batch sizes differ (", batch_a,
               " vs ", batch_b, ") and neither is 1: ", operands(a, b));
  p.batch = batch_a == 1 ? batch_b : batch_a;
  p.stride_a = batch_a == p.batch ? p.m * p.k : 0;
  p.stride_b = batch_b == p.batch ? p.k * p.n : 0;
  p.out = (a.dim() == 3 || b.dim() == 3) ? Shape{p.batch, p.m, p.n} : Shape{p.m, p.n};
  return p;
}

}  // namespace

namespace {

// Gradient of one operand, summed back over a batch dimension it did not have (or had as 1).
Tensor reduce_batch(const Tensor& g, const Shape& operand_shape) {
  if (g.shape() == operand_shape) return g;
  Tensor r = g.sum(0);  // (B, r, c) -> (r, c)
  return r.reshape(operand_shape);
}

// Backward of out = a @ b: grad_a = g @ b^T, grad_b = a^T @ g, each only when needed.
void record_matmul(const Tensor& a, const Tensor& b, const Tensor& out) {
  const Shape sa = a.shape(), sb = b.shape();
  autograd::record_lambda("MatmulBackward", {a, b}, {out},
                          [sa, sb](const TensorList& g, const TensorList& s, const autograd::Node& n) {
    Tensor ga, gb;
    if (n.needs_input_grad(0)) ga = reduce_batch(matmul(g[0], s[1].transpose(-1, -2)), sa);
    if (n.needs_input_grad(1)) {
      if (sb.size() == 2 && sa.size() == 3) {
        // Shared weight: one (K, B*M) @ (B*M, N) product instead of B products and a sum.
        const std::int64_t k = sa[2], nn = sb[1];
        gb = matmul(s[0].reshape({-1, k}).transpose(0, 1), g[0].reshape({-1, nn}));
      } else {
        gb = reduce_batch(matmul(s[0].transpose(-1, -2), g[0]), sb);
      }
    }
    return TensorList{ga, gb};
  }, {b.requires_grad() ? a : Tensor(), a.requires_grad() ? b : Tensor()});
}

Tensor matmul_forward(const Tensor& a, const Tensor& b) {
  const MatmulPlan p = plan_matmul(a, b);
  if (shape_numel(p.out) == 0) return empty(p.out, a.device(), a.dtype());
  if (p.k == 0) return zeros(p.out, a.device(), a.dtype());

  OpScope scope(kOp, a.device());
  Tensor out = empty(p.out, a.device(), a.dtype());
  scope.reads(a);
  scope.reads(b);
  scope.writes(out);

  // B shared by the whole batch: the batch of A is contiguous, so the products are one
  // (batch*m, k) @ (k, n) GEMM. Otherwise one strided-batched GEMM (A may be shared).
  const bool one_gemm = p.batch == 1 || p.stride_b == 0;
  const std::int64_t rows = one_gemm ? p.batch * p.m : p.m, count = one_gemm ? 1 : p.batch;
  const std::int64_t stride_c = p.m * p.n;
  if (scope.cuda()) {
    const auto* pa = static_cast<const float*>(a.raw_data());
    const auto* pb = static_cast<const float*>(b.raw_data());
    auto* pc = static_cast<float*>(out.raw_data());
    if (one_gemm)
      cuda::gemm_f32(false, false, rows, p.n, p.k, 1.0f, pa, p.k, pb, p.n, 0.0f, pc, p.n, scope.stream());
    else
      cuda::gemm_strided_batched_f32(false, false, rows, p.n, p.k, 1.0f, pa, p.k, p.stride_a, pb, p.n,
                                     p.stride_b, 0.0f, pc, p.n, stride_c, count, scope.stream());
  } else {
    cpu::gemm_strided_batched(a.dtype(), false, false, rows, p.n, p.k, 1.0, a.raw_data(), p.k, p.stride_a,
                              b.raw_data(), p.n, p.stride_b, 0.0, out.raw_data(), p.n, stride_c, count);
  }
  return out;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  Tensor out = matmul_forward(a, b);
  if (autograd::any_requires_grad({&a, &b})) record_matmul(a, b, out);
  return out;
}

Tensor Tensor::matmul(const Tensor& other) const { return cugrad::matmul(*this, other); }

}  // namespace cugrad
