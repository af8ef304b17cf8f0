// cugrad::Tensor: a contiguous n-dimensional array on the CPU or a CUDA device, with the
// factories, views, elementwise ops (NumPy broadcasting), reductions and matmul of the
// foundation. Every op checks its inputs and throws cugrad::ValueError naming the op and
// the offending shapes, dtypes or devices. Ops on CUDA tensors run asynchronously on the
// current stream of the device; only to(cpu), to_vector(), item() and synchronize() wait.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "cugrad/device.h"
#include "cugrad/dtype.h"
#include "cugrad/error.h"
#include "cugrad/hooks.h"

namespace cugrad {

using Shape = std::vector<std::int64_t>;
inline constexpr int kMaxDims = 8;

std::string shape_str(const Shape& shape);
std::int64_t shape_numel(const Shape& shape);

struct TensorImpl;  // host/tensor/tensor_impl.h

class Tensor;
/// A tensor hook: sees a gradient, may return a replacement (std::nullopt keeps it).
using GradHook = std::function<std::optional<Tensor>(const Tensor&)>;
/// An observing hook: sees a gradient and cannot change it (modifying it in place is an error).
using GradObserver = std::function<void(const Tensor&)>;
/// Runs after a leaf's .grad has been updated; receives the leaf.
using PostAccumulateGradHook = std::function<void(Tensor&)>;

class Tensor {
 public:
  Tensor() = default;  // undefined tensor
  explicit Tensor(std::shared_ptr<TensorImpl> impl);

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  std::int64_t dim() const;
  /// Size of dimension `d` (negative counts from the end).
  std::int64_t size(std::int64_t d) const;
  std::int64_t numel() const;
  DType dtype() const;
  Device device() const;
  std::size_t nbytes() const;
  bool is_cuda() const { return device().is_cuda(); }
  /// Element offset of this view into its storage.
  std::int64_t storage_offset() const;
  /// In-place writes bump this counter (shared by all views of one storage).
  std::uint64_t version() const;
  /// True when both tensors view the same storage.
  bool shares_storage(const Tensor& other) const;

  /// Raw pointer to the first element (device pointer for CUDA tensors). Checks T.
  template <typename T> T* data_ptr() const { return static_cast<T*>(raw_data(dtype_of<T>)); }
  void* raw_data(std::optional<DType> expected = std::nullopt) const;

  // ---- conversion and copies ----
  /// A copy on `device` (this tensor itself when it is already there). D2H waits.
  Tensor to(Device device) const;
  /// A copy converted to `dtype` (this tensor itself when it already has it).
  Tensor to(DType dtype) const;
  Tensor cpu() const { return to(Device::cpu()); }
  Tensor cuda(int index = 0) const { return to(Device::cuda(index)); }
  Tensor clone() const;
  /// Copies `src` (same shape, any device; dtype converted) into this tensor, in place.
  Tensor& copy_(const Tensor& src);
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }

  /// All elements as a host vector (waits for the device). T must match dtype().
  template <typename T> std::vector<T> to_vector() const {
    std::vector<T> out(static_cast<std::size_t>(numel()));
    copy_to_host(out.data(), dtype_of<T>, out.size() * sizeof(T));
    return out;
  }
  /// The single element of a one-element tensor, converted to T.
  template <typename T> T item() const { return static_cast<T>(item_double()); }
  double item_double() const;

  // ---- views (share storage, keep contiguity) ----
  Tensor reshape(const Shape& shape) const;  // one dim may be -1
  Tensor view(const Shape& shape) const { return reshape(shape); }
  Tensor flatten(std::int64_t start_dim = 0, std::int64_t end_dim = -1) const;
  Tensor squeeze() const;
  Tensor squeeze(std::int64_t dim) const;
  Tensor unsqueeze(std::int64_t dim) const;
  /// Rows [start, start+length) of dimension 0 (only dim 0 keeps contiguity).
  Tensor narrow(std::int64_t dim, std::int64_t start, std::int64_t length) const;
  /// Row `index` of dimension 0, with that dimension removed.
  Tensor select(std::int64_t dim, std::int64_t index) const;
  Tensor operator[](std::int64_t index) const { return select(0, index); }

  // ---- elementwise ----
  Tensor neg() const;
  Tensor exp() const;
  Tensor log() const;
  Tensor sqrt() const;
  Tensor rsqrt() const;
  Tensor abs() const;
  Tensor sign() const;
  Tensor relu() const;
  Tensor sigmoid() const;
  Tensor tanh() const;
  Tensor leaky_relu(double negative_slope = 0.01) const;
  Tensor pow(double exponent) const;
  Tensor clamp(std::optional<double> min, std::optional<double> max) const;

  Tensor& add_(const Tensor& other, double alpha = 1.0);
  Tensor& sub_(const Tensor& other);
  Tensor& mul_(const Tensor& other);
  Tensor& div_(const Tensor& other);
  Tensor& add_(double value);
  Tensor& mul_(double value);
  Tensor& neg_();
  Tensor& relu_();
  Tensor& sigmoid_();
  Tensor& tanh_();
  Tensor& leaky_relu_(double negative_slope = 0.01);
  Tensor& exp_();
  Tensor& clamp_(std::optional<double> min, std::optional<double> max);

