// Reductions: the op codes and the [outer, reduce, inner] layout shared with cuda/reduce.h,
// and the CPU reference kernels (plain loops, accumulated in double or int64).
#pragma once

#include <cstdint>

#include "cugrad/dtype.h"

namespace cugrad {

/// What a reduction computes over each run of `reduce` elements. NaN propagates through
/// every op (amax/amin/argmax count NaN as the maximum, argmax returns the first NaN).
enum class ReduceOp : std::uint8_t {
  sum,     // Σx; integer inputs give int64
  mean,    // Σx / n; NaN when n == 0 (floating inputs only)
  amax,    // largest value (n > 0)
  amin,    // smallest value (n > 0)
  argmax,  // int64 index along the reduced dimension of the first largest value (n > 0)
  var,     // Σ(x - mean)² / (n - unbiased); NaN when that divisor is <= 0 (floating only)
  std,     // sqrt(var)
  norm,    // (Σ|x|^p)^(1/p); p = inf: max |x| (floating only)
};

/// A contiguous input viewed as [outer, reduce, inner]: out[o, i] reduces
/// x[(o * reduce + r) * inner + i] over r in [0, reduce). The output is [outer, inner].
struct ReduceLayout {
  std::int64_t outer = 1;
  std::int64_t reduce = 1;
  std::int64_t inner = 1;
};

/// Parameters of the ops that have any: var/std's divisor and norm's order.
struct ReduceArgs {
  bool unbiased = true;  // var/std divide by n - 1 (Bessel) instead of n
  double p = 2.0;        // norm order: > 0, or +inf
};

/// The dtype of a reduction's result for an input of `in`: int64 for sum of an integer
/// tensor and for argmax, the input's dtype otherwise.
constexpr DType reduce_result_dtype(ReduceOp op, DType in) {
  if (op == ReduceOp::argmax) return DType::int64;
  if (op == ReduceOp::sum && !is_floating(in)) return DType::int64;
  return in;
}

namespace cpu {

/// Reference reduction. Requires: `x` holds layout.outer*reduce*inner elements of `dtype`;
/// `out` holds outer*inner elements of reduce_result_dtype(op, dtype); floating `dtype` for
/// mean/var/std/norm; reduce > 0 for amax/amin/argmax and for norm with p = inf.
/// Floating sums, means, variances (Welford) and norms accumulate in double.
void reduce(ReduceOp op, DType dtype, const void* x, void* out, const ReduceLayout& layout,
            const ReduceArgs& args);

}  // namespace cpu
}  // namespace cugrad
