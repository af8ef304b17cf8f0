// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3") and the
// mapping from (seed, counter) to uniform, normal and integer values. Shared by the CPU and
// CUDA random kernels, so a seed gives the same numbers on both.
//
// Layout: a draw of n values at generator offset `off` gives element i the Philox block
// (off + i / per_block) and lane i % per_block; per_block is 4 for uniform and normal
// (Box-Muller on lanes 0,1 and 2,3) and 2 for integers (64 bits per value).
#pragma once

#include <cmath>
#include <cstdint>

#include "cugrad/macros.h"

namespace cugrad::philox {

struct U32x4 {
  std::uint32_t v[4];
};

CUGRAD_HOST_DEVICE CUGRAD_INLINE std::uint32_t mulhilo(std::uint32_t a, std::uint32_t b, std::uint32_t* hi) {
  const std::uint64_t p = static_cast<std::uint64_t>(a) * b;
  *hi = static_cast<std::uint32_t>(p >> 32);
  return static_cast<std::uint32_t>(p);
}

/// A CUDA kernel's draw parameters when they may live in device memory: inside a CUDA graph
/// `state` holds {seed, counter base}, set by each replay, and `offset` is relative to the base
/// (host/runtime/capture.h); outside one `state` is null and (seed, offset) are the draw's own.
CUGRAD_HOST_DEVICE CUGRAD_INLINE void resolve_draw(const std::uint64_t* state, std::uint64_t& seed,
                                                   std::uint64_t& offset) {
  if (state != nullptr) {
    seed = state[0];
    offset += state[1];
  }
}

CUGRAD_HOST_DEVICE CUGRAD_INLINE U32x4 philox4x32_10(std::uint64_t seed, std::uint64_t counter) {
  std::uint32_t c0 = static_cast<std::uint32_t>(counter), c1 = static_cast<std::uint32_t>(counter >> 32);
  std::uint32_t c2 = 0, c3 = 0;
  std::uint32_t k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    std::uint32_t hi0, hi1;
    const std::uint32_t lo0 = mulhilo(0xD2511F53u, c0, &hi0);
    const std::uint32_t lo1 = mulhilo(0xCD9E8D57u, c2, &hi1);
    const std::uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return U32x4{{c0, c1, c2, c3}};
}

/// Uniform in [0, 1) from one 32-bit Philox output: 24 bits (float) or 32 bits (double).
template <typename T>
CUGRAD_HOST_DEVICE CUGRAD_INLINE T uniform_of(std::uint32_t x) {
  if constexpr (sizeof(T) == 4) return static_cast<T>(x >> 8) * static_cast<T>(1.0 / 16777216.0);
  return static_cast<T>(static_cast<double>(x) * (1.0 / 4294967296.0));
}

/// Element i of a uniform draw at `offset` (a fused kernel that handles the four elements of
/// one block computes philox4x32_10 once and takes uniform_of of each lane: the same numbers).
template <typename T>
CUGRAD_HOST_DEVICE CUGRAD_INLINE T uniform_at(std::uint64_t seed, std::uint64_t offset, std::int64_t i) {
  const U32x4 r = philox4x32_10(seed, offset + static_cast<std::uint64_t>(i) / 4);
  return uniform_of<T>(r.v[i % 4]);
}

/// Standard normal by Box-Muller, computed in double on both devices.
template <typename T>
CUGRAD_HOST_DEVICE CUGRAD_INLINE T normal_at(std::uint64_t seed, std::uint64_t offset, std::int64_t i) {
  const U32x4 r = philox4x32_10(seed, offset + static_cast<std::uint64_t>(i) / 4);
  const int lane = static_cast<int>(i % 4);
  const int base = lane & 2;
  const double u1 = (static_cast<double>(r.v[base]) + 1.0) * (1.0 / 4294967296.0);  // (0, 1]
  const double u2 = static_cast<double>(r.v[base + 1]) * (1.0 / 4294967296.0);
  const double radius = ::sqrt(-2.0 * ::log(u1));
  const double theta = 6.283185307179586476925286766559 * u2;
  return static_cast<T>((lane & 1) ? radius * ::sin(theta) : radius * ::cos(theta));
}

/// Integer uniform in [low, low + range) from 64 random bits.
CUGRAD_HOST_DEVICE CUGRAD_INLINE std::int64_t randint_at(std::uint64_t seed, std::uint64_t offset, std::int64_t i,
                                                         std::int64_t low, std::uint64_t range) {
  const U32x4 r = philox4x32_10(seed, offset + static_cast<std::uint64_t>(i) / 2);
  const int half = static_cast<int>(i % 2) * 2;
  const std::uint64_t bits = (static_cast<std::uint64_t>(r.v[half]) << 32) | r.v[half + 1];
  return low + static_cast<std::int64_t>(bits % range);
}

/// Philox blocks a draw of n values uses, by kind.
CUGRAD_HOST_DEVICE CUGRAD_INLINE std::uint64_t blocks_for(std::int64_t n, int per_block) {
  return (static_cast<std::uint64_t>(n) + per_block - 1) / per_block;
}

}  // namespace cugrad::philox
