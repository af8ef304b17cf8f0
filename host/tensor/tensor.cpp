// Tensor basics: construction, accessors, views, conversions and copies between devices.
#include <cuda_runtime.h>

#include <cstring>

#include "cuda/elementwise.h"
#include "cugrad/tensor.h"
#include "host/autograd/functions.h"
#include "host/cpu/elementwise.h"
#include "host/ops/op_util.h"
#include "host/runtime/capture.h"
#include "host/runtime/device_errors.h"
#include "host/tensor/tensor_impl.h"

namespace cugrad {

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::int64_t shape_numel(const Shape& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

namespace {
void check_shape(const char* op, const Shape& shape) {
  CUGRAD_CHECK(shape.size() <= static_cast<std::size_t>(kMaxDims), op, ": ", shape.size(),
               " dimensions requested, at most ", kMaxDims, " are supported");
  std::int64_t n = 1;
  for (auto d : shape) {
    CUGRAD_CHECK(d >= 0, op, ": negative dimension in shape ", shape_str(shape));
    CUGRAD_CHECK(d == 0 || n <= (std::int64_t{1} << 50) / d, op, ": shape ", shape_str(shape), " is too large");
    n *= d;
  }
}
}  // namespace

Tensor make_tensor(const Shape& shape, DType dtype, Device device) {
  check_shape("empty", shape);
  CUGRAD_CHECK(!(device.is_cuda() && dtype == DType::float64), "empty: float64 tensors live on the CPU only (",
               "requested on ", device, "); use float32 on CUDA");
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->storage = std::make_shared<Storage>(static_cast<std::size_t>(shape_numel(shape)) * element_size(dtype), device);
  return Tensor(std::move(impl));
}

Tensor make_view(const Tensor& base, const Shape& shape, std::int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.impl()->storage;
  impl->offset = offset;
  impl->shape = shape;
  impl->dtype = base.dtype();
  impl->is_view = true;
  return Tensor(std::move(impl));
}

namespace {
// A view with another shape over the same elements; its backward reshapes the gradient.
Tensor shape_view(const Tensor& self, const Shape& shape, const char* name) {
  Tensor out = make_view(self, shape, self.storage_offset());
  if (autograd::any_requires_grad({&self})) {
    const Shape in = self.shape();
    autograd::record_lambda(name, {self}, {out}, [in](const TensorList& g, const TensorList&, const autograd::Node&) {
      return TensorList{g[0].reshape(in)};
    });
  }
  return out;
}

// Rows [start, start+length) of dim 0, with dim 0 dropped when `drop`.
Tensor rows_view(const Tensor& self, std::int64_t start, std::int64_t length, bool drop, const char* name) {
  Shape s = self.shape();
  const std::int64_t row = s[0] == 0 ? 0 : self.numel() / s[0];
  if (drop) s.erase(s.begin());
  else s[0] = length;
  Tensor out = make_view(self, s, self.storage_offset() + start * row);
  if (autograd::any_requires_grad({&self})) {
    const Shape in = self.shape();
    const Device dev = self.device();
    const DType dt = self.dtype();
    autograd::record_lambda(name, {self}, {out},
                            [in, dev, dt, start, length](const TensorList& g, const TensorList&, const autograd::Node&) {
      Tensor full_grad = zeros(in, dev, dt);
      Tensor rows = full_grad.narrow(0, start, length);
      rows.copy_(g[0].reshape(rows.shape()));
      return TensorList{full_grad};
    });
  }
  return out;
}
}  // namespace

Tensor::Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

const TensorImpl& Tensor::checked() const {
  CUGRAD_CHECK(impl_ != nullptr, "Tensor: use of an undefined tensor");
  return *impl_;
}

const Shape& Tensor::shape() const { return checked().shape; }
std::int64_t Tensor::dim() const { return static_cast<std::int64_t>(checked().shape.size()); }
std::int64_t Tensor::size(std::int64_t d) const { return shape()[static_cast<std::size_t>(wrap_dim("size", d, dim()))]; }
std::int64_t Tensor::numel() const { return checked().numel(); }
DType Tensor::dtype() const { return checked().dtype; }
Device Tensor::device() const { return checked().device(); }
std::size_t Tensor::nbytes() const { return static_cast<std::size_t>(numel()) * element_size(dtype()); }
std::int64_t Tensor::storage_offset() const { return checked().offset; }
std::uint64_t Tensor::version() const { return checked().storage->version(); }
bool Tensor::shares_storage(const Tensor& other) const {
  return defined() && other.defined() && impl_->storage == other.impl_->storage;
}

void* Tensor::raw_data(std::optional<DType> expected) const {
  const TensorImpl& t = checked();
  CUGRAD_CHECK(!expected || *expected == t.dtype, "data_ptr: requested ", *expected, " from a ", describe(*this));
  return t.data();
}

// ---- copies ----

namespace {

cudaMemcpyKind kind_of(Device dst, Device src) {
  if (dst.is_cpu()) return src.is_cpu() ? cudaMemcpyHostToHost : cudaMemcpyDeviceToHost;
  return src.is_cpu() ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToDevice;
}

// Copies src into dst; both the same shape and dtype.
void copy_same_dtype(const Tensor& dst, const Tensor& src) {
  const std::size_t bytes = src.nbytes();
  if (bytes == 0) return;
  const Device dd = dst.device(), sd = src.device();
  if (dd.is_cpu() && sd.is_cpu()) {
    std::memmove(dst.raw_data(), src.raw_data(), bytes);
    return;
  }
  // Run on the current stream of the CUDA side (the destination's when both are CUDA).
  const Device run_on = dd.is_cuda() ? dd : sd;
  if (dd.is_cpu() || sd.is_cpu())
    runtime::check_not_capturing("copy_ between a CPU and a CUDA tensor", run_on);
  OpScope scope("copy_", run_on);
  if (sd.is_cuda()) {
    if (sd == run_on) scope.reads(src);
    else src.impl()->storage->prepare_read(Stream::current(sd));  // peer copy: order after src's writer
  }
  if (dd.is_cuda()) scope.writes(dst);
  auto stream = static_cast<cudaStream_t>(scope.stream());
  if (dd.is_cuda() && sd.is_cuda() && dd != sd) {
    runtime::stream_wait_stream(Stream::current(dd), Stream::current(sd));
    CUGRAD_CUDA_CHECK(cudaMemcpyPeerAsync(dst.raw_data(), dd.index(), src.raw_data(), sd.index(), bytes, stream));
  } else {
    CUGRAD_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), bytes, kind_of(dd, sd), stream));
  }
  // The host must not touch dst's bytes before a device-to-host copy has landed.
  if (dd.is_cpu()) {
    CUGRAD_CUDA_CHECK(cudaStreamSynchronize(stream));
    // The host waited anyway: report what kernels found in their inputs (bad targets, say).
    runtime::check_device_errors(sd);
  }
}

