// Seeding of cugrad's counter-based (Philox-4x32-10) generator. Every random op draws its
// numbers from (seed, offset, element index), so a seed gives the same numbers on the CPU
// and on CUDA, whatever the device, and the sequence of draws is reproducible.
#pragma once

#include <cstdint>

namespace cugrad {

/// Sets the seed and restarts the sequence of draws.
void manual_seed(std::uint64_t seed);

/// The generator's state: seed, and how many Philox counters the draws so far used.
struct GeneratorState {
  std::uint64_t seed = 0;
  std::uint64_t offset = 0;
};
GeneratorState get_rng_state();
void set_rng_state(const GeneratorState& state);

}  // namespace cugrad
