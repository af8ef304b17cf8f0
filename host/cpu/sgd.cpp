// CPU reference of the SGD update: one plain loop per parameter tensor.
#include "host/cpu/sgd.h"

#include "cugrad/error.h"

namespace cugrad::cpu {

namespace {

template <typename T, bool kMomentum>
void sgd_loop(T* p, const T* g, T* buf, std::int64_t n, bool init_buffer, const SgdHyper& h) {
  const double one_minus_dampening = 1.0 - h.dampening;
  for (std::int64_t i = 0; i < n; ++i) {
    double gi = static_cast<double>(g[i]);
    const double pi = static_cast<double>(p[i]);
    if (h.maximize) gi = -gi;
    if (h.weight_decay != 0) gi += h.weight_decay * pi;
    double d = gi;
    if constexpr (kMomentum) {
      const double b = init_buffer ? gi : h.momentum * static_cast<double>(buf[i]) + one_minus_dampening * gi;
      buf[i] = static_cast<T>(b);
      d = h.nesterov ? gi + h.momentum * b : b;
    }
    p[i] = static_cast<T>(pi - h.lr * d);
  }
}

template <typename T>
void sgd_typed(void* param, const void* grad, void* momentum_buffer, std::int64_t n, bool init_buffer,
               const SgdHyper& h) {
  T* p = static_cast<T*>(param);
  const T* g = static_cast<const T*>(grad);
  if (h.momentum != 0) {
    CUGRAD_CHECK(momentum_buffer != nullptr, "sgd_update: momentum ", h.momentum, " needs a momentum buffer");
    sgd_loop<T, true>(p, g, static_cast<T*>(momentum_buffer), n, init_buffer, h);
  } else {
    sgd_loop<T, false>(p, g, nullptr, n, init_buffer, h);
  }
}

}  // namespace

void sgd_update(DType dtype, void* param, const void* grad, void* momentum_buffer, std::int64_t n,
                bool init_buffer, const SgdHyper& h) {
  switch (dtype) {
    case DType::float32:
      return sgd_typed<float>(param, grad, momentum_buffer, n, init_buffer, h);
    case DType::float64:
      return sgd_typed<double>(param, grad, momentum_buffer, n, init_buffer, h);
    default:
      break;
  }
  throw ValueError(detail::cat("sgd_update: needs float32 or float64 parameters, got ", dtype));
}

}  // namespace cugrad::cpu
