// Launchers of inspect::summary's CUDA kernels.
#pragma once

#include <cstdint>

#include "host/inspect/summary_math.h"

namespace cugrad::cuda {

/// Device workspace layout the launcher needs: see summary_workspace_bytes.
std::size_t summary_workspace_bytes(std::int64_t n, int bins);
/// Computes the state of x[0..n) and a `bins`-bin histogram over [lo, hi] (or, when
/// use_range is false, over [min, max] of the finite values read on the device) into
/// `workspace`; copies the state and histogram (bins uint64 counts) back into `host_state`
/// and `host_hist` on `stream` and waits for that stream.
void summary_f32(const float* x, std::int64_t n, int bins, bool use_range, double lo, double hi, void* workspace,
                 inspect::SummaryState* host_state, unsigned long long* host_hist, double* host_range, void* stream);

}  // namespace cugrad::cuda
