// The global random generator: a seed and a counter offset, advanced by every draw.
#pragma once

#include <cstdint>

#include "cugrad/random.h"

namespace cugrad::runtime {

/// Reserves `blocks` Philox counters and returns (seed, first counter) for the draw.
GeneratorState reserve_random(std::uint64_t blocks);

}  // namespace cugrad::runtime
