// gradcheck: analytic vector-Jacobian products against central finite differences in float64.
#include <cmath>
#include <sstream>

#include "cugrad/autograd.h"
#include "host/ops/op_util.h"

namespace cugrad::autograd {

std::string gradcheck(const std::function<Tensor(const TensorList&)>& fn, const TensorList& inputs,
                      GradcheckOptions options) {
  TensorList diff;
  for (const Tensor& x : inputs) {
    if (!x.defined() || !x.requires_grad()) continue;
    CUGRAD_CHECK(x.dtype() == DType::float64 && x.device().is_cpu() && x.is_leaf(), "gradcheck: inputs that ",
                 "require grad must be float64 CPU leaves, got ", describe(x));
    diff.push_back(x);
  }
  CUGRAD_CHECK(!diff.empty(), "gradcheck: no input requires grad");

  const Tensor out = fn(inputs);
  CUGRAD_CHECK(out.dtype() == DType::float64 && out.device().is_cpu(), "gradcheck: fn must return a float64 CPU ",
               "tensor, got ", describe(out));
  CUGRAD_CHECK(out.requires_grad(), "gradcheck: the output does not depend on any input that requires grad");
  const std::int64_t m = out.numel();

  // Analytic: J^T v for a few random v.
  std::vector<std::vector<double>> probes;
  std::vector<TensorList> analytic;
  for (int p = 0; p < options.probes; ++p) {
    const Tensor v = randn(out.shape(), Device::cpu(), DType::float64);
    probes.push_back(v.to_vector<double>());
    analytic.push_back(grad({out}, diff, {v}, /*retain_graph=*/true, /*allow_unused=*/true));
  }

  // Numeric: each input element perturbed by +-eps (values restored afterwards).
  std::ostringstream report;
  double worst = 0;
  NoGradGuard no_grad;
  for (std::size_t k = 0; k < diff.size(); ++k) {
    auto* data = static_cast<double*>(diff[k].raw_data(DType::float64));
    for (std::int64_t j = 0; j < diff[k].numel(); ++j) {
      const double orig = data[j];
      data[j] = orig + options.eps;
      const std::vector<double> plus = fn(inputs).to_vector<double>();
      data[j] = orig - options.eps;
      const std::vector<double> minus = fn(inputs).to_vector<double>();
      data[j] = orig;
      for (int p = 0; p < options.probes; ++p) {
        double numeric = 0;
        for (std::int64_t i = 0; i < m; ++i)
          numeric += probes[static_cast<std::size_t>(p)][static_cast<std::size_t>(i)] *
                     (plus[static_cast<std::size_t>(i)] - minus[static_cast<std::size_t>(i)]);
        numeric /= 2 * options.eps;
        const Tensor& a = analytic[static_cast<std::size_t>(p)][k];
        const double ana = a.defined() ? static_cast<const double*>(a.raw_data())[j] : 0.0;
        const double excess = std::fabs(ana - numeric) - (options.atol + options.rtol * std::fabs(numeric));
        if (excess > worst) {
          worst = excess;
          report.str("");
          report << "gradcheck: input " << k << " element " << j << " (probe " << p << "): analytic " << ana
                 << ", numeric " << numeric << " (atol " << options.atol << ", rtol " << options.rtol << ")";
        }
      }
    }
  }
  return worst > 0 ? report.str() : std::string();
}

}  // namespace cugrad::autograd
