// CPU reference BatchNorm: plain loops over (N, C, HW), one channel at a time, accumulated in
// double. Statistics by two passes (mean, then Σ(x - mean)²), so a large mean never cancels.
#include "host/cpu/batch_norm.h"

#include <cmath>

#include "cugrad/error.h"
#include "host/tensor/dispatch.h"

namespace cugrad::cpu {

namespace {

// Calls f(n, j_offset) over the elements of channel c: offsets (n * C + c) * HW + j.
template <typename F>
void for_channel(const BatchNormDims& d, std::int64_t c, F&& f) {
  for (std::int64_t n = 0; n < d.n; ++n) {
    const std::int64_t base = (n * d.c + c) * d.hw;
    for (std::int64_t j = 0; j < d.hw; ++j) f(base + j);
  }
}

template <typename T>
double param(const void* p, std::int64_t c, double fallback) {
  return p ? static_cast<double>(static_cast<const T*>(p)[c]) : fallback;
}

template <typename T>
void train_forward(const T* x, T* y, const BatchNormDims& d, const void* weight, const void* bias, double eps,
                   T* save_mean, T* save_invstd, T* running_mean, T* running_var, double factor) {
  const auto m = static_cast<double>(d.per_channel());
  for (std::int64_t c = 0; c < d.c; ++c) {
    double sum = 0;
    for_channel(d, c, [&](std::int64_t i) { sum += static_cast<double>(x[i]); });
    const double mean = sum / m;
    double m2 = 0;
    for_channel(d, c, [&](std::int64_t i) {
      const double dev = static_cast<double>(x[i]) - mean;
      m2 += dev * dev;
    });
    const double var = m2 / m;
    const double invstd = 1.0 / std::sqrt(var + eps);
    const double scale = invstd * param<T>(weight, c, 1.0), shift = param<T>(bias, c, 0.0);
    for_channel(d, c, [&](std::int64_t i) {
      y[i] = static_cast<T>((static_cast<double>(x[i]) - mean) * scale + shift);
    });
    save_mean[c] = static_cast<T>(mean);
    save_invstd[c] = static_cast<T>(invstd);
    if (running_mean) {
      running_mean[c] = static_cast<T>((1.0 - factor) * static_cast<double>(running_mean[c]) + factor * mean);
      running_var[c] =
          static_cast<T>((1.0 - factor) * static_cast<double>(running_var[c]) + factor * (m2 / (m - 1.0)));
    }
  }
}

template <typename T>
void eval_forward(const T* x, T* y, const BatchNormDims& d, const void* weight, const void* bias,
                  const T* running_mean, const T* running_var, double eps) {
  for (std::int64_t c = 0; c < d.c; ++c) {
    const double mean = static_cast<double>(running_mean[c]);
    const double scale = param<T>(weight, c, 1.0) / std::sqrt(static_cast<double>(running_var[c]) + eps);
    const double shift = param<T>(bias, c, 0.0);
    for_channel(d, c, [&](std::int64_t i) {
      y[i] = static_cast<T>((static_cast<double>(x[i]) - mean) * scale + shift);
    });
  }
}

template <typename T>
void backward(const T* x, const T* dy, const BatchNormDims& d, const void* weight, const T* mean_p,
              const T* second, bool training, double eps, T* dx, T* dweight, T* dbias) {
  const auto m = static_cast<double>(d.per_channel());
  for (std::int64_t c = 0; c < d.c; ++c) {
    const double mean = static_cast<double>(mean_p[c]);
    const double invstd =
        training ? static_cast<double>(second[c]) : 1.0 / std::sqrt(static_cast<double>(second[c]) + eps);
    const double w = param<T>(weight, c, 1.0);
    double sum_dy = 0, sum_dy_xmu = 0;
    if (dweight || dbias || (training && dx)) {
      for_channel(d, c, [&](std::int64_t i) {
        const double g = static_cast<double>(dy[i]);
        sum_dy += g;
        sum_dy_xmu += g * (static_cast<double>(x[i]) - mean);
      });
    }
    if (dweight) dweight[c] = static_cast<T>(sum_dy_xmu * invstd);
    if (dbias) dbias[c] = static_cast<T>(sum_dy);
    if (!dx) continue;
    if (training) {
      const double mean_dy = sum_dy / m, k = invstd * invstd * sum_dy_xmu / m;
      for_channel(d, c, [&](std::int64_t i) {
        const double g = static_cast<double>(dy[i]), xmu = static_cast<double>(x[i]) - mean;
        dx[i] = static_cast<T>(w * invstd * (g - mean_dy - xmu * k));
      });
    } else {
      for_channel(d, c,
                  [&](std::int64_t i) { dx[i] = static_cast<T>(static_cast<double>(dy[i]) * w * invstd); });
    }
  }
}

}  // namespace

void batch_norm_train_forward(DType dtype, const void* x, void* y, const BatchNormDims& d, const void* weight,
                              const void* bias, double eps, void* save_mean, void* save_invstd,
                              void* running_mean, void* running_var, double factor) {
  dispatch_floating_dtype(dtype, "batch_norm", [&](auto tag) {
    using T = decltype(tag);
    train_forward<T>(static_cast<const T*>(x), static_cast<T*>(y), d, weight, bias, eps,
                     static_cast<T*>(save_mean), static_cast<T*>(save_invstd), static_cast<T*>(running_mean),
                     static_cast<T*>(running_var), factor);
  });
}

void batch_norm_eval_forward(DType dtype, const void* x, void* y, const BatchNormDims& d, const void* weight,
                             const void* bias, const void* running_mean, const void* running_var,
                             double eps) {
  dispatch_floating_dtype(dtype, "batch_norm", [&](auto tag) {
    using T = decltype(tag);
    eval_forward<T>(static_cast<const T*>(x), static_cast<T*>(y), d, weight, bias,
                    static_cast<const T*>(running_mean), static_cast<const T*>(running_var), eps);
  });
}

void batch_norm_backward(DType dtype, const void* x, const void* dy, const BatchNormDims& d,
                         const void* weight, const void* mean, const void* invstd_or_var, bool training,
                         double eps, void* dx, void* dweight, void* dbias) {
  dispatch_floating_dtype(dtype, "batch_norm_backward", [&](auto tag) {
    using T = decltype(tag);
    backward<T>(static_cast<const T*>(x), static_cast<const T*>(dy), d, weight, static_cast<const T*>(mean),
                static_cast<const T*>(invstd_or_var), training, eps, static_cast<T*>(dx),
                static_cast<T*>(dweight), static_cast<T*>(dbias));
  });
}

}  // namespace cugrad::cpu
