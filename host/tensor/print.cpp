// operator<< for tensors: a header line (shape, dtype, device) and the values, abbreviated
// with "..." beyond 6 entries per dimension.
#include <iomanip>

#include "host/ops/op_util.h"

namespace cugrad {

namespace {

constexpr std::int64_t kEdge = 3;  // entries shown at each end of a long dimension

void print_rec(std::ostream& os, const std::vector<double>& v, const Shape& shape, std::size_t d,
               std::int64_t offset, int indent, bool integral) {
  if (d == shape.size()) {
    if (integral) os << static_cast<long long>(v[static_cast<std::size_t>(offset)]);
    else os << v[static_cast<std::size_t>(offset)];
    return;
  }
  const std::int64_t n = shape[d];
  std::int64_t inner = 1;
  for (std::size_t k = d + 1; k < shape.size(); ++k) inner *= shape[k];
  os << "[";
  for (std::int64_t i = 0; i < n; ++i) {
    if (n > 2 * kEdge && i == kEdge) {
      os << (d + 1 == shape.size() ? "..., " : "...,\n" + std::string(static_cast<std::size_t>(indent + 1), ' '));
      i = n - kEdge;
    }
    print_rec(os, v, shape, d + 1, offset + i * inner, indent + 1, integral);
    if (i + 1 < n) os << (d + 1 == shape.size() ? ", " : ",\n" + std::string(static_cast<std::size_t>(indent + 1), ' '));
  }
  os << "]";
}

}  // namespace

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "Tensor(undefined)";
  os << "Tensor(shape=" << shape_str(t.shape()) << ", dtype=" << t.dtype() << ", device=" << t.device() << ")\n";
  const Tensor host = t.cpu().to(DType::float64);
  const std::vector<double> v = host.to_vector<double>();
  const auto flags = os.flags();
  const auto prec = os.precision();
  os << std::setprecision(6);
  if (t.dim() == 0) {
    if (is_floating(t.dtype())) os << v[0];
    else os << static_cast<long long>(v[0]);
  } else {
    print_rec(os, v, t.shape(), 0, 0, 0, !is_floating(t.dtype()));
  }
  os.flags(flags);
  os.precision(prec);
  return os;
}

}  // namespace cugrad
