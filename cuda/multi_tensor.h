// Host side of the multi-tensor kernels (sgd.cu, clip_grad.cu): one launch covers many tensors,
// each block of the grid taking one chunk of `chunk_elements` elements of one tensor. A launch's
// tensors travel in a table passed by value as the kernel parameter; this packs them.
#pragma once

#include <climits>
#include <cstddef>
#include <cstdint>

namespace cugrad::cuda {

/// Packs the non-empty tensors 0..count-1 into `table` (capacity kCapacity; members count,
/// chunk_elements and chunk_begin[kCapacity + 1]) in order: fill(table, k, i) writes entry k
/// from tensor i, and launch(table, grid, first_chunk) runs each full table and the last, with
/// chunk_begin[count] = grid (blocks of that launch) and first_chunk the number of chunks of
/// the tables launched before it (launch may also set members of its own). A table also closes
/// before its grid would exceed INT_MAX.
template <int kCapacity, class Table, class NumelOf, class Fill, class Launch>
void for_each_launch_table(Table& table, std::size_t count, int chunk_elements, NumelOf numel_of, Fill fill,
                           Launch launch) {
  table.count = 0;
  table.chunk_elements = chunk_elements;
  std::int64_t chunks = 0;  // blocks of the table being filled
  std::int64_t done = 0;    // chunks of the tables already launched
  const auto flush = [&] {
    if (table.count == 0) return;
    table.chunk_begin[table.count] = static_cast<int>(chunks);
    launch(table, static_cast<unsigned>(chunks), done);
    done += chunks;
    table.count = 0;
    chunks = 0;
  };
  for (std::size_t i = 0; i < count; ++i) {
    const std::int64_t numel = numel_of(i);
    if (numel == 0) continue;
    const std::int64_t c = (numel - 1) / chunk_elements + 1;
    if (table.count == kCapacity || chunks + c > INT_MAX) flush();
    const int k = table.count++;
    table.chunk_begin[k] = static_cast<int>(chunks);
    fill(table, k, i);
    chunks += c;
  }
  flush();
}

}  // namespace cugrad::cuda
