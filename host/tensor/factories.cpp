// Tensor factories: empty/zeros/ones/full/arange, the random ones, from_vector/from_blob and
// the *_like variants.
#include <cmath>
#include <cstring>

#include "cuda/elementwise.h"
#include "cuda/random.h"
#include "host/cpu/elementwise.h"
#include "host/cpu/random.h"
#include "host/ops/op_util.h"
#include "host/runtime/capture.h"
#include "host/runtime/generator.h"
#include "host/runtime/philox.h"
#include "host/tensor/tensor_impl.h"

namespace cugrad {

Tensor empty(const Shape& shape, Device device, DType dtype) {
  check_device_available(device, "empty");
  return make_tensor(shape, dtype, device);
}

Tensor full(const Shape& shape, double value, Device device, DType dtype) {
  Tensor t = empty(shape, device, dtype);
  t.fill_(value);
  return t;
}

Tensor zeros(const Shape& shape, Device device, DType dtype) { return full(shape, 0.0, device, dtype); }
Tensor ones(const Shape& shape, Device device, DType dtype) { return full(shape, 1.0, device, dtype); }

Tensor arange(double start, double end, double step, Device device, DType dtype) {
  CUGRAD_CHECK(step != 0.0 && std::isfinite(step) && std::isfinite(start) && std::isfinite(end),
               "arange: bad range start=", start, " end=", end, " step=", step);
  CUGRAD_CHECK((end - start) / step >= 0 || start == end, "arange: step ", step, " goes away from end (start=",
               start, ", end=", end, ")");
  const auto n = static_cast<std::int64_t>(std::ceil((end - start) / step));
  Tensor t = empty({std::max<std::int64_t>(n, 0)}, device, dtype);
  if (t.is_cuda()) {
    OpScope scope("arange", device);
    scope.writes(t);
    cuda::arange(dtype, t.raw_data(), t.numel(), start, step, scope.stream());
  } else {
    cpu::arange(dtype, t.raw_data(), t.numel(), start, step);
  }
  return t;
}

Tensor arange(std::int64_t end, Device device, DType dtype) {
  return arange(0.0, static_cast<double>(end), 1.0, device, dtype);
}

Tensor rand(const Shape& shape, Device device, DType dtype) {
  CUGRAD_CHECK(is_floating(dtype), "rand: needs a floating dtype, got ", dtype);
  Tensor t = empty(shape, device, dtype);
  const runtime::DeviceDraw g = runtime::reserve_device_random(device, philox::blocks_for(t.numel(), 4));
  if (t.is_cuda()) {
    OpScope scope("rand", device);
    scope.writes(t);
    cuda::uniform(dtype, t.raw_data(), t.numel(), g.seed, g.offset, g.state, scope.stream());
  } else {
    cpu::uniform(dtype, t.raw_data(), t.numel(), g.seed, g.offset);
  }
  return t;
}

Tensor randn(const Shape& shape, Device device, DType dtype) {
  CUGRAD_CHECK(is_floating(dtype), "randn: needs a floating dtype, got ", dtype);
  Tensor t = empty(shape, device, dtype);
  const runtime::DeviceDraw g = runtime::reserve_device_random(device, philox::blocks_for(t.numel(), 4));
  if (t.is_cuda()) {
    OpScope scope("randn", device);
    scope.writes(t);
    cuda::normal(dtype, t.raw_data(), t.numel(), g.seed, g.offset, g.state, scope.stream());
  } else {
    cpu::normal(dtype, t.raw_data(), t.numel(), g.seed, g.offset);
  }
  return t;
}

Tensor randint(std::int64_t low, std::int64_t high, const Shape& shape, Device device, DType dtype) {
  CUGRAD_CHECK(low < high, "randint: empty range [", low, ", ", high, ")");
  CUGRAD_CHECK(!is_floating(dtype), "randint: needs an integer dtype, got ", dtype);
  Tensor t = empty(shape, device, dtype);
  const auto range = static_cast<std::uint64_t>(high) - static_cast<std::uint64_t>(low);
  const runtime::DeviceDraw g = runtime::reserve_device_random(device, philox::blocks_for(t.numel(), 2));
  if (t.is_cuda()) {
    OpScope scope("randint", device);
    scope.writes(t);
    cuda::randint(dtype, t.raw_data(), t.numel(), g.seed, g.offset, low, range, g.state, scope.stream());
  } else {
    cpu::randint(dtype, t.raw_data(), t.numel(), g.seed, g.offset, low, range);
  }
  return t;
}

Tensor from_blob(const void* data, const Shape& shape, DType dtype, Device device) {
  const std::int64_t n = shape_numel(shape);
  CUGRAD_CHECK(data != nullptr || n == 0, "from_blob: null data pointer for shape ", shape_str(shape));
  Tensor host = make_tensor(shape, dtype, Device::cpu());
  if (n > 0) std::memcpy(host.raw_data(), data, host.nbytes());
  return host.to(device);
}

template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  CUGRAD_CHECK(static_cast<std::int64_t>(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
               " values for shape ", shape_str(shape), " (", shape_numel(shape), " elements)");
  return from_blob(values.data(), shape, dtype_of<T>, device);
}

template Tensor from_vector<float>(const std::vector<float>&, const Shape&, Device);
template Tensor from_vector<double>(const std::vector<double>&, const Shape&, Device);
template Tensor from_vector<std::int64_t>(const std::vector<std::int64_t>&, const Shape&, Device);
template Tensor from_vector<std::int32_t>(const std::vector<std::int32_t>&, const Shape&, Device);
template Tensor from_vector<std::uint8_t>(const std::vector<std::uint8_t>&, const Shape&, Device);

Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.device(), t.dtype()); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.device(), t.dtype()); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.device(), t.dtype()); }
Tensor full_like(const Tensor& t, double value) { return full(t.shape(), value, t.device(), t.dtype()); }
Tensor rand_like(const Tensor& t) { return rand(t.shape(), t.device(), t.dtype()); }
Tensor randn_like(const Tensor& t) { return randn(t.shape(), t.device(), t.dtype()); }

}  // namespace cugrad