  // ---- reductions (dim negative counts from the end) ----
  Tensor sum() const;
  Tensor sum(std::int64_t dim, bool keepdim = false) const;
  Tensor mean() const;
  Tensor mean(std::int64_t dim, bool keepdim = false) const;
  Tensor max() const;
  Tensor max(std::int64_t dim, bool keepdim = false) const;
  Tensor min() const;
  Tensor min(std::int64_t dim, bool keepdim = false) const;
  Tensor argmax() const;
  Tensor argmax(std::int64_t dim, bool keepdim = false) const;
  Tensor var(bool unbiased = true) const;
  Tensor var(std::int64_t dim, bool unbiased = true, bool keepdim = false) const;
  /// `t.var(0)` means dimension 0: an int literal would otherwise be ambiguous between
  /// the (bool unbiased) and (int64 dim) overloads. Same for std.
  Tensor var(int dim, bool unbiased = true, bool keepdim = false) const {
    return var(static_cast<std::int64_t>(dim), unbiased, keepdim);
  }
  Tensor std(bool unbiased = true) const;
  Tensor std(std::int64_t dim, bool unbiased = true, bool keepdim = false) const;
  Tensor std(int dim, bool unbiased = true, bool keepdim = false) const {
    return std(static_cast<std::int64_t>(dim), unbiased, keepdim);
  }
  Tensor norm(double p = 2.0) const;
  Tensor norm(double p, std::int64_t dim, bool keepdim = false) const;

  Tensor matmul(const Tensor& other) const;
  /// Swaps dimensions d0 and d1 (a copy: tensors stay contiguous).
  Tensor transpose(std::int64_t d0, std::int64_t d1) const;
  /// Transpose of a 2-D tensor (a copy).
  Tensor t() const { return transpose(0, 1); }

  // ---- autograd (include/cugrad/autograd.h has the rest) ----
  /// True for a leaf marked with requires_grad_(true) and for results of ops on such tensors
  /// recorded while grad mode was on.
  bool requires_grad() const;
  /// Marks a leaf (floating dtype) as needing gradients, or clears the mark.
  Tensor& requires_grad_(bool requires_grad = true);
  /// True unless the tensor was produced by a recorded op.
  bool is_leaf() const;
  /// The gradient accumulated by backward (leaves, or non-leaves after retain_grad()).
  Tensor grad() const;
  /// Replaces (or with an undefined tensor clears) the accumulated gradient.
  void set_grad(const Tensor& grad);
  /// Keeps .grad on a non-leaf tensor during backward.
  void retain_grad();
  /// A tensor sharing this one's storage but outside the graph.
  Tensor detach() const;
  /// Computes gradients of this tensor with respect to the graph leaves and accumulates them
  /// into their .grad. `gradient` is needed unless the tensor has one element.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;
  /// Name of the op that produced this tensor ("" for leaves).
  std::string grad_fn_name() const;
  /// Hook on the gradient with respect to this tensor, run when it is computed, before it is
  /// used or accumulated; it may return a replacement. Hooks run in registration order.
  HookHandle register_hook(GradHook hook);
  /// Observing hook on the same gradient: it sees the final value (after replacing hooks).
  HookHandle register_observer_hook(GradObserver hook);
  /// Leaves only: runs after .grad has been updated by backward.
  HookHandle register_post_accumulate_grad_hook(PostAccumulateGradHook hook);

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  void copy_to_host(void* dst, DType expected, std::size_t bytes) const;
  const TensorImpl& checked() const;
  std::shared_ptr<TensorImpl> impl_;
};

using TensorList = std::vector<Tensor>;

// ---- factories (float32 unless a dtype is given) ----
Tensor empty(const Shape& shape, Device device = Device::cpu(), DType dtype = DType::float32);
Tensor zeros(const Shape& shape, Device device = Device::cpu(), DType dtype = DType::float32);
Tensor ones(const Shape& shape, Device device = Device::cpu(), DType dtype = DType::float32);
Tensor full(const Shape& shape, double value, Device device = Device::cpu(),
            DType dtype = DType::float32);
/// [start, end) in steps of `step`; int64 unless a dtype is given.
Tensor arange(double start, double end, double step = 1.0, Device device = Device::cpu(),
              DType dtype = DType::int64);
Tensor arange(std::int64_t end, Device device = Device::cpu(), DType dtype = DType::int64);
/// Uniform in [0, 1). Philox: the same numbers on the CPU and CUDA for one seed.
Tensor rand(const Shape& shape, Device device = Device::cpu(), DType dtype = DType::float32);
/// Standard normal (Box-Muller over Philox).
Tensor randn(const Shape& shape, Device device = Device::cpu(), DType dtype = DType::float32);
/// Integers uniform in [low, high); int64 unless a dtype is given.
Tensor randint(std::int64_t low, std::int64_t high, const Shape& shape,
               Device device = Device::cpu(), DType dtype = DType::int64);
