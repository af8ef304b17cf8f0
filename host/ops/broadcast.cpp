// Broadcast shapes and index maps (NumPy rules: align trailing dimensions; 1 stretches).
#include "host/ops/broadcast.h"

#include <algorithm>

namespace cugrad {

Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b) {
  const std::size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const std::int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    CUGRAD_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
                 " cannot be broadcast together (dimension ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor sum_to(const Tensor& grad, const Shape& shape) {
  if (grad.shape() == shape) return grad;
  Tensor g = grad;
  const std::size_t lead = g.shape().size() - shape.size();
  // Sum away the leading dimensions the operand did not have.
  for (std::size_t i = 0; i < lead; ++i) g = g.sum(0);
  // Sum (keeping the dimension) where the operand had size 1.
  for (std::size_t d = 0; d < shape.size(); ++d)
    if (shape[d] == 1 && g.shape()[d] != 1) g = g.sum(static_cast<std::int64_t>(d), true);
  return g.reshape(shape);
}

BroadcastIndex make_broadcast_index(const Shape& out, const Shape* const* inputs, int count) {
  BroadcastIndex idx;
  idx.ndim = static_cast<int>(out.size());
  for (int d = 0; d < idx.ndim; ++d) idx.shape[d] = out[static_cast<std::size_t>(d)];
  const std::int64_t n_out = shape_numel(out);
  for (int k = 0; k < count; ++k) {
    const Shape& in = *inputs[k];
    if (in == out) {
      idx.mode[k] = BroadcastIndex::same;
      continue;
    }
    if (shape_numel(in) == 1 || n_out <= 1) {
      idx.mode[k] = BroadcastIndex::scalar;
      continue;
    }
    idx.mode[k] = BroadcastIndex::general;
    const std::size_t lead = out.size() - in.size();
    std::int64_t stride = 1;
    for (int d = idx.ndim - 1; d >= 0; --d) {
      if (static_cast<std::size_t>(d) < lead) {
        idx.strides[k][d] = 0;
        continue;
      }
      const std::int64_t size = in[static_cast<std::size_t>(d) - lead];
      idx.strides[k][d] = size == 1 ? 0 : stride;
      stride *= size;
    }
  }
  return idx;
}

}  // namespace cugrad
