// Multi-tensor Adam/AdamW (torch.optim.Adam's and AdamW's update) on CUDA: one launch updates
// every parameter of a step.
//
// Launch shape as sgd.cu's: a 1-D grid of 256-thread blocks, one block per chunk of
// `chunk_elements` (kAdamChunkElements = 4K) elements of one tensor, the tensors' table (pointers,
// sizes, first block of each, first-step flags and each tensor's step-dependent factors) passed
// by value as a __grid_constant__ kernel parameter (64 tensors in 4.3 KB, or 256 in 17.3 KB),
// so a step needs no upload and no host synchronization. Each block finds its tensor by a
// binary search of the first-block table.
//
// Passes over memory: read p, g, m, v and write p, m, v (7) in steady state, 9 with amsgrad
// (read and write max_exp_avg_sq); on a tensor's first step the state is zeros and is written
// without being read (5, or 6 with amsgrad). float4 accesses when every array of the chunk is
// 16-byte aligned, two float4 loads of each array in flight per thread; scalar otherwise.
// Float math; the bias corrections come from the host per tensor (in double, as PyTorch), or,
// for a capturable step, from device memory: the hyperparameters (double) and each tensor's step
// count, advanced by a one-block kernel launched first, so that a CUDA graph replays correctly.
#include <atomic>
#include <climits>
#include <cstdint>

#include "cuda/adam.h"
#include "cuda/launch.cuh"
#include "cuda/multi_tensor.cuh"
#include "cuda/multi_tensor.h"

