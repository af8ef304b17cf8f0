// GPU-only test helpers.
#pragma once

#include "cugrad/stream.h"

namespace cugrad::testing {

/// Queues a single-thread kernel that spins for about `milliseconds` on `stream`.
void spin_on(const Stream& stream, double milliseconds);

}  // namespace cugrad::testing