// Converts src's elements to dst's dtype on one device.
void cast_on_device(const Tensor& dst, const Tensor& src) {
  const std::int64_t n = src.numel();
  if (src.device().is_cpu()) {
    cpu::cast(src.dtype(), dst.dtype(), src.raw_data(), dst.raw_data(), n);
    return;
  }
  OpScope scope("to(dtype)", src.device());
  scope.reads(src);
  scope.writes(dst);
  cuda::cast(src.dtype(), dst.dtype(), src.raw_data(), dst.raw_data(), n, scope.stream());
}

}  // namespace

Tensor& Tensor::copy_(const Tensor& src) {
  check_defined("copy_", *this, "destination");
  check_defined("copy_", src, "source");
  CUGRAD_CHECK(shape() == src.shape(), "copy_: shape mismatch: destination ", describe(*this), ", source ",
               describe(src));
  if (autograd::any_requires_grad({this, &src})) {
    autograd::check_inplace("copy_", *this);
    // Under autograd: the differentiable conversions give the new value and its history.
    const Tensor r = src.to(device()).to(dtype());
    {
      NoGradGuard ng;
      copy_(r);
    }
    if (r.requires_grad()) {
      autograd::rebase_history(*this, r.is_leaf() ? r.clone() : r);
    } else if (auto* m = autograd::meta_if(*this)) {
      m->grad_fn.reset();  // overwritten by a constant
    }
    return *this;
  }
  if (shares_storage(src) && storage_offset() == src.storage_offset() && dtype() == src.dtype()) return *this;
  if (dtype() == src.dtype()) {
    copy_same_dtype(*this, src);
  } else if (device() == src.device()) {
    cast_on_device(*this, src);
  } else if (src.device().is_cpu()) {
    // Convert on the host, then upload.
    copy_same_dtype(*this, src.to(dtype()));
  } else {
    // Convert on the source device, then move.
    copy_same_dtype(*this, src.to(dtype()));
  }
  impl_->storage->bump_version();
  return *this;
}