namespace cugrad::cuda {

namespace {

constexpr int kAdamBlock = 256;
constexpr int kAdamIlp = 2;

struct AdamScalars {
  float beta1;
  float one_minus_beta1;
  float beta2;
  float one_minus_beta2;
  float eps;
  float weight_decay;  // L2 (Adam): g += weight_decay * p; 0 when decoupled
  float decay;         // AdamW: p *= decay (1 - lr * weight_decay); 1 otherwise
  bool maximize;
  bool decoupled;
};

template <int kCapacity>
struct AdamLaunchTable {
  int count;
  int chunk_elements;
  int chunk_begin[kCapacity + 1];
  float* param[kCapacity];
  const float* grad[kCapacity];
  float* exp_avg[kCapacity];
  float* exp_avg_sq[kCapacity];
  float* max_exp_avg_sq[kCapacity];
  std::int64_t numel[kCapacity];
  float step_size[kCapacity];
  float bias_correction2_sqrt[kCapacity];
  std::int64_t* step[kCapacity];  // capturable only
  std::uint8_t first_step[kCapacity];
};
constexpr int kAdamSmallTable = 64;
static_assert(sizeof(AdamLaunchTable<kAdamMaxTensorsPerLaunch>) + sizeof(AdamScalars) + 16 <= 32764,
              "the Adam launch table must fit in the kernel parameters");

// torch.maximum's NaN rule: NaN when either side is NaN.
__device__ __forceinline__ float nan_max(float a, float b) {
  return (a != a || b != b) ? a + b : fmaxf(a, b);
}

template <bool kAmsgrad>
__device__ __forceinline__ void adam_element(float& p, float g, float& m, float& v, float& vmax, bool first,
                                             float step_size, float bc2_sqrt, const AdamScalars& s) {
  if (s.maximize) g = -g;
  if (s.weight_decay != 0.f) g = fmaf(s.weight_decay, p, g);
  p *= s.decay;
  // exp_avg.lerp_(g, 1 - beta1) and exp_avg_sq * beta2 + (1 - beta2) g^2; zeros on the first step.
  m = first ? s.one_minus_beta1 * g : fmaf(s.one_minus_beta1, g - m, m);
  const float g2 = s.one_minus_beta2 * g * g;
  v = first ? g2 : fmaf(s.beta2, v, g2);
  float second = v;
  if constexpr (kAmsgrad) {
    vmax = first ? v : nan_max(vmax, v);
    second = vmax;
  }
  const float denom = sqrtf(second) / bc2_sqrt + s.eps;
  p = fmaf(-step_size, m / denom, p);
}

__device__ __forceinline__ float& lane(float4& v, int k) { return (&v.x)[k]; }

template <int kCapacity, bool kAmsgrad>
__global__ void __launch_bounds__(kAdamBlock)
    adam_multi_tensor_kernel(const __grid_constant__ AdamLaunchTable<kCapacity> table, AdamScalars s,
                             const double* __restrict__ device_scalars) {
  const int chunk = static_cast<int>(blockIdx.x);
  const int t = tensor_of_block(table, chunk);
  const std::int64_t start = static_cast<std::int64_t>(chunk - table.chunk_begin[t]) * table.chunk_elements;
  const std::int64_t left = table.numel[t] - start;
  const int len = left < table.chunk_elements ? static_cast<int>(left) : table.chunk_elements;
  float* p = table.param[t] + start;
  const float* g = table.grad[t] + start;
  float* m = table.exp_avg[t] + start;
  float* v = table.exp_avg_sq[t] + start;
  float* vm = kAmsgrad ? table.max_exp_avg_sq[t] + start : nullptr;
  const bool first = table.first_step[t] != 0;
  float step_size = table.step_size[t];
  float bc2 = table.bias_correction2_sqrt[t];
  if (device_scalars != nullptr) {
    // Capturable: the hyperparameters and this tensor's step count (already advanced by
    // adam_advance_steps) from device memory, with the host's formulas in double (the same bits).
    const double lr = device_scalars[0], beta1 = device_scalars[1], beta2 = device_scalars[2];
    const double weight_decay = device_scalars[4];
    s.beta1 = static_cast<float>(beta1);
    s.one_minus_beta1 = static_cast<float>(1.0 - beta1);
    s.beta2 = static_cast<float>(beta2);
    s.one_minus_beta2 = static_cast<float>(1.0 - beta2);
    s.eps = static_cast<float>(device_scalars[3]);
    s.weight_decay = s.decoupled ? 0.f : static_cast<float>(weight_decay);
    s.decay = s.decoupled ? static_cast<float>(1.0 - lr * weight_decay) : 1.f;
    // The factors adam_advance_steps computed (no double division or sqrt here: their
    // slow-path calls made this kernel keep a stack frame).
    const float2 factors = *reinterpret_cast<const float2*>(table.step[t] + 1);
    step_size = factors.x;
    bc2 = factors.y;
  }

  std::uintptr_t bits = reinterpret_cast<std::uintptr_t>(p) | reinterpret_cast<std::uintptr_t>(g) |
                        reinterpret_cast<std::uintptr_t>(m) | reinterpret_cast<std::uintptr_t>(v);
  if constexpr (kAmsgrad) bits |= reinterpret_cast<std::uintptr_t>(vm);
  const int vector_elements = (bits & 15u) == 0 ? (len & ~3) : 0;
  const int n4 = vector_elements / 4;
  if (n4 > 0) {
    float4* p4 = reinterpret_cast<float4*>(p);
    const float4* g4 = reinterpret_cast<const float4*>(g);
    float4* m4 = reinterpret_cast<float4*>(m);
    float4* v4 = reinterpret_cast<float4*>(v);
    float4* vm4 = reinterpret_cast<float4*>(vm);
    for (int base = static_cast<int>(threadIdx.x); base < n4; base += kAdamBlock * kAdamIlp) {
      float4 pv[kAdamIlp], gv[kAdamIlp], mv[kAdamIlp], vv[kAdamIlp], xv[kAdamIlp];
#pragma unroll
      for (int k = 0; k < kAdamIlp; ++k) {
        const int i = base + k * kAdamBlock;
        pv[k] = gv[k] = mv[k] = vv[k] = xv[k] = make_float4(0.f, 0.f, 0.f, 0.f);
        if (i < n4) {
          pv[k] = p4[i];
          gv[k] = g4[i];
          if (!first) {
            mv[k] = m4[i];
            vv[k] = v4[i];
            if constexpr (kAmsgrad) xv[k] = vm4[i];
          }
        }
      }
#pragma unroll
      for (int k = 0; k < kAdamIlp; ++k) {
        const int i = base + k * kAdamBlock;
        if (i < n4) {
#pragma unroll
          for (int e = 0; e < 4; ++e)
            adam_element<kAmsgrad>(lane(pv[k], e), lane(gv[k], e), lane(mv[k], e), lane(vv[k], e),
                                   lane(xv[k], e), first, step_size, bc2, s);
          p4[i] = pv[k];
          m4[i] = mv[k];
          v4[i] = vv[k];
          if constexpr (kAmsgrad) vm4[i] = xv[k];
        }
      }
    }
  }
  for (int i = vector_elements + static_cast<int>(threadIdx.x); i < len; i += kAdamBlock) {
    float pi = p[i];
    float mi = 0.f, vi = 0.f, xi = 0.f;
    if (!first) {
      mi = m[i];
      vi = v[i];
      if constexpr (kAmsgrad) xi = vm[i];
    }
    adam_element<kAmsgrad>(pi, g[i], mi, vi, xi, first, step_size, bc2, s);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
    if constexpr (kAmsgrad) vm[i] = xi;
  }
}

// Capturable steps: each tensor's step count += 1 and the factors of that step (with the host's
// formulas in double: the same bits), before the update reads them. step[k] points at the
// tensor's record {int64 count; float step_size, bias_correction2_sqrt}.
template <int kCapacity>
__global__ void adam_advance_steps(const __grid_constant__ AdamLaunchTable<kCapacity> table,
                                   const double* __restrict__ device_scalars) {
  const int k = static_cast<int>(threadIdx.x);
  if (k >= table.count) return;
  std::int64_t* record = table.step[k];
  const std::int64_t step = *record + 1;
  *record = step;
  const cpu::AdamStepFactors f =
      cpu::adam_factors_of(device_scalars[0], device_scalars[1], device_scalars[2], step);
  *reinterpret_cast<float2*>(record + 1) =
      make_float2(static_cast<float>(f.step_size), static_cast<float>(f.bias_correction2_sqrt));
}

__global__ void adam_write_scalar_kernel(double* dst, double value) { *dst = value; }

std::atomic<std::uint64_t> g_adam_launches{0};

template <int kCapacity>
void launch_tables(const AdamTensorArgs* tensors, std::size_t count, const AdamScalars& s,
                   const double* device_scalars, bool amsgrad, int chunk_elements, cudaStream_t stream) {
  AdamLaunchTable<kCapacity> table{};
  for_each_launch_table<kCapacity>(
      table, count, chunk_elements, [&](std::size_t i) { return tensors[i].numel; },
      [&](AdamLaunchTable<kCapacity>& t, int k, std::size_t i) {
        const AdamTensorArgs& a = tensors[i];
        t.param[k] = a.param;
        t.grad[k] = a.grad;
        t.exp_avg[k] = a.exp_avg;
        t.exp_avg_sq[k] = a.exp_avg_sq;
        t.max_exp_avg_sq[k] = amsgrad ? a.max_exp_avg_sq : nullptr;
        t.numel[k] = a.numel;
        t.step_size[k] = static_cast<float>(a.factors.step_size);
        t.bias_correction2_sqrt[k] = static_cast<float>(a.factors.bias_correction2_sqrt);
        t.step[k] = a.step;
        t.first_step[k] = a.first_step ? 1 : 0;
      },
      [&](const AdamLaunchTable<kCapacity>& t, unsigned grid, std::int64_t) {
        if (device_scalars != nullptr) {
          adam_advance_steps<kCapacity><<<1, kCapacity, 0, stream>>>(t, device_scalars);
          CUGRAD_CUDA_CHECK_LAUNCH();
        }
        if (amsgrad)
          adam_multi_tensor_kernel<kCapacity, true><<<grid, kAdamBlock, 0, stream>>>(t, s, device_scalars);
        else
          adam_multi_tensor_kernel<kCapacity, false><<<grid, kAdamBlock, 0, stream>>>(t, s, device_scalars);
        CUGRAD_CUDA_CHECK_LAUNCH();
        g_adam_launches.fetch_add(1, std::memory_order_relaxed);
      });
}

}  // namespace

void adam_step(const AdamTensorArgs* tensors, std::size_t count, const cpu::AdamHyper& h, void* stream,
               int chunk_elements, const double* device_scalars) {
  CUGRAD_CHECK(chunk_elements > 0 && chunk_elements % 4 == 0,
               "adam_step: chunk_elements must be a positive multiple of 4, got ", chunk_elements);
  std::size_t nonempty = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const AdamTensorArgs& a = tensors[i];
    CUGRAD_CHECK(a.numel >= 0, "adam_step: tensor ", i, " has a negative size ", a.numel);
    if (a.numel == 0) continue;
    CUGRAD_CHECK(a.param != nullptr && a.grad != nullptr && a.exp_avg != nullptr && a.exp_avg_sq != nullptr &&
                     (!h.amsgrad || a.max_exp_avg_sq != nullptr) &&
                     (device_scalars == nullptr || a.step != nullptr),
                 "adam_step: tensor ", i, " lacks a parameter, gradient or state pointer");
    CUGRAD_CHECK((a.numel - 1) / chunk_elements + 1 <= INT_MAX, "adam_step: tensor ", i, " of ", a.numel,
                 " elements needs more than ", INT_MAX, " blocks of ", chunk_elements);
    ++nonempty;
  }
  if (nonempty == 0) return;
  const bool decoupled = h.decoupled_weight_decay;
  const AdamScalars s{static_cast<float>(h.beta1),
                      static_cast<float>(1.0 - h.beta1),
                      static_cast<float>(h.beta2),
                      static_cast<float>(1.0 - h.beta2),
                      static_cast<float>(h.eps),
                      decoupled ? 0.f : static_cast<float>(h.weight_decay),
                      decoupled ? static_cast<float>(1.0 - h.lr * h.weight_decay) : 1.f,
                      h.maximize,
                      decoupled};
  if (nonempty <= kAdamSmallTable)
    launch_tables<kAdamSmallTable>(tensors, count, s, device_scalars, h.amsgrad, chunk_elements,
                                   as_stream(stream));
  else
    launch_tables<kAdamMaxTensorsPerLaunch>(tensors, count, s, device_scalars, h.amsgrad, chunk_elements,
                                            as_stream(stream));
}

void adam_write_device_scalar(double* dst, double value, void* stream) {
  CUGRAD_CHECK(dst != nullptr, "adam_write_device_scalar: no destination");
  adam_write_scalar_kernel<<<1, 1, 0, as_stream(stream)>>>(dst, value);
  CUGRAD_CUDA_CHECK_LAUNCH();
}

std::uint64_t adam_launch_count() { return g_adam_launches.load(std::memory_order_relaxed); }

}  // namespace cugrad::cuda
