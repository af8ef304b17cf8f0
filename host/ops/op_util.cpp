// Input checks shared by all ops, and OpScope.
#include "host/ops/op_util.h"

namespace cugrad {

std::string describe(const Tensor& t) {
  if (!t.defined()) return "undefined tensor";
  return detail::cat(t.dtype(), shape_str(t.shape()), " on ", t.device());
}

void check_defined(const char* op, const Tensor& t, const char* what) {
  CUGRAD_CHECK(t.defined(), op, ": ", what, " is an undefined tensor");
}

void check_same_device(const char* op, const Tensor& a, const Tensor& b) {
  CUGRAD_CHECK(a.device() == b.device(), op, ": tensors are on different devices: ", describe(a), " and ",
               describe(b));
}

void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  CUGRAD_CHECK(a.dtype() == b.dtype(), op, ": dtype mismatch: ", describe(a), " and ", describe(b),
               " (convert one with .to(dtype))");
}

void check_floating(const char* op, const Tensor& t) {
  CUGRAD_CHECK(is_floating(t.dtype()), op, ": needs a floating-point tensor, got ", describe(t));
}

std::int64_t wrap_dim(const char* op, std::int64_t dim, std::int64_t ndim) {
  const std::int64_t lo = ndim == 0 ? -1 : -ndim, hi = ndim == 0 ? 0 : ndim - 1;
  CUGRAD_CHECK(dim >= lo && dim <= hi, op, ": dimension ", dim, " out of range for a tensor of ", ndim,
               " dimension", ndim == 1 ? "" : "s", " (expected ", lo, " to ", hi, ")");
  return dim < 0 ? dim + (ndim == 0 ? 1 : ndim) : dim;
}

namespace {
Device checked_device(const char* op, Device device) {
  check_device_available(device, op);
  return device;
}
}  // namespace

OpScope::OpScope(const char* op, Device device) : device_(checked_device(op, device)), guard_(device_) {
  if (device_.is_cuda()) stream_ = Stream::current(device_);
}

}  // namespace cugrad
