// Consumer of the installed cugrad package: a few ops on CUDA when a device is visible (else
// the CPU), checked against values computed here. Exits 1 on a wrong result.
#include <cugrad/cugrad.h>

#include <cmath>
#include <cstdint>
#include <iostream>
#include <vector>

namespace cg = cugrad;

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::cerr << "consumer: FAILED: " << what << "\n";
    ++failures;
  }
}

template <typename T>
bool near(const std::vector<T>& got, const std::vector<T>& want, double tol = 1e-6) {
  if (got.size() != want.size()) return false;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::abs(static_cast<double>(got[i]) - static_cast<double>(want[i])) > tol) return false;
  }
  return true;
}

}  // namespace

int main() {
  const bool gpu = cg::cuda_is_available();
  const cg::Device dev = gpu ? cg::Device::cuda(0) : cg::Device::cpu();
  std::cout << "cugrad consumer on " << dev << "\n";

  try {
    // relu(2x + b) with b broadcast over the rows.
    const cg::Tensor x = cg::from_vector(std::vector<float>{-6, -2, 0, 1, 2, 3}, {2, 3}, dev);
    const cg::Tensor b = cg::from_vector(std::vector<float>{1, 2, 3}, {3}, dev);
    const cg::Tensor y = (x * 2.0 + b).relu();
    expect(y.shape() == cg::Shape{2, 3} && y.device() == dev, "shape and device of relu(2x + b)");
    expect(near(y.to_vector<float>(), {0, 0, 3, 3, 6, 9}), "values of relu(2x + b)");

    // Comparisons give uint8; where() picks elementwise.
    const cg::Tensor mask = cg::gt(y, 2.5);
    expect(mask.dtype() == cg::DType::uint8, "gt gives uint8");
    expect(mask.to_vector<std::uint8_t>() == std::vector<std::uint8_t>{0, 0, 1, 1, 1, 1}, "values of gt");
    const cg::Tensor picked = cg::where(mask, y, cg::full({1}, -1.0, dev));
    expect(near(picked.to_vector<float>(), {-1, -1, 3, 3, 6, 9}), "values of where");

    // Views share storage: an in-place op through a row of y shows in y.
    cg::Tensor row = y.select(0, 1);
    row.add_(10.0);
    expect(row.shares_storage(y), "select shares storage");
    expect(near(y.to_vector<float>(), {0, 0, 3, 13, 16, 19}), "in-place add through a view");
    expect(y.reshape({3, 2})[2].cpu().to_vector<float>() == std::vector<float>{16, 19}, "reshape and select");

    // GEMM (cuBLAS or OpenBLAS through the installed library) and reductions.
    const cg::Tensor a = cg::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3}, dev);
    const cg::Tensor m = cg::matmul(a, cg::ones({3, 2}, dev));
    expect(near(m.to_vector<float>(), {6, 6, 15, 15}), "matmul with ones");
    expect(std::abs(m.sum().item<double>() - 42.0) < 1e-5, "sum of all elements");
    expect(near(a.mean(1).to_vector<float>(), {2, 5}), "mean along dim 1");

    // Philox gives the same numbers on every device for one seed.
    cg::manual_seed(7);
    const std::vector<float> on_dev = cg::randn({1000}, dev).to_vector<float>();
    cg::manual_seed(7);
    const std::vector<float> on_cpu = cg::randn({1000}, cg::Device::cpu()).to_vector<float>();
    expect(near(on_dev, on_cpu, 1e-5), "randn equal on the device and the CPU for one seed");

    // Errors cross the library boundary as typed exceptions.
    bool threw = false;
    try {
      (void)cg::add(x, cg::ones({2, 3}, dev, cg::DType::int64));
    } catch (const cg::ValueError& e) {
      threw = true;
      std::cout << "expected error: " << e.what() << "\n";
    }
    expect(threw, "adding float32 to int64 throws cugrad::ValueError");
    cg::synchronize();
  } catch (const cg::Error& e) {
    std::cerr << "consumer: unexpected cugrad::Error: " << e.what() << "\n";
    return 1;
  }

  if (failures != 0) return 1;
  std::cout << "consumer: all checks passed\n";
  return 0;
}
