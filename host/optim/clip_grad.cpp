// optim::clip_grad_norm_ (torch.nn.utils.clip_grad_norm_): checks, the CPU reference path,
// and on CUDA the multi-tensor norm and scale launches (cuda/clip_grad.cu) with the clip
// coefficient kept on the device.
#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "cuda/clip_grad.h"
#include "cugrad/autograd.h"
#include "cugrad/optim.h"
#include "host/cpu/clip_grad.h"
#include "host/ops/op_util.h"
#include "host/tensor/tensor_impl.h"

namespace cugrad::optim {

namespace {

constexpr const char* kOp = "clip_grad_norm_";

// Byte range of a gradient inside its storage, with the index of its parameter.
struct GradRange {
  const Storage* storage;
  std::int64_t begin, end;
  std::size_t param;
};

// Two gradients sharing memory would be scaled twice (and race on CUDA): an error.
void check_no_overlap(const std::vector<Tensor>& grads, const std::vector<std::size_t>& param_index) {
  std::vector<GradRange> ranges;
  ranges.reserve(grads.size());
  for (std::size_t k = 0; k < grads.size(); ++k) {
    const Tensor& g = grads[k];
    if (g.numel() == 0) continue;
    const auto bytes = static_cast<std::int64_t>(element_size(g.dtype()));
    const std::int64_t begin = g.storage_offset() * bytes;
    ranges.push_back({g.impl()->storage.get(), begin, begin + g.numel() * bytes, param_index[k]});
  }
  std::sort(ranges.begin(), ranges.end(), [](const GradRange& a, const GradRange& b) {
    return a.storage != b.storage ? std::less<const Storage*>()(a.storage, b.storage) : a.begin < b.begin;
  });
  for (std::size_t k = 1; k < ranges.size(); ++k) {
    const GradRange& a = ranges[k - 1];
    const GradRange& b = ranges[k];
    if (a.storage != b.storage || b.begin >= a.end) continue;
    throw ValueError(detail::cat(kOp, ": the gradients of parameters ", std::min(a.param, b.param), " and ",
                                 std::max(a.param, b.param),
                                 " share memory (a parameter listed twice, or one gradient set on two "
                                 "parameters); each gradient would be scaled twice"));
  }
}

void check_total(double total, double norm_type) {
  CUGRAD_CHECK(
      std::isfinite(total), kOp, ": the total norm of order ", norm_type, " of the gradients is non-finite (",
      total,
      "), so it cannot be clipped; the gradients are left unchanged. To scale them by the non-finite "
      "norm anyway, pass error_if_nonfinite = false");
}

}  // namespace

Tensor clip_grad_norm_(const TensorList& params, double max_norm, double norm_type, bool error_if_nonfinite) {
  CUGRAD_CHECK(!std::isnan(max_norm) && max_norm >= 0, kOp, ": max_norm must be >= 0 (inf allowed), got ",
               max_norm);
  CUGRAD_CHECK(norm_type > 0, kOp, ": norm_type must be a finite p > 0 or inf, got ", norm_type);
  NoGradGuard no_grad;

  // The gradients to clip, all checked before anything is launched or written.
  std::vector<Tensor> grads;
  std::vector<std::size_t> param_index;
  for (std::size_t i = 0; i < params.size(); ++i) {
    CUGRAD_CHECK(params[i].defined(), kOp, ": parameter ", i, " is an undefined tensor");
    Tensor g = params[i].grad();
    if (!g.defined()) continue;
    CUGRAD_CHECK(is_floating(g.dtype()), kOp, ": the gradient of parameter ", i, " is ", describe(g),
                 "; only floating-point gradients can be clipped");
    if (!grads.empty())
      CUGRAD_CHECK(g.device() == grads[0].device(), kOp,
                   ": all gradients must be on one device, but the gradient of "
                   "parameter ",
                   param_index[0], " is ", describe(grads[0]), " and that of parameter ", i, " is ",
                   describe(g));
    grads.push_back(std::move(g));
    param_index.push_back(i);
  }
  if (grads.empty()) return zeros({}, params.empty() ? Device::cpu() : params[0].device(), DType::float32);
  check_no_overlap(grads, param_index);
  const Device device = grads[0].device();

  if (device.is_cuda()) {
    for (std::size_t k = 0; k < grads.size(); ++k)
      CUGRAD_CHECK(grads[k].dtype() == DType::float32, kOp, ": the gradient of parameter ", param_index[k],
                   " is ", describe(grads[k]), "; CUDA gradients must be float32");
    OpScope scope(kOp, device);
    std::vector<cuda::ClipGradTensor> table;
    table.reserve(grads.size());
    for (const Tensor& g : grads) {
      scope.writes(g);
      table.push_back({g.data_ptr<float>(), g.numel()});
    }
    const std::size_t bytes = cuda::clip_grad_workspace_bytes(table.data(), table.size());
    Tensor workspace = empty({static_cast<std::int64_t>(bytes)}, device, DType::uint8);
    scope.writes(workspace);
    Tensor total = empty({}, device, DType::float32);
    scope.writes(total);
    cuda::grad_norm(table.data(), table.size(), norm_type, max_norm, total.data_ptr<float>(),
                    workspace.raw_data(), bytes, scope.stream());
    if (error_if_nonfinite) check_total(total.item_double(), norm_type);  // the one host read
    cuda::scale_grads(table.data(), table.size(), workspace.raw_data(), bytes, scope.stream());
    for (const Tensor& g : grads) g.impl()->storage->bump_version();
    return total;
  }

  std::vector<double> norms;
  norms.reserve(grads.size());
  bool any_double = false;
  for (const Tensor& g : grads) {
    norms.push_back(cpu::vector_norm(g.dtype(), g.raw_data(), g.numel(), norm_type));
    any_double = any_double || g.dtype() == DType::float64;
  }
  const double total = cpu::norm_of_norms(norms, norm_type);
  if (error_if_nonfinite) check_total(total, norm_type);
  const double coef = cpu::clip_coefficient(max_norm, total);
  for (const Tensor& g : grads) {
    if (coef != 1.0) cpu::scale_in_place(g.dtype(), g.raw_data(), g.numel(), coef);  // x * 1 == x
    g.impl()->storage->bump_version();
  }
  return full({}, total, Device::cpu(), any_double ? DType::float64 : DType::float32);
}

}  // namespace cugrad::optim
