// Launchers of the CUDA reduction kernels (cuda/reduce.cu) over the [outer, reduce, inner]
// layout of host/cpu/reduce.h. `stream` is a cudaStream_t passed opaquely; every launch is
// checked. Dtypes: float32, int64, int32, uint8 (mean/var/std/norm: float32 only).
#pragma once

#include <cstddef>

#include "host/cpu/reduce.h"

namespace cugrad::cuda {

/// Bytes of device scratch that reduce() needs for this problem on the current device: the
/// per-block partial results when the reduced dimension is split over many blocks, 0 when
/// one pass suffices. Call with the target device current (inside an OpScope).
std::size_t reduce_workspace_bytes(ReduceOp op, DType dtype, const ReduceLayout& layout,
                                   const ReduceArgs& args);

/// out[o, i] = op over r of x[(o*reduce + r)*inner + i]. Requires: the preconditions of
/// cpu::reduce; `workspace` points to at least reduce_workspace_bytes(...) bytes of device
/// memory on the current device (may be null when that is 0), used only by work queued on
/// `stream`.
void reduce(ReduceOp op, DType dtype, const void* x, void* out, const ReduceLayout& layout,
            const ReduceArgs& args, void* workspace, std::size_t workspace_bytes, void* stream);

}  // namespace cugrad::cuda
