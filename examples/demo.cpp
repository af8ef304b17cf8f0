// The main demo (for now): exercises tensors on the GPU when there is one, else the CPU.
#include <cugrad/cugrad.h>

#include <iostream>

namespace cg = cugrad;

int main() {
  const bool gpu = cg::cuda_is_available();
  const cg::Device dev = gpu ? cg::Device::cuda(0) : cg::Device::cpu();
  std::cout << "cugrad demo on " << dev << (gpu ? "" : " (no CUDA device visible: using the CPU)") << "\n";
  cg::manual_seed(0);
  cg::Tensor x = cg::randn({4, 3}, dev);
  cg::Tensor w = cg::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {3, 2}, dev);
  cg::Tensor y = (x * 2.0 + 1.0).relu();
  std::cout << "x =\n" << x << "\ny = relu(2x + 1) =\n" << y << "\n";
  return 0;
}