Tensor Tensor::to(Device device) const {
  check_defined("to(device)", *this);
  if (device == this->device()) return *this;
  check_device_available(device, "to(device)");
  Tensor out = make_tensor(shape(), dtype(), device);
  copy_same_dtype(out, *this);
  if (autograd::any_requires_grad({this})) {
    const Device from = this->device();
    autograd::record_lambda("ToDeviceBackward", {*this}, {out}, [from](const TensorList& g, const TensorList&, const autograd::Node&) {
      return TensorList{g[0].to(from)};
    });
  }
  return out;
}

Tensor Tensor::to(DType dtype) const {
  check_defined("to(dtype)", *this);
  if (dtype == this->dtype()) return *this;
  CUGRAD_CHECK(!(is_cuda() && dtype == DType::float64), "to(dtype): float64 is CPU-only; cannot convert ",
               describe(*this), " to float64 on CUDA (move it to the CPU first)");
  Tensor out = make_tensor(shape(), dtype, device());
  cast_on_device(out, *this);
  if (is_floating(dtype) && autograd::any_requires_grad({this})) {
    const DType from = this->dtype();
    autograd::record_lambda("ToDtypeBackward", {*this}, {out}, [from](const TensorList& g, const TensorList&, const autograd::Node&) {
      return TensorList{g[0].to(from)};
    });
  }
  return out;
}

Tensor Tensor::clone() const {
  check_defined("clone", *this);
  Tensor out = make_tensor(shape(), dtype(), device());
  copy_same_dtype(out, *this);
  if (autograd::any_requires_grad({this}))
    autograd::record_lambda("CloneBackward", {*this}, {out}, [](const TensorList& g, const TensorList&, const autograd::Node&) {
      return TensorList{g[0]};
    });
  return out;
}

Tensor& Tensor::fill_(double value) {
  check_defined("fill_", *this);
  autograd::check_inplace("fill_", *this);
  if (is_grad_enabled())
    if (auto* m = autograd::meta_if(*this)) m->grad_fn.reset();  // a constant now
  if (!is_floating(dtype())) {
    CUGRAD_CHECK(value == static_cast<double>(static_cast<std::int64_t>(value)), "fill_: value ", value,
                 " is not an integer, but the tensor is ", describe(*this));
  }
  if (is_cuda()) {
    OpScope scope("fill_", device());
    scope.writes(*this);
    cuda::fill(dtype(), raw_data(), numel(), value, scope.stream());
  } else {
    cpu::fill(dtype(), raw_data(), numel(), value);
  }
  impl_->storage->bump_version();
  return *this;
}

void Tensor::copy_to_host(void* dst, DType expected, std::size_t bytes) const {
  check_defined("to_vector", *this);
  CUGRAD_CHECK(expected == dtype(), "to_vector: element type ", expected, " does not match ", describe(*this));
  CUGRAD_CHECK(bytes == nbytes(), "to_vector: buffer of ", bytes, " bytes for ", describe(*this));
  if (bytes == 0) return;
  if (!is_cuda()) {
    std::memcpy(dst, raw_data(), bytes);
    return;
  }
  runtime::check_not_capturing("to_vector", device());
  OpScope scope("to_vector", device());
  scope.reads(*this);
  auto stream = static_cast<cudaStream_t>(scope.stream());
  CUGRAD_CUDA_CHECK(cudaMemcpyAsync(dst, raw_data(), bytes, cudaMemcpyDeviceToHost, stream));
  CUGRAD_CUDA_CHECK(cudaStreamSynchronize(stream));
  runtime::check_device_errors(device());
}

double Tensor::item_double() const {
  check_defined("item", *this);
  CUGRAD_CHECK(numel() == 1, "item: needs a tensor with one element, got ", describe(*this));
  const Tensor c = cpu().to(DType::float64);
  return *static_cast<const double*>(c.raw_data());
}

// ---- views ----

