// Device side of the multi-tensor kernels (sgd.cu, adam.cu, clip_grad.cu): the tables that
// cuda/multi_tensor.h packs are read here.
#pragma once

namespace cugrad::cuda {

/// The tensor owning block `chunk` of a launch table (members count and chunk_begin, as
/// for_each_launch_table fills them): the last t with chunk_begin[t] <= chunk, by binary search.
/// Every thread of a block reads the same entries (constant-bank broadcasts).
template <class Table>
__device__ __forceinline__ int tensor_of_block(const Table& table, int chunk) {
  int lo = 0, hi = table.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (table.chunk_begin[mid] <= chunk)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

}  // namespace cugrad::cuda
