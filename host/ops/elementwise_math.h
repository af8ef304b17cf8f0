// The scalar math of every elementwise op, shared by the CPU reference loops and the CUDA
// kernels so that both compute exactly the same function.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cugrad/macros.h"

namespace cugrad {

enum class UnaryOp : std::uint8_t {
  neg, exp, log, sqrt, rsqrt, abs, sign, relu, pow, clamp,
  add_scalar,   // x + a
  mul_scalar,   // x * a
  rsub_scalar,  // a - x
  rdiv_scalar,  // a / x
  sigmoid,      // 1 / (1 + exp(-x))
  tanh,
  leaky_relu,   // x > 0 ? x : a * x
};
enum class BinaryOp : std::uint8_t {
  add, sub, mul, div, maximum, minimum,
  // Gradients of the activations (backward only, never recorded): x the incoming gradient,
  // y the saved tensor. PyTorch's threshold_backward for ReLU: y <= 0 ? 0 : x (so a NaN
  // output passes the gradient and a masked gradient is exactly 0, even if x is Inf or NaN);
  // leaky_relu_backward: y > 0 ? x : x * alpha.
  threshold_backward, leaky_relu_backward,
  eq, ne, lt, le, gt, ge  // comparisons (uint8 results) last: is_comparison relies on it
};

constexpr bool is_comparison(BinaryOp op) { return op >= BinaryOp::eq; }
constexpr bool needs_floating(UnaryOp op) {
  return op == UnaryOp::exp || op == UnaryOp::log || op == UnaryOp::sqrt || op == UnaryOp::rsqrt ||
         op == UnaryOp::pow || op == UnaryOp::rdiv_scalar || op == UnaryOp::sigmoid || op == UnaryOp::tanh ||
         op == UnaryOp::leaky_relu;
}

template <typename T>
CUGRAD_HOST_DEVICE CUGRAD_INLINE bool is_nan_value(T x) {
  if constexpr (std::is_floating_point_v<T>) return x != x;
  return false;
}

/// For clamp, NaN bounds are not used: `a` is the min, `b` the max; has_min/has_max flags
/// are encoded by passing -inf/+inf (floats) or the type's limits (integers).
template <typename T>
CUGRAD_HOST_DEVICE CUGRAD_INLINE T apply_unary(UnaryOp op, T x, T a, T b) {
  switch (op) {
    case UnaryOp::neg: return static_cast<T>(-x);
    case UnaryOp::abs:
      if constexpr (std::is_unsigned_v<T>) return x;
      else return x < T(0) ? static_cast<T>(-x) : x;
    case UnaryOp::sign:
      if constexpr (std::is_unsigned_v<T>) return static_cast<T>(x != T(0));
      else return is_nan_value(x) ? x : static_cast<T>((T(0) < x) - (x < T(0)));
    case UnaryOp::relu: return is_nan_value(x) ? x : (x > T(0) ? x : T(0));
    case UnaryOp::clamp: {
      if (is_nan_value(x)) return x;
      T y = x < a ? a : x;
      return y > b ? b : y;
    }
    case UnaryOp::add_scalar: return static_cast<T>(x + a);
    case UnaryOp::mul_scalar: return static_cast<T>(x * a);
    case UnaryOp::rsub_scalar: return static_cast<T>(a - x);
    default: break;
  }
  if constexpr (std::is_floating_point_v<T>) {
    switch (op) {
      case UnaryOp::exp: return std::exp(x);
      case UnaryOp::log: return std::log(x);
      case UnaryOp::sqrt: return std::sqrt(x);
      case UnaryOp::rsqrt: return T(1) / std::sqrt(x);
      case UnaryOp::pow:
        if (a == T(2)) return x * x;
        if (a == T(1)) return x;
        if (a == T(0.5)) return std::sqrt(x);
        return std::pow(x, a);
      case UnaryOp::rdiv_scalar: return a / x;
      // exp of a non-positive argument only: no overflow for large |x|, and the two branches
      // agree at 0. NaN takes the second branch and stays NaN.
      case UnaryOp::sigmoid: {
        if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
        const T e = std::exp(x);
        return e / (T(1) + e);
      }
      case UnaryOp::tanh: return std::tanh(x);
      case UnaryOp::leaky_relu: return x > T(0) ? x : x * a;  // NaN * a stays NaN
      default: break;
    }
  }
  return x;  // unreachable for valid (op, T) pairs: the op layer rejects the others
}

template <typename T>
CUGRAD_HOST_DEVICE CUGRAD_INLINE T apply_binary(BinaryOp op, T x, T y, T alpha) {
  switch (op) {
    case BinaryOp::add: return static_cast<T>(x + alpha * y);
    case BinaryOp::sub: return static_cast<T>(x - y);
    case BinaryOp::mul: return static_cast<T>(x * y);
    case BinaryOp::div: return static_cast<T>(x / y);
    case BinaryOp::maximum:
      if (is_nan_value(x) || is_nan_value(y)) return is_nan_value(x) ? x : y;
      return x > y ? x : y;
    case BinaryOp::minimum:
      if (is_nan_value(x) || is_nan_value(y)) return is_nan_value(x) ? x : y;
      return x < y ? x : y;
    case BinaryOp::threshold_backward: return y <= T(0) ? T(0) : x;
    case BinaryOp::leaky_relu_backward: return y > T(0) ? x : static_cast<T>(x * alpha);
    default: return x;
  }
}

// A value converted to another dtype, as PyTorch converts it. Floating point to uint8 goes
// through int64 (c10's static_cast_with_inter_type): a direct cast of a negative value is
// undefined in C++, and x86 (wraps: -2 -> 254) and CUDA (saturates: -2 -> 0) differ on it.
template <typename To, typename From>
CUGRAD_HOST_DEVICE CUGRAD_INLINE To convert(From v) {
  if constexpr (std::is_same_v<To, std::uint8_t> && std::is_floating_point_v<From>)
    return static_cast<To>(static_cast<std::int64_t>(v));
  else
    return static_cast<To>(v);
}

template <typename T>
CUGRAD_HOST_DEVICE CUGRAD_INLINE std::uint8_t apply_compare(BinaryOp op, T x, T y) {
  switch (op) {
    case BinaryOp::eq: return x == y;
    case BinaryOp::ne: return x != y;
    case BinaryOp::lt: return x < y;
    case BinaryOp::le: return x <= y;
    case BinaryOp::gt: return x > y;
    case BinaryOp::ge: return x >= y;
    default: return 0;
  }
}

}  // namespace cugrad
