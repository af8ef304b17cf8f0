// Multi-tensor SGD (torch.optim.SGD's update) on CUDA: one launch updates every parameter
// of a step.
//
// Launch shape: a 1-D grid of 256-thread blocks, one block per chunk of `chunk_elements`
// (kSgdChunkElements = 4K) elements of one tensor; a tensor of n elements owns
// ceil(n / chunk) consecutive blocks. The table of tensors (pointers, sizes, first block of
// each, first-update flags) travels in the kernel's parameters as a __grid_constant__ struct
// (up to 64 tensors in 2.4 KB, or 256 in 9.3 KB), so a step needs no upload, no pinned
// staging and no host synchronization; only a longer list is split over several launches
// (of 256 tensors). Each block finds its tensor by a binary search of the first-block table;
// every thread of the block reads the same entries (constant-bank broadcasts).
//
// Passes over memory: read p, g, buf and write p, buf (5) in steady state; on a buffer's
// first update (buf = g, a per-tensor flag) the buffer is written without being read (4);
// without momentum, read p, g and write p (3). Accesses are float4 when the chunk's p, g (and
// buf) are 16-byte aligned, with 4 float4 loads of each array in flight per thread; otherwise
// (views at odd offsets) scalar, still coalesced. Scalars are float; the math uses fmaf.
#include <atomic>
#include <climits>
#include <cstdint>

#include "cuda/launch.cuh"
#include "cuda/multi_tensor.cuh"
#include "cuda/multi_tensor.h"
#include "cuda/sgd.h"

