// Launchers of the CUDA elementwise kernels (cuda/elementwise.cu). `stream` is a
// cudaStream_t passed opaquely; every launch is checked.
#pragma once

#include <cstdint>

#include "cugrad/dtype.h"
#include "host/ops/broadcast.h"
#include "host/ops/elementwise_math.h"

namespace cugrad::cuda {

void unary(UnaryOp op, DType dtype, const void* x, void* y, std::int64_t n, double a, double b, void* stream);
void binary(BinaryOp op, DType dtype, const void* x, const void* y, void* out, std::int64_t n,
            const BroadcastIndex& index, double alpha, void* stream);
void where(DType dtype, const std::uint8_t* cond, const void* a, const void* b, void* out,
           std::int64_t n, const BroadcastIndex& index, void* stream);
void cast(DType from, DType to, const void* x, void* y, std::int64_t n, void* stream);
void fill(DType dtype, void* y, std::int64_t n, double value, void* stream);
void arange(DType dtype, void* y, std::int64_t n, double start, double step, void* stream);

}  // namespace cugrad::cuda
