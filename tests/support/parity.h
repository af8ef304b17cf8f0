// The parity harness every op test uses: CUDA results against the CPU computed in float64,
// on fresh random inputs, with new memory poisoned (NaN) so unwritten elements fail, the
// tolerance atol + rtol*|ref|, and a failure message naming the worst index and both values.
#pragma once

#include <gtest/gtest.h>

#include <exception>
#include <functional>
#include <string>

#include "cugrad/cugrad.h"

namespace cugrad::testing {

struct Tolerance {
  double atol = 1e-5;
  double rtol = 1e-5;
};

/// Elementwise |actual - expected| <= atol + rtol*|expected| (NaN matches only NaN).
/// Shapes must match; any dtype and device; compared in float64.
::testing::AssertionResult all_close(const Tensor& actual, const Tensor& expected, Tolerance tol = {});
/// ||actual - expected|| / max(||expected||, tiny) <= tol (for reductions and GEMMs).
::testing::AssertionResult norm_close(const Tensor& actual, const Tensor& expected, double tol = 1e-5);
/// Exact equality of values (integers, indices, masks).
::testing::AssertionResult all_equal(const Tensor& actual, const Tensor& expected);

/// What `f` threw: the message of a cugrad::ValueError; "(not a ValueError) " + the message of
/// any other std::exception; "" when it did not throw. Error tests check the message's parts.
std::string value_error_message(const std::function<void()>& f);

/// What `f` threw as an `E` (any std::exception by default): its message; "" when it did not
/// throw. Exceptions of other types propagate and fail the test.
template <class E = std::exception>
std::string error_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "";
}

using TensorFn = std::function<Tensor(const TensorList&)>;

/// Runs `fn` on `inputs` moved to CUDA (with new memory poisoned) and on `inputs` converted
/// to float64 on the CPU (floating inputs only; integer inputs are kept), and compares.
::testing::AssertionResult cuda_matches_cpu64(const TensorFn& fn, const TensorList& inputs, Tolerance tol = {});
/// Same with norm_close, for reductions and GEMMs.
::testing::AssertionResult cuda_matches_cpu64_norm(const TensorFn& fn, const TensorList& inputs, double tol = 1e-5);

/// Turns allocation poisoning on for its lifetime.
class PoisonGuard {
 public:
  PoisonGuard();
  ~PoisonGuard();

 private:
  bool previous_;
};

/// The awkward sizes every op is tested at (1, 7, 33, 1000003 elements and odd shapes).
std::vector<Shape> awkward_shapes();

}  // namespace cugrad::testing

/// First statement of a GPU test: skips with the reason when no CUDA device is visible.
#define CUGRAD_REQUIRE_GPU()                                                         \
  do {                                                                               \
    if (!::cugrad::cuda_is_available())                                              \
      GTEST_SKIP() << "no CUDA device visible (no driver or no GPU): GPU check skipped"; \
  } while (0)