/// Copies `values` into a new tensor of `shape` (numel must match).
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = Device::cpu());
/// Copies numel(shape) elements of `dtype` from host memory at `data`.
Tensor from_blob(const void* data, const Shape& shape, DType dtype, Device device = Device::cpu());

Tensor empty_like(const Tensor& t);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor full_like(const Tensor& t, double value);
Tensor rand_like(const Tensor& t);
Tensor randn_like(const Tensor& t);

// ---- elementwise, NumPy broadcasting; operands must share dtype and device ----
Tensor add(const Tensor& a, const Tensor& b, double alpha = 1.0);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
/// Floating dtypes only (true division).
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
/// Comparisons give uint8 tensors of 0/1.
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, double b);
Tensor ne(const Tensor& a, double b);
Tensor lt(const Tensor& a, double b);
Tensor le(const Tensor& a, double b);
Tensor gt(const Tensor& a, double b);
Tensor ge(const Tensor& a, double b);
/// cond ? a : b elementwise; cond is uint8 (nonzero = true); all three broadcast.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);

Tensor add(const Tensor& a, double b);
Tensor sub(const Tensor& a, double b);
Tensor rsub(const Tensor& a, double b);  // b - a
Tensor mul(const Tensor& a, double b);
Tensor div(const Tensor& a, double b);
Tensor rdiv(const Tensor& a, double b);  // b / a

Tensor neg(const Tensor& a);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor rsqrt(const Tensor& a);
Tensor abs(const Tensor& a);
Tensor sign(const Tensor& a);
Tensor relu(const Tensor& a);
/// 1 / (1 + exp(-x)), computed without overflow for large |x|; floating dtypes.
Tensor sigmoid(const Tensor& a);
Tensor tanh(const Tensor& a);
/// x > 0 ? x : negative_slope * x; floating dtypes. Gradient: 1 where x > 0, else the slope.
Tensor leaky_relu(const Tensor& a, double negative_slope = 0.01);
Tensor pow(const Tensor& a, double exponent);
Tensor clamp(const Tensor& a, std::optional<double> min, std::optional<double> max);

// ---- reductions ----
Tensor sum(const Tensor& a);
Tensor sum(const Tensor& a, std::int64_t dim, bool keepdim = false);
Tensor mean(const Tensor& a);
Tensor mean(const Tensor& a, std::int64_t dim, bool keepdim = false);
Tensor amax(const Tensor& a);
Tensor amax(const Tensor& a, std::int64_t dim, bool keepdim = false);
Tensor amin(const Tensor& a);
Tensor amin(const Tensor& a, std::int64_t dim, bool keepdim = false);
Tensor argmax(const Tensor& a);
Tensor argmax(const Tensor& a, std::int64_t dim, bool keepdim = false);
Tensor var(const Tensor& a, bool unbiased = true);
Tensor var(const Tensor& a, std::int64_t dim, bool unbiased = true, bool keepdim = false);
/// var(a, 0) means dimension 0 (see Tensor::var(int)).
inline Tensor var(const Tensor& a, int dim, bool unbiased = true, bool keepdim = false) {
  return var(a, static_cast<std::int64_t>(dim), unbiased, keepdim);
}
Tensor std(const Tensor& a, bool unbiased = true);
Tensor std(const Tensor& a, std::int64_t dim, bool unbiased = true, bool keepdim = false);
inline Tensor std(const Tensor& a, int dim, bool unbiased = true, bool keepdim = false) {
  return std(a, static_cast<std::int64_t>(dim), unbiased, keepdim);
}
Tensor norm(const Tensor& a, double p = 2.0);
Tensor norm(const Tensor& a, double p, std::int64_t dim, bool keepdim = false);

/// (M,K)@(K,N), (B,M,K)@(B,K,N) and (B,M,K)@(K,N). Float dtypes; strict float32 on CUDA
/// unless set_allow_tf32(true).
Tensor matmul(const Tensor& a, const Tensor& b);
/// Swaps two dimensions (a contiguous copy).
Tensor transpose(const Tensor& a, std::int64_t d0, std::int64_t d1);

// ---- operators ----
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
inline Tensor operator+(const Tensor& a, double b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, double b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, double b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, double b) { return div(a, b); }
inline Tensor operator+(double a, const Tensor& b) { return add(b, a); }
inline Tensor operator-(double a, const Tensor& b) { return rsub(b, a); }
inline Tensor operator*(double a, const Tensor& b) { return mul(b, a); }
inline Tensor operator/(double a, const Tensor& b) { return rdiv(b, a); }
inline Tensor& operator+=(Tensor& a, const Tensor& b) { return a.add_(b); }
inline Tensor& operator-=(Tensor& a, const Tensor& b) { return a.sub_(b); }
inline Tensor& operator*=(Tensor& a, const Tensor& b) { return a.mul_(b); }
inline Tensor& operator/=(Tensor& a, const Tensor& b) { return a.div_(b); }
inline Tensor& operator+=(Tensor& a, double b) { return a.add_(b); }
inline Tensor& operator*=(Tensor& a, double b) { return a.mul_(b); }

/// Prints shape, dtype, device and (abbreviated) values.
std::ostream& operator<<(std::ostream& os, const Tensor& t);

}  // namespace cugrad
