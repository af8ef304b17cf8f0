// CPU reference reductions: plain loops over [outer, reduce, inner], walking memory in order
// (one accumulator per inner index), in double for floating inputs and int64 for integers.
#include "host/cpu/reduce.h"

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "host/tensor/dispatch.h"

namespace cugrad::cpu {

namespace {

template <typename T>
bool is_nan(T x) {
  if constexpr (std::is_floating_point_v<T>)
    return std::isnan(x);
  else
    return false;
}

// For each output (o, i): acc = init(); step(acc, x_index, r) for r = 0..reduce-1 in order;
// finish(out_index, acc). Reads x once, in memory order.
template <typename State, typename Init, typename Step, typename Finish>
void reduce_loop(const ReduceLayout& l, Init init, Step step, Finish finish) {
  std::vector<State> acc(static_cast<std::size_t>(l.inner));
  for (std::int64_t o = 0; o < l.outer; ++o) {
    for (auto& a : acc) a = init();
    for (std::int64_t r = 0; r < l.reduce; ++r) {
      const std::int64_t base = (o * l.reduce + r) * l.inner;
      for (std::int64_t i = 0; i < l.inner; ++i) step(acc[static_cast<std::size_t>(i)], base + i, r);
    }
    for (std::int64_t i = 0; i < l.inner; ++i) finish(o * l.inner + i, acc[static_cast<std::size_t>(i)]);
  }
}

struct Welford {
  std::int64_t n;
  double mean;
  double m2;
};

template <typename T>
void reduce_typed(ReduceOp op, const T* x, void* out_raw, const ReduceLayout& l, const ReduceArgs& args) {
  constexpr bool kFloat = std::is_floating_point_v<T>;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const auto n = l.reduce;
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::mean: {
      using Acc = std::conditional_t<kFloat, double, std::int64_t>;
      using Out = std::conditional_t<kFloat, T, std::int64_t>;
      Out* out = static_cast<Out*>(out_raw);
      const bool mean = op == ReduceOp::mean;
      reduce_loop<Acc>(
          l, [] { return Acc(0); },
          [&](Acc& a, std::int64_t k, std::int64_t) { a += static_cast<Acc>(x[k]); },
          [&](std::int64_t j, Acc a) {
            if (mean)
              out[j] = static_cast<Out>(n == 0 ? nan : static_cast<double>(a) / static_cast<double>(n));
            else
              out[j] = static_cast<Out>(a);
          });
      return;
    }
    case ReduceOp::amax:
    case ReduceOp::amin: {
      T* out = static_cast<T*>(out_raw);
      const bool is_max = op == ReduceOp::amax;
      T start = is_max ? std::numeric_limits<T>::lowest() : std::numeric_limits<T>::max();
      if constexpr (kFloat)
        start = is_max ? -std::numeric_limits<T>::infinity() : std::numeric_limits<T>::infinity();
      reduce_loop<T>(
          l, [&] { return start; },
          [&](T& a, std::int64_t k, std::int64_t) {
            const T v = x[k];
            if (is_nan(a)) return;
            if (is_nan(v) || (is_max ? v > a : v < a)) a = v;
          },
          [&](std::int64_t j, T a) { out[j] = a; });
      return;
    }
    case ReduceOp::argmax: {
      struct Best {
        T value;
        std::int64_t index;
      };
      auto* out = static_cast<std::int64_t*>(out_raw);
      reduce_loop<Best>(
          l,
          [] {
            return Best{T(0), -1};
          },
          [&](Best& b, std::int64_t k, std::int64_t r) {
            const T v = x[k];
            // The first NaN wins; among equal maxima the first index (strict >) stays.
            if (b.index < 0 || (!is_nan(b.value) && (is_nan(v) || v > b.value))) b = Best{v, r};
          },
          [&](std::int64_t j, Best b) { out[j] = b.index; });
      return;
    }
    default:
      break;
  }
  if constexpr (kFloat) {
    T* out = static_cast<T*>(out_raw);
    switch (op) {
      case ReduceOp::var:
      case ReduceOp::std: {
        const std::int64_t divisor = n - (args.unbiased ? 1 : 0);
        const bool take_sqrt = op == ReduceOp::std;
        reduce_loop<Welford>(
            l,
            [] {
              return Welford{0, 0.0, 0.0};
            },
            [&](Welford& w, std::int64_t k, std::int64_t) {
              const double v = static_cast<double>(x[k]);
              ++w.n;
              const double d = v - w.mean;
              w.mean += d / static_cast<double>(w.n);
              w.m2 += d * (v - w.mean);
            },
            [&](std::int64_t j, Welford w) {
              const double var = divisor > 0 ? w.m2 / static_cast<double>(divisor) : nan;
              out[j] = static_cast<T>(take_sqrt ? std::sqrt(var) : var);
            });
        return;
      }
      case ReduceOp::norm: {
        const double p = args.p;
        if (std::isinf(p)) {
          reduce_loop<double>(
              l, [] { return 0.0; },
              [&](double& a, std::int64_t k, std::int64_t) {
                const double v = std::fabs(static_cast<double>(x[k]));
                if (!std::isnan(a) && (std::isnan(v) || v > a)) a = v;
              },
              [&](std::int64_t j, double a) { out[j] = static_cast<T>(a); });
          return;
        }
        reduce_loop<double>(
            l, [] { return 0.0; },
            [&](double& a, std::int64_t k, std::int64_t) {
              const double v = std::fabs(static_cast<double>(x[k]));
              a += p == 1.0 ? v : p == 2.0 ? v * v : std::pow(v, p);
            },
            [&](std::int64_t j, double a) {
              out[j] = static_cast<T>(p == 1.0 ? a : p == 2.0 ? std::sqrt(a) : std::pow(a, 1.0 / p));
            });
        return;
      }
      default:
        break;
    }
  }
  throw ValueError(detail::cat("reduce: op ", static_cast<int>(op), " is not defined for ", dtype_of<T>));
}

}  // namespace

void reduce(ReduceOp op, DType dtype, const void* x, void* out, const ReduceLayout& layout,
            const ReduceArgs& args) {
  dispatch_dtype(dtype, "reduce", [&](auto tag) {
    using T = typename decltype(tag)::type;
    reduce_typed<T>(op, static_cast<const T*>(x), out, layout, args);
  });
}

}  // namespace cugrad::cpu
