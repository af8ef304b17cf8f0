// Numeric helpers shared by the cuBLAS and cuDNN emulations.
#pragma once

#include <cstdint>
#include <cstring>

namespace cugrad_emu {

// v rounded to TF32 (8 exponent bits, 10 mantissa bits; round to nearest even), as tensor cores
// read their inputs; NaN and infinity unchanged, overflow rounds to infinity.
inline float to_tf32(float v) {
  std::uint32_t u = 0;
  std::memcpy(&u, &v, sizeof u);
  if ((u & 0x7f800000u) == 0x7f800000u) return v;
  u += 0x0fffu + ((u >> 13) & 1u);
  u &= 0xffffe000u;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

}  // namespace cugrad_emu