namespace cugrad::cuda {

namespace {

constexpr int kSgdBlock = 256;
constexpr int kSgdIlp = 4;  // float4 loads of each array in flight per thread

struct SgdScalars {
  float lr;
  float momentum;
  float one_minus_dampening;
  float weight_decay;
  bool nesterov;
  bool maximize;
};

// The tensors of one launch. kCapacity 64 (2.4 KB; ResNet-18 has 62 tensors) when a step has
// few tensors, so that the launch copies fewer parameter bytes; 256 (9.3 KB) otherwise.
template <int kCapacity>
struct SgdLaunchTable {
  int count;  // tensors in this launch (>= 1, each with numel > 0)
  int chunk_elements;
  int chunk_begin[kCapacity + 1];  // first block of each tensor; [count] = grid size
  float* param[kCapacity];
  const float* grad[kCapacity];
  float* buf[kCapacity];
  std::int64_t numel[kCapacity];
  std::uint8_t init_buffer[kCapacity];
};
constexpr int kSgdSmallTable = 64;
// Kernel parameters may take up to 32764 bytes on Volta and later since CUDA 12.1 (CUDA 13
// supports nothing older).
static_assert(sizeof(SgdLaunchTable<kSgdMaxTensorsPerLaunch>) + sizeof(SgdScalars) + 16 <= 32764,
              "the SGD launch table must fit in the kernel parameters");

template <bool kMomentum>
__device__ __forceinline__ void sgd_element(float& p, float g, float& buf, bool init, const SgdScalars& s) {
  if (s.maximize) g = -g;
  if (s.weight_decay != 0.f) g = fmaf(s.weight_decay, p, g);
  float d = g;
  if constexpr (kMomentum) {
    buf = init ? g : fmaf(s.momentum, buf, s.one_minus_dampening * g);
    d = s.nesterov ? fmaf(s.momentum, buf, g) : buf;
  }
  p = fmaf(-s.lr, d, p);
}

template <bool kMomentum>
__device__ __forceinline__ void sgd_vector(float4& p, const float4& g, float4& buf, bool init,
                                           const SgdScalars& s) {
  sgd_element<kMomentum>(p.x, g.x, buf.x, init, s);
  sgd_element<kMomentum>(p.y, g.y, buf.y, init, s);
  sgd_element<kMomentum>(p.z, g.z, buf.z, init, s);
  sgd_element<kMomentum>(p.w, g.w, buf.w, init, s);
}

template <int kCapacity, bool kMomentum>
__global__ void __launch_bounds__(kSgdBlock)
    sgd_multi_tensor_kernel(const __grid_constant__ SgdLaunchTable<kCapacity> table, SgdScalars s,
                            const float* __restrict__ device_scalars) {
  // Capturable steps read lr, momentum, 1 - dampening and weight_decay from device memory, so
  // that a CUDA graph's replay uses the values set since the capture.
  if (device_scalars != nullptr) {
    s.lr = device_scalars[0];
    s.momentum = device_scalars[1];
    s.one_minus_dampening = device_scalars[2];
    s.weight_decay = device_scalars[3];
  }
  const int chunk = static_cast<int>(blockIdx.x);
  const int t = tensor_of_block(table, chunk);
  const std::int64_t start = static_cast<std::int64_t>(chunk - table.chunk_begin[t]) * table.chunk_elements;
  const std::int64_t left = table.numel[t] - start;
  const int len = left < table.chunk_elements ? static_cast<int>(left) : table.chunk_elements;
  float* p = table.param[t] + start;
  const float* g = table.grad[t] + start;
  float* b = kMomentum ? table.buf[t] + start : nullptr;
  const bool init = table.init_buffer[t] != 0;

  // chunk_elements is a multiple of 4, so every chunk of a tensor has its base's alignment.
  std::uintptr_t bits = reinterpret_cast<std::uintptr_t>(p) | reinterpret_cast<std::uintptr_t>(g);
  if constexpr (kMomentum) bits |= reinterpret_cast<std::uintptr_t>(b);
  const int vector_elements = (bits & 15u) == 0 ? (len & ~3) : 0;
  const int n4 = vector_elements / 4;
  if (n4 > 0) {
    float4* p4 = reinterpret_cast<float4*>(p);
    const float4* g4 = reinterpret_cast<const float4*>(g);
    float4* b4 = reinterpret_cast<float4*>(b);
    for (int base = static_cast<int>(threadIdx.x); base < n4; base += kSgdBlock * kSgdIlp) {
      float4 pv[kSgdIlp], gv[kSgdIlp], bv[kSgdIlp];
      // All loads of the batch first, so that 4 x (2 or 3) float4 loads are in flight.
#pragma unroll
      for (int k = 0; k < kSgdIlp; ++k) {
        const int i = base + k * kSgdBlock;
        pv[k] = gv[k] = bv[k] = make_float4(0.f, 0.f, 0.f, 0.f);
        if (i < n4) {
          pv[k] = p4[i];
          gv[k] = g4[i];
          if (kMomentum && !init) bv[k] = b4[i];
        }
      }
#pragma unroll
      for (int k = 0; k < kSgdIlp; ++k) {
        const int i = base + k * kSgdBlock;
        if (i < n4) {
          sgd_vector<kMomentum>(pv[k], gv[k], bv[k], init, s);
          p4[i] = pv[k];
          if constexpr (kMomentum) b4[i] = bv[k];
        }
      }
    }
  }
  // The tail of a vectorized chunk (len % 4 elements), or a whole misaligned chunk.
  for (int i = vector_elements + static_cast<int>(threadIdx.x); i < len; i += kSgdBlock) {
    float pi = p[i];
    float bi = 0.f;
    if (kMomentum && !init) bi = b[i];
    sgd_element<kMomentum>(pi, g[i], bi, init, s);
    p[i] = pi;
    if constexpr (kMomentum) b[i] = bi;
  }
}

std::atomic<std::uint64_t> g_sgd_launches{0};

template <int kCapacity>
void launch_table(const SgdLaunchTable<kCapacity>& table, const SgdScalars& s, const float* device_scalars,
                  bool momentum, cudaStream_t stream) {
  const auto grid = static_cast<unsigned>(table.chunk_begin[table.count]);
  if (momentum)
    sgd_multi_tensor_kernel<kCapacity, true><<<grid, kSgdBlock, 0, stream>>>(table, s, device_scalars);
  else
    sgd_multi_tensor_kernel<kCapacity, false><<<grid, kSgdBlock, 0, stream>>>(table, s, device_scalars);
  CUGRAD_CUDA_CHECK_LAUNCH();
  g_sgd_launches.fetch_add(1, std::memory_order_relaxed);
}

// Packs the tensors into tables of kCapacity (cuda/multi_tensor.h) and launches each.
template <int kCapacity>
void launch_tables(const SgdTensorArgs* tensors, std::size_t count, const SgdScalars& s,
                   const float* device_scalars, bool momentum, int chunk_elements, cudaStream_t stream) {
  SgdLaunchTable<kCapacity> table{};
  for_each_launch_table<kCapacity>(
      table, count, chunk_elements, [&](std::size_t i) { return tensors[i].numel; },
      [&](SgdLaunchTable<kCapacity>& t, int k, std::size_t i) {
        const SgdTensorArgs& a = tensors[i];
        t.param[k] = a.param;
        t.grad[k] = a.grad;
        t.buf[k] = momentum ? a.momentum_buffer : nullptr;
        t.numel[k] = a.numel;
        t.init_buffer[k] = a.init_buffer ? 1 : 0;
      },
      [&](const SgdLaunchTable<kCapacity>& t, unsigned, std::int64_t) {
        launch_table(t, s, device_scalars, momentum, stream);
      });
}

}  // namespace

void sgd_step(const SgdTensorArgs* tensors, std::size_t count, const cpu::SgdHyper& h, void* stream,
              int chunk_elements, const float* device_scalars) {
  CUGRAD_CHECK(chunk_elements > 0 && chunk_elements % 4 == 0,
               "sgd_step: chunk_elements must be a positive multiple of 4, got ", chunk_elements);
  const bool momentum = h.momentum != 0;
  std::size_t nonempty = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const SgdTensorArgs& a = tensors[i];
    CUGRAD_CHECK(a.numel >= 0, "sgd_step: tensor ", i, " has a negative size ", a.numel);
    if (a.numel == 0) continue;
    CUGRAD_CHECK(a.param != nullptr && a.grad != nullptr && (!momentum || a.momentum_buffer != nullptr),
                 "sgd_step: tensor ", i, " lacks a parameter, gradient or momentum buffer pointer");
    CUGRAD_CHECK((a.numel - 1) / chunk_elements + 1 <= INT_MAX, "sgd_step: tensor ", i, " of ", a.numel,
                 " elements needs more than ", INT_MAX, " blocks of ", chunk_elements);
    ++nonempty;
  }
  if (nonempty == 0) return;
  const SgdScalars s{static_cast<float>(h.lr),
                     static_cast<float>(h.momentum),
                     static_cast<float>(1.0 - h.dampening),
                     static_cast<float>(h.weight_decay),
                     h.nesterov,
                     h.maximize};
  if (nonempty <= kSgdSmallTable)
    launch_tables<kSgdSmallTable>(tensors, count, s, device_scalars, momentum, chunk_elements,
                                  as_stream(stream));
  else
    launch_tables<kSgdMaxTensorsPerLaunch>(tensors, count, s, device_scalars, momentum, chunk_elements,
                                           as_stream(stream));
}

std::uint64_t sgd_launch_count() { return g_sgd_launches.load(std::memory_order_relaxed); }

}  // namespace cugrad::cuda
