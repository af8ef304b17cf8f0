// CPU reference kernels for elementwise ops, casts, fills and ranges (plain loops).
#pragma once

#include <cstdint>

#include "cugrad/dtype.h"
#include "host/ops/broadcast.h"
#include "host/ops/elementwise_math.h"

namespace cugrad::cpu {

void unary(UnaryOp op, DType dtype, const void* x, void* y, std::int64_t n, double a, double b);
void binary(BinaryOp op, DType dtype, const void* x, const void* y, void* out, std::int64_t n,
            const BroadcastIndex& index, double alpha);
void where(DType dtype, const std::uint8_t* cond, const void* a, const void* b, void* out,
           std::int64_t n, const BroadcastIndex& index);
void cast(DType from, DType to, const void* x, void* y, std::int64_t n);
void fill(DType dtype, void* y, std::int64_t n, double value);
void arange(DType dtype, void* y, std::int64_t n, double start, double step);

}  // namespace cugrad::cpu
