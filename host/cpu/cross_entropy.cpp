// CPU reference of the fused softmax cross-entropy (formulas in cross_entropy.h): one pass
// over the targets for the mean's denominator, then per row max, Σexp(x-m), Σw(x-m) in
// double, the loss and, when asked for, the gradient.
#include "host/cpu/cross_entropy.h"

#include <cmath>
#include <limits>
#include <vector>

#include "cugrad/error.h"
#include "host/tensor/dispatch.h"

namespace cugrad::cpu {

namespace {

template <typename T>
void forward(const T* x, const std::int64_t* target, const T* weight, const CrossEntropyProblem& p, T* loss,
             T* grad) {
  const std::int64_t n = p.n, k = p.k;
  const double eps = p.label_smoothing, keep = 1.0 - eps, eps_k = eps / static_cast<double>(k);
  const bool none = p.reduction == nn::Reduction::None;

  double denom = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t t = target[i];
    if (cross_entropy_counts(t, k, p.ignore_index)) denom += weight ? static_cast<double>(weight[t]) : 1.0;
  }
  const double scale = p.reduction == nn::Reduction::Mean ? 1.0 / denom : 1.0;

  double weight_sum = static_cast<double>(k);
  if (weight) {
    weight_sum = 0;
    for (std::int64_t j = 0; j < k; ++j) weight_sum += static_cast<double>(weight[j]);
  }

  std::vector<double> d(static_cast<std::size_t>(k));
  double total = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const T* xr = x + i * k;
    T* gr = grad ? grad + i * k : nullptr;
    const std::int64_t t = target[i];
    if (!cross_entropy_counts(t, k, p.ignore_index)) {
      if (none) loss[i] = T(0);
      if (gr)
        for (std::int64_t j = 0; j < k; ++j) gr[j] = T(0);
      continue;
    }
    // NaN never compares greater, so a NaN logit leaves m finite and poisons the sums below.
    double m = -std::numeric_limits<double>::infinity();
    for (std::int64_t j = 0; j < k; ++j) m = std::max(m, static_cast<double>(xr[j]));
    double s = 0, sxw = 0;
    for (std::int64_t j = 0; j < k; ++j) {
      const double dj = static_cast<double>(xr[j]) - m;
      d[static_cast<std::size_t>(j)] = dj;
      s += std::exp(dj);
      sxw += (weight ? static_cast<double>(weight[j]) : 1.0) * dj;
    }
    const double lse = std::log(s);
    const double wt = weight ? static_cast<double>(weight[t]) : 1.0;
    double li = keep * wt * (lse - d[static_cast<std::size_t>(t)]);
    // Without smoothing the smoothing term is absent, as in PyTorch (a -inf logit would make
    // it 0·inf).
    if (eps != 0) li += eps_k * (weight_sum * lse - sxw);
    if (none)
      loss[i] = static_cast<T>(li);
    else
      total += li;
    if (gr) {
      const double a = weight ? keep * wt + eps_k * weight_sum : 1.0;
      for (std::int64_t j = 0; j < k; ++j) {
        const double pj = std::exp(d[static_cast<std::size_t>(j)] - lse);
        double b = eps_k * (weight ? static_cast<double>(weight[j]) : 1.0);
        if (j == t) b += keep * wt;
        gr[j] = static_cast<T>(scale * (pj * a - b));
      }
    }
  }
  if (p.reduction == nn::Reduction::Mean)
    loss[0] = static_cast<T>(total / denom);  // 0/0 = NaN: nothing counted
  if (p.reduction == nn::Reduction::Sum) loss[0] = static_cast<T>(total);
}

template <typename T>
void scale_grad(T* grad, const T* upstream, const std::int64_t* target, const CrossEntropyProblem& p) {
  const bool per_row = p.reduction == nn::Reduction::None;
  for (std::int64_t i = 0; i < p.n; ++i) {
    if (!cross_entropy_counts(target[i], p.k, p.ignore_index)) continue;
    const T u = per_row ? upstream[i] : upstream[0];
    if (u == T(1)) continue;
    T* gr = grad + i * p.k;
    for (std::int64_t j = 0; j < p.k; ++j) gr[j] *= u;
  }
}

}  // namespace

std::int64_t cross_entropy_first_bad_target(const std::int64_t* target, const CrossEntropyProblem& p) {
  for (std::int64_t i = 0; i < p.n; ++i) {
    const std::int64_t t = target[i];
    if (t != p.ignore_index && (t < 0 || t >= p.k)) return i;
  }
  return -1;
}

void cross_entropy_forward(DType dtype, const void* logits, const std::int64_t* target, const void* weight,
                           const CrossEntropyProblem& p, void* loss, void* grad) {
  dispatch_floating_dtype(dtype, "cross_entropy", [&](auto zero) {
    using T = decltype(zero);
    forward<T>(static_cast<const T*>(logits), target, static_cast<const T*>(weight), p, static_cast<T*>(loss),
               static_cast<T*>(grad));
  });
}

void cross_entropy_scale_grad(DType dtype, void* grad, const void* upstream, const std::int64_t* target,
                              const CrossEntropyProblem& p) {
  dispatch_floating_dtype(dtype, "cross_entropy", [&](auto zero) {
    using T = decltype(zero);
    scale_grad<T>(static_cast<T*>(grad), static_cast<const T*>(upstream), target, p);
  });
}

}  // namespace cugrad::cpu