Tensor Tensor::reshape(const Shape& new_shape) const {
  check_defined("reshape", *this);
  Shape s = new_shape;
  std::int64_t known = 1;
  int infer = -1;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      CUGRAD_CHECK(infer < 0, "reshape: only one dimension may be -1, got ", shape_str(new_shape));
      infer = static_cast<int>(i);
    } else {
      CUGRAD_CHECK(s[i] >= 0, "reshape: invalid dimension ", s[i], " in ", shape_str(new_shape));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    CUGRAD_CHECK(known != 0 && numel() % known == 0, "reshape: cannot reshape ", describe(*this), " to ",
                 shape_str(new_shape));
    s[static_cast<std::size_t>(infer)] = numel() / known;
  }
  CUGRAD_CHECK(shape_numel(s) == numel(), "reshape: cannot reshape ", describe(*this), " (", numel(),
               " elements) to ", shape_str(new_shape));
  CUGRAD_CHECK(s.size() <= static_cast<std::size_t>(kMaxDims), "reshape: at most ", kMaxDims, " dimensions");
  return shape_view(*this, s, "ViewBackward");
}

Tensor Tensor::flatten(std::int64_t start_dim, std::int64_t end_dim) const {
  check_defined("flatten", *this);
  if (dim() == 0) return reshape({1});
  const std::int64_t a = wrap_dim("flatten", start_dim, dim()), b = wrap_dim("flatten", end_dim, dim());
  CUGRAD_CHECK(a <= b, "flatten: start_dim ", start_dim, " comes after end_dim ", end_dim);
  Shape s;
  for (std::int64_t i = 0; i < a; ++i) s.push_back(shape()[static_cast<std::size_t>(i)]);
  std::int64_t m = 1;
  for (std::int64_t i = a; i <= b; ++i) m *= shape()[static_cast<std::size_t>(i)];
  s.push_back(m);
  for (std::int64_t i = b + 1; i < dim(); ++i) s.push_back(shape()[static_cast<std::size_t>(i)]);
  return shape_view(*this, s, "FlattenBackward");
}

Tensor Tensor::squeeze() const {
  check_defined("squeeze", *this);
  Shape s;
  for (auto d : shape())
    if (d != 1) s.push_back(d);
  return shape_view(*this, s, "SqueezeBackward");
}

Tensor Tensor::squeeze(std::int64_t d) const {
  check_defined("squeeze", *this);
  const std::int64_t k = wrap_dim("squeeze", d, dim());
  Shape s = shape();
  if (dim() > 0 && s[static_cast<std::size_t>(k)] == 1) s.erase(s.begin() + k);
  return shape_view(*this, s, "SqueezeBackward");
}

Tensor Tensor::unsqueeze(std::int64_t d) const {
  check_defined("unsqueeze", *this);
  const std::int64_t k = wrap_dim("unsqueeze", d, dim() + 1);
  CUGRAD_CHECK(dim() < kMaxDims, "unsqueeze: ", describe(*this), " already has ", kMaxDims, " dimensions");
  Shape s = shape();
  s.insert(s.begin() + k, 1);
  return shape_view(*this, s, "UnsqueezeBackward");
}

Tensor Tensor::narrow(std::int64_t d, std::int64_t start, std::int64_t length) const {
  check_defined("narrow", *this);
  CUGRAD_CHECK(dim() > 0, "narrow: cannot narrow a 0-dimensional tensor");
  const std::int64_t k = wrap_dim("narrow", d, dim());
  CUGRAD_CHECK(k == 0, "narrow: only dimension 0 keeps a tensor contiguous; got dim ", d, " for ", describe(*this));
  const std::int64_t n = shape()[0];
  CUGRAD_CHECK(start >= 0 && length >= 0 && start + length <= n, "narrow: rows [", start, ", ", start + length,
               ") out of range for ", describe(*this));
  return rows_view(*this, start, length, false, "NarrowBackward");
}

Tensor Tensor::select(std::int64_t d, std::int64_t index) const {
  check_defined("select", *this);
  CUGRAD_CHECK(dim() > 0, "select: cannot select from a 0-dimensional tensor");
  const std::int64_t k = wrap_dim("select", d, dim());
  CUGRAD_CHECK(k == 0, "select: only dimension 0 keeps a tensor contiguous; got dim ", d, " for ", describe(*this));
  const std::int64_t n = shape()[0];
  const std::int64_t i = index < 0 ? index + n : index;
  CUGRAD_CHECK(i >= 0 && i < n, "select: index ", index, " out of range for ", describe(*this));
  return rows_view(*this, i, 1, true, "SelectBackward");
}

}  // namespace cugrad
