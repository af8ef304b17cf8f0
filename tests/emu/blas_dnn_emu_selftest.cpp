// Self-test of the CPU emulations of cuBLAS (cublas_emu.cpp) and cuDNN (cudnn_emu.cpp) against
// naive double-precision references. Built and run by tests/emu/CMakeLists.txt
// (blas_dnn_emu_selftest), linked with the emulated runtime that queues their work on streams.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <vector>

namespace {

// The emulated libraries queue their computations on the handle's stream (here the legacy
// stream), which runs on a worker thread after the call returns when the emulator is
// asynchronous (CUGRAD_EMU_ASYNC=1). These tests read their results (host vectors) right after
// each call, so in this file every computing call is followed by a device synchronization, as a
// program reading results on the host needs. The capture test (LibraryCapture) calls them by
// their own names, without it.
template <class Status>
Status then_sync(Status st) {
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return st;
}

}  // namespace

#undef cublasSgemm
#define cublasSgemm(...) then_sync(cublasSgemm_v2(__VA_ARGS__))
#undef cublasSgemm_64
#define cublasSgemm_64(...) then_sync(cublasSgemm_v2_64(__VA_ARGS__))
#define cublasSgemmStridedBatched(...) then_sync(::cublasSgemmStridedBatched(__VA_ARGS__))
#define cublasSgemmStridedBatched_64(...) then_sync(::cublasSgemmStridedBatched_64(__VA_ARGS__))
#define cudnnConvolutionForward(...) then_sync(::cudnnConvolutionForward(__VA_ARGS__))
#define cudnnConvolutionBackwardData(...) then_sync(::cudnnConvolutionBackwardData(__VA_ARGS__))
#define cudnnConvolutionBackwardFilter(...) then_sync(::cudnnConvolutionBackwardFilter(__VA_ARGS__))
#define cudnnConvolutionBackwardBias(...) then_sync(::cudnnConvolutionBackwardBias(__VA_ARGS__))
#define cudnnAddTensor(...) then_sync(::cudnnAddTensor(__VA_ARGS__))
#define cudnnBatchNormalizationForwardTraining(...) \
  then_sync(::cudnnBatchNormalizationForwardTraining(__VA_ARGS__))
#define cudnnBatchNormalizationForwardInference(...) \
  then_sync(::cudnnBatchNormalizationForwardInference(__VA_ARGS__))
#define cudnnBatchNormalizationBackward(...) then_sync(::cudnnBatchNormalizationBackward(__VA_ARGS__))

namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> random_vector(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

// v rounded to TF32 (10 mantissa bits, ties to even), computed through frexp (normal, finite v).
float tf32_ref(float v) {
  int e = 0;
  const double m = std::frexp(static_cast<double>(v), &e);  // v = m * 2^e, 0.5 <= |m| < 1
  return static_cast<float>(std::ldexp(std::nearbyint(std::ldexp(m, 11)), e - 11));
}

std::vector<float> rounded(std::vector<float> v, float (*round)(float)) {
  for (float& x : v) x = round(x);
  return v;
}

float fp16_ref(float v) { return static_cast<float>(static_cast<_Float16>(v)); }

void expect_close(double got, double want, double rel, const char* what, std::size_t i) {
  EXPECT_NEAR(got, want, rel * std::max(1.0, std::fabs(want))) << what << " at " << i;
}

// ============================== cuBLAS ==============================

class Cublas : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(cublasCreate(&h_), CUBLAS_STATUS_SUCCESS); }
  void TearDown() override { EXPECT_EQ(cublasDestroy(h_), CUBLAS_STATUS_SUCCESS); }
  cublasHandle_t h_ = nullptr;
};

// A column-major rows x cols matrix with leading dimension ld; the padding rows hold NaN so
// that reading them poisons the result.
std::vector<float> padded_matrix(int rows, int cols, int ld, unsigned seed) {
  std::vector<float> m = random_vector(static_cast<std::size_t>(ld) * cols, seed);
  for (int j = 0; j < cols; ++j)
    for (int i = rows; i < ld; ++i) m[static_cast<std::size_t>(i) + static_cast<std::size_t>(j) * ld] = kNaN;
  return m;
}

// Column-major reference: C = alpha op(A) op(B) + beta C (C not read when beta == 0).
void ref_gemm(bool ta, bool tb, int m, int n, int k, double alpha, const float* A, int lda, const float* B,
              int ldb, double beta, std::vector<double>& C, const float* C0, int ldc) {
  C.assign(static_cast<std::size_t>(ldc) * n, 0.0);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double s = 0.0;
      for (int l = 0; l < k; ++l) {
        const double a = ta ? A[l + i * lda] : A[i + l * lda];
        const double b = tb ? B[j + l * ldb] : B[l + j * ldb];
        s += a * b;
      }
      C[i + j * ldc] = alpha * s + (beta == 0.0 ? 0.0 : beta * C0[i + j * ldc]);
    }
}

TEST_F(Cublas, SgemmAllTransposeCombinations) {
  const int m = 7, n = 5, k = 9;
  const cublasOperation_t ops[] = {CUBLAS_OP_N, CUBLAS_OP_T, CUBLAS_OP_C};
  unsigned seed = 1;
  for (cublasOperation_t opa : ops)
    for (cublasOperation_t opb : ops)
      for (int use64 = 0; use64 < 2; ++use64) {
        const bool ta = opa != CUBLAS_OP_N, tb = opb != CUBLAS_OP_N;
        const int a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
        const int lda = a_rows + 3, ldb = b_rows + 2, ldc = m + 4;
        const std::vector<float> A = padded_matrix(a_rows, a_cols, lda, seed++);
        const std::vector<float> B = padded_matrix(b_rows, b_cols, ldb, seed++);
        std::vector<float> C = padded_matrix(m, n, ldc, seed++);
        const std::vector<float> C0 = C;
        const float alpha = 1.5f, beta = -0.75f;
        const cublasStatus_t st = use64 ? cublasSgemm_64(h_, opa, opb, m, n, k, &alpha, A.data(), lda,
                                                         B.data(), ldb, &beta, C.data(), ldc)
                                        : cublasSgemm(h_, opa, opb, m, n, k, &alpha, A.data(), lda, B.data(),
                                                      ldb, &beta, C.data(), ldc);
        ASSERT_EQ(st, CUBLAS_STATUS_SUCCESS);
        std::vector<double> want;
        ref_gemm(ta, tb, m, n, k, alpha, A.data(), lda, B.data(), ldb, beta, want, C0.data(), ldc);
        for (int j = 0; j < n; ++j) {
          for (int i = 0; i < m; ++i) expect_close(C[i + j * ldc], want[i + j * ldc], 1e-5, "C", i + j * ldc);
          for (int i = m; i < ldc; ++i) EXPECT_TRUE(std::isnan(C[i + j * ldc])) << "padding of C was written";
        }
      }
}

TEST_F(Cublas, SgemmBetaZeroDoesNotReadC) {
  const int m = 6, n = 3, k = 4;
  const std::vector<float> A = random_vector(m * k, 11), B = random_vector(k * n, 12);
  std::vector<float> C(m * n, kNaN);
  const float alpha = 2.0f, beta = 0.0f;
  ASSERT_EQ(cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, A.data(), m, B.data(), k, &beta,
                        C.data(), m),
            CUBLAS_STATUS_SUCCESS);
  std::vector<double> want;
  ref_gemm(false, false, m, n, k, alpha, A.data(), m, B.data(), k, 0.0, want, nullptr, m);
  for (int i = 0; i < m * n; ++i) {
    EXPECT_TRUE(std::isfinite(C[i]));
    expect_close(C[i], want[i], 1e-5, "C", i);
  }
}

TEST_F(Cublas, SgemmAlphaZeroOrKZeroScalesC) {
  const int m = 3, n = 2, k = 4;
  const std::vector<float> A(m * k, kNaN), B(k * n, kNaN);
  std::vector<float> C = random_vector(m * n, 13);
  const std::vector<float> C0 = C;
  const float zero = 0.0f, half = 0.5f;
  ASSERT_EQ(
      cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &zero, A.data(), m, B.data(), k, &half, C.data(), m),
      CUBLAS_STATUS_SUCCESS);
  for (int i = 0; i < m * n; ++i) EXPECT_FLOAT_EQ(C[i], 0.5f * C0[i]);
  std::vector<float> D(m * n, kNaN);
  ASSERT_EQ(
      cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_N, m, n, 0, &half, nullptr, m, nullptr, 1, &zero, D.data(), m),
      CUBLAS_STATUS_SUCCESS);
  for (float v : D) EXPECT_EQ(v, 0.0f);
}

TEST_F(Cublas, SgemmStridedBatched) {
  const int m = 5, n = 4, k = 3, batch = 3;
  const int lda = k + 1, ldb = n + 2,
            ldc = m + 1;  // A transposed (k x m stored), B transposed (n x k stored)
  const long long sa = static_cast<long long>(lda) * m + 5, sc = static_cast<long long>(ldc) * n + 3;
  std::vector<float> A = random_vector(static_cast<std::size_t>(sa) * batch, 21);
  const std::vector<float> B = padded_matrix(n, k, ldb, 22);  // shared: stride 0
  std::vector<float> C(static_cast<std::size_t>(sc) * batch, kNaN);
  for (int use64 = 0; use64 < 2; ++use64) {
    std::vector<float> Cb(C.size(), kNaN);
    const float alpha = -1.25f, beta = 0.0f;
    const cublasStatus_t st =
        use64 ? cublasSgemmStridedBatched_64(h_, CUBLAS_OP_T, CUBLAS_OP_T, m, n, k, &alpha, A.data(), lda, sa,
                                             B.data(), ldb, 0, &beta, Cb.data(), ldc, sc, batch)
              : cublasSgemmStridedBatched(h_, CUBLAS_OP_T, CUBLAS_OP_T, m, n, k, &alpha, A.data(), lda, sa,
                                          B.data(), ldb, 0, &beta, Cb.data(), ldc, sc, batch);
    ASSERT_EQ(st, CUBLAS_STATUS_SUCCESS);
    for (int b = 0; b < batch; ++b) {
      std::vector<double> want;
      ref_gemm(true, true, m, n, k, alpha, A.data() + b * sa, lda, B.data(), ldb, 0.0, want, nullptr, ldc);
      for (int j = 0; j < n; ++j)
        for (int i = 0; i < m; ++i)
          expect_close(Cb[b * sc + i + j * ldc], want[i + j * ldc], 1e-5, "C", b * sc + i + j * ldc);
    }
    // Everything outside the batch's matrices is untouched.
    std::size_t written = 0;
    for (float v : Cb) written += std::isnan(v) ? 0 : 1;
    EXPECT_EQ(written, static_cast<std::size_t>(m) * n * batch);
  }
  // With beta != 0 each batch accumulates into its own C.
  std::vector<float> Cacc = random_vector(C.size(), 23);
  const std::vector<float> C0 = Cacc;
  const float alpha = 1.0f, beta = 2.0f;
  ASSERT_EQ(cublasSgemmStridedBatched(h_, CUBLAS_OP_T, CUBLAS_OP_T, m, n, k, &alpha, A.data(), lda, sa,
                                      B.data(), ldb, 0, &beta, Cacc.data(), ldc, sc, batch),
            CUBLAS_STATUS_SUCCESS);
  for (int b = 0; b < batch; ++b) {
    std::vector<double> want;
    ref_gemm(true, true, m, n, k, alpha, A.data() + b * sa, lda, B.data(), ldb, beta, want,
             C0.data() + b * sc, ldc);
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < m; ++i)
        expect_close(Cacc[b * sc + i + j * ldc], want[i + j * ldc], 1e-5, "C", b * sc + i + j * ldc);
  }
}

TEST_F(Cublas, Tf32MathRoundsTheInputs) {
  EXPECT_EQ(tf32_ref(1.0f + 0x1p-11f), 1.0f);                        // a tie: to even
  EXPECT_EQ(tf32_ref(1.0f + 0x1p-11f + 0x1p-20f), 1.0f + 0x1p-10f);  // above the tie: up
  const int m = 9, n = 7, k = 300;
  const std::vector<float> A = random_vector(m * k, 31), B = random_vector(k * n, 32);
  const float alpha = 1.0f, beta = 0.0f;
  const auto run = [&] {
    std::vector<float> C(m * n, kNaN);
    EXPECT_EQ(cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_T, m, n, k, &alpha, A.data(), m, B.data(), n, &beta,
                          C.data(), m),
              CUBLAS_STATUS_SUCCESS);
    return C;
  };
  std::vector<double> exact, tf32;
  ref_gemm(false, true, m, n, k, 1.0, A.data(), m, B.data(), n, 0.0, exact, nullptr, m);
  const std::vector<float> At = rounded(A, tf32_ref), Bt = rounded(B, tf32_ref);
  ref_gemm(false, true, m, n, k, 1.0, At.data(), m, Bt.data(), n, 0.0, tf32, nullptr, m);
  ASSERT_EQ(cublasSetMathMode(h_, CUBLAS_TF32_TENSOR_OP_MATH), CUBLAS_STATUS_SUCCESS);
  std::vector<float> C = run();
  double worst = 0.0;
  for (int i = 0; i < m * n; ++i) {
    expect_close(C[i], tf32[i], 1e-6, "C (tf32)", i);
    worst = std::max(worst, std::fabs(C[i] - exact[i]));
  }
  EXPECT_GT(worst, 1e-4) << "TF32 rounding is visible";
  ASSERT_EQ(setenv("NVIDIA_TF32_OVERRIDE", "0", 1), 0);
  C = run();
  ASSERT_EQ(unsetenv("NVIDIA_TF32_OVERRIDE"), 0);
  for (int i = 0; i < m * n; ++i) expect_close(C[i], exact[i], 1e-6, "C (override)", i);
  ASSERT_EQ(cublasSetMathMode(h_, CUBLAS_DEFAULT_MATH), CUBLAS_STATUS_SUCCESS);
  C = run();
  for (int i = 0; i < m * n; ++i) expect_close(C[i], exact[i], 1e-6, "C (default math)", i);
}

TEST_F(Cublas, ArgumentChecks) {
  float a[16] = {}, b[16] = {}, c[16] = {};
  const float one = 1.0f;
  EXPECT_EQ(cublasSgemm(nullptr, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, 2, b, 2, &one, c, 2),
            CUBLAS_STATUS_NOT_INITIALIZED);
  EXPECT_EQ(cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_N, -1, 2, 2, &one, a, 2, b, 2, &one, c, 2),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, -1, &one, a, 2, b, 2, &one, c, 2),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(h_, CUBLAS_OP_CONJG, CUBLAS_OP_N, 2, 2, 2, &one, a, 2, b, 2, &one, c, 2),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_N, 3, 2, 2, &one, a, 2, b, 2, &one, c, 3),
            CUBLAS_STATUS_INVALID_VALUE);  // lda < m
  EXPECT_EQ(cublasSgemm(h_, CUBLAS_OP_T, CUBLAS_OP_N, 3, 2, 4, &one, a, 3, b, 4, &one, c, 3),
            CUBLAS_STATUS_INVALID_VALUE);  // lda < k for op(A) = A^T
  EXPECT_EQ(cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_T, 2, 3, 2, &one, a, 2, b, 2, &one, c, 2),
            CUBLAS_STATUS_INVALID_VALUE);  // ldb < n for op(B) = B^T
  EXPECT_EQ(cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, 2, b, 2, &one, c, 1),
            CUBLAS_STATUS_INVALID_VALUE);  // ldc < m
  EXPECT_EQ(cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, nullptr, a, 2, b, 2, &one, c, 2),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_N, 0, 2, 2, &one, a, 1, b, 2, &one, c, 1),
            CUBLAS_STATUS_SUCCESS);  // empty: lda >= max(1, 0)
  EXPECT_EQ(cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_N, 0, 2, 2, &one, a, 0, b, 2, &one, c, 1),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemmStridedBatched(h_, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, 2, 4, b, 2, 4, &one, c,
                                      2, 4, -1),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemmStridedBatched(h_, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, 2, 4, b, 2, 4, &one, c,
                                      2, 4, 0),
            CUBLAS_STATUS_SUCCESS);
  cublasHandle_t gone = nullptr;
  ASSERT_EQ(cublasCreate(&gone), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasDestroy(gone), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasSetStream(gone, nullptr), CUBLAS_STATUS_NOT_INITIALIZED);
  EXPECT_EQ(cublasDestroy(nullptr), CUBLAS_STATUS_NOT_INITIALIZED);
}

TEST_F(Cublas, HandleState) {
  cudaStream_t s = reinterpret_cast<cudaStream_t>(0x1234), got = nullptr;
  ASSERT_EQ(cublasSetStream(h_, s), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasGetStream(h_, &got), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(got, s);
  cublasMath_t math{};
  ASSERT_EQ(cublasGetMathMode(h_, &math), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(math, CUBLAS_DEFAULT_MATH);
  ASSERT_EQ(cublasSetMathMode(h_, CUBLAS_TF32_TENSOR_OP_MATH), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasGetMathMode(h_, &math), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(math, CUBLAS_TF32_TENSOR_OP_MATH);
  EXPECT_EQ(cublasSetMathMode(h_, static_cast<cublasMath_t>(7)), CUBLAS_STATUS_INVALID_VALUE);
  cublasPointerMode_t pm{};
  ASSERT_EQ(cublasSetPointerMode(h_, CUBLAS_POINTER_MODE_DEVICE), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasGetPointerMode(h_, &pm), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(pm, CUBLAS_POINTER_MODE_DEVICE);
  // Device pointer mode: the scalars are read from "device" (host) memory all the same.
  const float a[1] = {2.0f}, b[1] = {3.0f}, alpha = 1.0f, beta = 0.0f;
  float c[1] = {kNaN};
  ASSERT_EQ(cublasSgemm(h_, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &alpha, a, 1, b, 1, &beta, c, 1),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(c[0], 6.0f);
  EXPECT_EQ(cublasSetPointerMode(h_, static_cast<cublasPointerMode_t>(5)), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_STREQ(cublasGetStatusName(CUBLAS_STATUS_INVALID_VALUE), "CUBLAS_STATUS_INVALID_VALUE");
  EXPECT_STRNE(cublasGetStatusString(CUBLAS_STATUS_SUCCESS), "");
}

// ============================== cuDNN ==============================

struct ConvCfg {
  int N, C, H, W, K, G, R, S, pad_h, pad_w, stride_h, stride_w, dil_h, dil_w;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  int P() const { return (H + 2 * pad_h - ((R - 1) * dil_h + 1)) / stride_h + 1; }
  int Q() const { return (W + 2 * pad_w - ((S - 1) * dil_w + 1)) / stride_w + 1; }
  int Cg() const { return C / G; }
  std::size_t x_size() const { return static_cast<std::size_t>(N) * C * H * W; }
  std::size_t w_size() const { return static_cast<std::size_t>(K) * Cg() * R * S; }
  std::size_t y_size() const { return static_cast<std::size_t>(N) * K * P() * Q(); }
};

// The odd geometry of the brief: groups 2, stride 2, pad 1, dilation 2.
ConvCfg odd_cfg() { return {2, 4, 11, 10, 6, 2, 3, 2, 1, 1, 2, 2, 2, 2}; }

// odd_cfg() and two asymmetric ones (height and width differ in pad, stride and dilation;
// depthwise groups; padding wider than the filter, so some output rows see only padding).
std::vector<ConvCfg> all_cfgs() {
  return {odd_cfg(), {1, 3, 9, 13, 3, 3, 4, 3, 2, 0, 1, 3, 1, 2}, {2, 2, 5, 6, 2, 1, 2, 2, 3, 1, 2, 1, 1, 3}};
}

// Direct (gather) reference, packed NCHW / KCRS, in double.
std::vector<double> ref_forward(const ConvCfg& g, const std::vector<float>& x, const std::vector<float>& w) {
  const int P = g.P(), Q = g.Q(), Cg = g.Cg(), Kg = g.K / g.G;
  std::vector<double> y(g.y_size(), 0.0);
  for (int n = 0; n < g.N; ++n)
    for (int k = 0; k < g.K; ++k)
      for (int p = 0; p < P; ++p)
        for (int q = 0; q < Q; ++q) {
          double s = 0.0;
          const int grp = k / Kg;
          for (int cg = 0; cg < Cg; ++cg)
            for (int r = 0; r < g.R; ++r)
              for (int t = 0; t < g.S; ++t) {
                const int h = p * g.stride_h - g.pad_h + r * g.dil_h,
                          ww = q * g.stride_w - g.pad_w + t * g.dil_w;
                if (h < 0 || h >= g.H || ww < 0 || ww >= g.W) continue;
                const int fr = g.mode == CUDNN_CONVOLUTION ? g.R - 1 - r : r;
                const int ft = g.mode == CUDNN_CONVOLUTION ? g.S - 1 - t : t;
                s += static_cast<double>(
                         x[((static_cast<std::size_t>(n) * g.C + grp * Cg + cg) * g.H + h) * g.W + ww]) *
                     w[((static_cast<std::size_t>(k) * Cg + cg) * g.R + fr) * g.S + ft];
              }
          y[((static_cast<std::size_t>(n) * g.K + k) * P + p) * Q + q] = s;
        }
  return y;
}

// A packed NCHW tensor (or KCRS filter) in NHWC (KRSC) order.
std::vector<float> to_nhwc(const std::vector<float>& v, int N, int C, int H, int W) {
  std::vector<float> out(v.size());
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c)
      for (int h = 0; h < H; ++h)
        for (int w = 0; w < W; ++w)
          out[((static_cast<std::size_t>(n) * H + h) * W + w) * C + c] =
              v[((static_cast<std::size_t>(n) * C + c) * H + h) * W + w];
  return out;
}

// RAII descriptors for the tests.
struct Tensor {
  cudnnTensorDescriptor_t d = nullptr;
  Tensor() { EXPECT_EQ(cudnnCreateTensorDescriptor(&d), CUDNN_STATUS_SUCCESS); }
  Tensor(int n, int c, int h, int w, cudnnTensorFormat_t f = CUDNN_TENSOR_NCHW) : Tensor() {
    EXPECT_EQ(cudnnSetTensor4dDescriptor(d, f, CUDNN_DATA_FLOAT, n, c, h, w), CUDNN_STATUS_SUCCESS);
  }
  ~Tensor() { EXPECT_EQ(cudnnDestroyTensorDescriptor(d), CUDNN_STATUS_SUCCESS); }
};
struct Filter {
  cudnnFilterDescriptor_t d = nullptr;
  Filter(int k, int c, int h, int w, cudnnTensorFormat_t f = CUDNN_TENSOR_NCHW) {
    EXPECT_EQ(cudnnCreateFilterDescriptor(&d), CUDNN_STATUS_SUCCESS);
    EXPECT_EQ(cudnnSetFilter4dDescriptor(d, CUDNN_DATA_FLOAT, f, k, c, h, w), CUDNN_STATUS_SUCCESS);
  }
  ~Filter() { EXPECT_EQ(cudnnDestroyFilterDescriptor(d), CUDNN_STATUS_SUCCESS); }
};
struct Conv {
  cudnnConvolutionDescriptor_t d = nullptr;
  explicit Conv(const ConvCfg& g) {
    EXPECT_EQ(cudnnCreateConvolutionDescriptor(&d), CUDNN_STATUS_SUCCESS);
    EXPECT_EQ(cudnnSetConvolution2dDescriptor(d, g.pad_h, g.pad_w, g.stride_h, g.stride_w, g.dil_h, g.dil_w,
                                              g.mode, CUDNN_DATA_FLOAT),
              CUDNN_STATUS_SUCCESS);
    EXPECT_EQ(cudnnSetConvolutionGroupCount(d, g.G), CUDNN_STATUS_SUCCESS);
    EXPECT_EQ(cudnnSetConvolutionMathType(d, CUDNN_FMA_MATH), CUDNN_STATUS_SUCCESS);
  }
  ~Conv() { EXPECT_EQ(cudnnDestroyConvolutionDescriptor(d), CUDNN_STATUS_SUCCESS); }
};

// The descriptors of one geometry (packed NCHW unless told).
struct Descs {
  Tensor x, y;
  Filter w;
  Conv conv;
  explicit Descs(const ConvCfg& g, cudnnTensorFormat_t xf = CUDNN_TENSOR_NCHW,
                 cudnnTensorFormat_t wf = CUDNN_TENSOR_NCHW)
      : x(g.N, g.C, g.H, g.W, xf), y(g.N, g.K, g.P(), g.Q(), xf), w(g.K, g.Cg(), g.R, g.S, wf), conv(g) {}
};

class Cudnn : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(cudnnCreate(&h_), CUDNN_STATUS_SUCCESS); }
  void TearDown() override { EXPECT_EQ(cudnnDestroy(h_), CUDNN_STATUS_SUCCESS); }

  // Runs forward / backward data / backward filter with the first heuristic algorithm (or
  // `algo`), a workspace of the reported size, and the given scalars.
  std::vector<float> forward(const ConvCfg& g, const Descs& d, const std::vector<float>& x,
                             const std::vector<float>& w, float alpha, float beta, std::vector<float> y,
                             int algo = -1) {
    if (algo < 0) {
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      int n = 0;
      EXPECT_EQ(cudnnGetConvolutionForwardAlgorithm_v7(h_, d.x.d, d.w.d, d.conv.d, d.y.d, 1, &n, perf),
                CUDNN_STATUS_SUCCESS);
      EXPECT_EQ(n, 1);
      algo = perf[0].algo;
    }
    std::size_t bytes = 0;
    EXPECT_EQ(cudnnGetConvolutionForwardWorkspaceSize(h_, d.x.d, d.w.d, d.conv.d, d.y.d,
                                                      static_cast<cudnnConvolutionFwdAlgo_t>(algo), &bytes),
              CUDNN_STATUS_SUCCESS);
    std::vector<unsigned char> ws(bytes);
    EXPECT_EQ(cudnnConvolutionForward(h_, &alpha, d.x.d, x.data(), d.w.d, w.data(), d.conv.d,
                                      static_cast<cudnnConvolutionFwdAlgo_t>(algo), ws.data(), bytes, &beta,
                                      d.y.d, y.data()),
              CUDNN_STATUS_SUCCESS);
    (void)g;
    return y;
  }
  std::vector<float> backward_data(const Descs& d, const std::vector<float>& dy, const std::vector<float>& w,
                                   float alpha, float beta, std::vector<float> dx, int algo = -1) {
    if (algo < 0) {
      cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      int n = 0;
      EXPECT_EQ(cudnnGetConvolutionBackwardDataAlgorithm_v7(h_, d.w.d, d.y.d, d.conv.d, d.x.d, 1, &n, perf),
                CUDNN_STATUS_SUCCESS);
      algo = perf[0].algo;
    }
    std::size_t bytes = 0;
    EXPECT_EQ(
        cudnnGetConvolutionBackwardDataWorkspaceSize(
            h_, d.w.d, d.y.d, d.conv.d, d.x.d, static_cast<cudnnConvolutionBwdDataAlgo_t>(algo), &bytes),
        CUDNN_STATUS_SUCCESS);
    std::vector<unsigned char> ws(bytes);
    EXPECT_EQ(cudnnConvolutionBackwardData(h_, &alpha, d.w.d, w.data(), d.y.d, dy.data(), d.conv.d,
                                           static_cast<cudnnConvolutionBwdDataAlgo_t>(algo), ws.data(), bytes,
                                           &beta, d.x.d, dx.data()),
              CUDNN_STATUS_SUCCESS);
    return dx;
  }
  std::vector<float> backward_filter(const Descs& d, const std::vector<float>& x,
                                     const std::vector<float>& dy, float alpha, float beta,
                                     std::vector<float> dw, int algo = -1) {
    if (algo < 0) {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
      int n = 0;
      EXPECT_EQ(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h_, d.x.d, d.y.d, d.conv.d, d.w.d, 1, &n, perf),
                CUDNN_STATUS_SUCCESS);
      algo = perf[0].algo;
    }
    std::size_t bytes = 0;
    EXPECT_EQ(
        cudnnGetConvolutionBackwardFilterWorkspaceSize(
            h_, d.x.d, d.y.d, d.conv.d, d.w.d, static_cast<cudnnConvolutionBwdFilterAlgo_t>(algo), &bytes),
        CUDNN_STATUS_SUCCESS);
    std::vector<unsigned char> ws(bytes);
    EXPECT_EQ(cudnnConvolutionBackwardFilter(h_, &alpha, d.x.d, x.data(), d.y.d, dy.data(), d.conv.d,
                                             static_cast<cudnnConvolutionBwdFilterAlgo_t>(algo), ws.data(),
                                             bytes, &beta, d.w.d, dw.data()),
              CUDNN_STATUS_SUCCESS);
    return dw;
  }

  cudnnHandle_t h_ = nullptr;
};

TEST_F(Cudnn, OutputDim) {
  const ConvCfg g = odd_cfg();
  Descs d(g);
  int n = 0, c = 0, h = 0, w = 0;
  ASSERT_EQ(cudnnGetConvolution2dForwardOutputDim(d.conv.d, d.x.d, d.w.d, &n, &c, &h, &w),
            CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(n, g.N);
  EXPECT_EQ(c, g.K);
  EXPECT_EQ(h, g.P());
  EXPECT_EQ(w, g.Q());
  EXPECT_EQ(g.P(), 5);  // (11 + 2 - 5) / 2 + 1
  EXPECT_EQ(g.Q(), 5);  // (10 + 2 - 3) / 2 + 1
}

TEST_F(Cudnn, ForwardMatchesReferenceForEverySupportedAlgorithm) {
  for (const ConvCfg& cfg : all_cfgs())
    for (cudnnConvolutionMode_t mode : {CUDNN_CROSS_CORRELATION, CUDNN_CONVOLUTION}) {
      ConvCfg g = cfg;
      g.mode = mode;
      Descs d(g);
      const std::vector<float> x = random_vector(g.x_size(), 31), w = random_vector(g.w_size(), 32);
      const std::vector<float> y0 = random_vector(g.y_size(), 33);
      const std::vector<double> ref = ref_forward(g, x, w);
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      int count = 0;
      ASSERT_EQ(cudnnGetConvolutionForwardAlgorithm_v7(h_, d.x.d, d.w.d, d.conv.d, d.y.d,
                                                       CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count, perf),
                CUDNN_STATUS_SUCCESS);
      ASSERT_EQ(count, CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
      int ran = 0;
      bool some_workspace = false;
      for (int i = 0; i < count; ++i) {
        std::size_t bytes = 0;
        const cudnnStatus_t ws_status =
            cudnnGetConvolutionForwardWorkspaceSize(h_, d.x.d, d.w.d, d.conv.d, d.y.d, perf[i].algo, &bytes);
        if (perf[i].status != CUDNN_STATUS_SUCCESS) {
          EXPECT_EQ(ws_status, CUDNN_STATUS_NOT_SUPPORTED);
          std::vector<float> y(g.y_size());
          const float one = 1.0f, zero = 0.0f;
          EXPECT_EQ(cudnnConvolutionForward(h_, &one, d.x.d, x.data(), d.w.d, w.data(), d.conv.d,
                                            perf[i].algo, nullptr, 0, &zero, d.y.d, y.data()),
                    CUDNN_STATUS_NOT_SUPPORTED);
          continue;
        }
        EXPECT_EQ(perf[i].mathType, CUDNN_FMA_MATH);
        ASSERT_EQ(ws_status, CUDNN_STATUS_SUCCESS);
        EXPECT_EQ(bytes, perf[i].memory);
        some_workspace |= bytes > 0;
        ++ran;
        // beta = 0: y starts as NaN and must not be read.
        const std::vector<float> y1 =
            forward(g, d, x, w, 2.0f, 0.0f, std::vector<float>(g.y_size(), kNaN), perf[i].algo);
        for (std::size_t j = 0; j < y1.size(); ++j) expect_close(y1[j], 2.0 * ref[j], 1e-5, "y (beta 0)", j);
        // beta != 0 accumulates.
        const std::vector<float> y2 = forward(g, d, x, w, -0.5f, 0.25f, y0, perf[i].algo);
        for (std::size_t j = 0; j < y2.size(); ++j)
          expect_close(y2[j], -0.5 * ref[j] + 0.25 * y0[j], 1e-5, "y (beta 0.25)", j);
      }
      EXPECT_GE(ran, 3);
      EXPECT_TRUE(some_workspace);
    }
}

TEST_F(Cudnn, ConvolutionModeFlipsTheFilter) {
  ConvCfg g = odd_cfg();
  const std::vector<float> x = random_vector(g.x_size(), 41), w = random_vector(g.w_size(), 42);
  std::vector<float> flipped(w.size());
  const int Cg = g.Cg();
  for (int k = 0; k < g.K; ++k)
    for (int c = 0; c < Cg; ++c)
      for (int r = 0; r < g.R; ++r)
        for (int s = 0; s < g.S; ++s)
          flipped[((k * Cg + c) * g.R + r) * g.S + s] =
              w[((k * Cg + c) * g.R + (g.R - 1 - r)) * g.S + (g.S - 1 - s)];
  Descs cross(g);
  g.mode = CUDNN_CONVOLUTION;
  Descs conv(g);
  const std::vector<float> a = forward(g, conv, x, w, 1.0f, 0.0f, std::vector<float>(g.y_size()));
  const std::vector<float> b = forward(g, cross, x, flipped, 1.0f, 0.0f, std::vector<float>(g.y_size()));
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_FLOAT_EQ(a[i], b[i]) << i;
}

TEST_F(Cudnn, MathTypeDecidesTheInputPrecision) {
  ConvCfg g = odd_cfg();
  g.C = 64;  // longer sums: the rounding shows
  g.K = 4;
  Descs d(g);
  const std::vector<float> x = random_vector(g.x_size(), 111), w = random_vector(g.w_size(), 112);
  const std::vector<float> dy = random_vector(g.y_size(), 113);
  const std::vector<double> exact = ref_forward(g, x, w);
  const std::vector<double> tf32 = ref_forward(g, rounded(x, tf32_ref), rounded(w, tf32_ref));
  const std::vector<double> fp16 = ref_forward(g, rounded(x, fp16_ref), rounded(w, fp16_ref));
  const auto check = [&](cudnnMathType_t math, const std::vector<double>& want, const char* what) {
    ASSERT_EQ(cudnnSetConvolutionMathType(d.conv.d, math), CUDNN_STATUS_SUCCESS);
    const std::vector<float> y = forward(g, d, x, w, 1.0f, 0.0f, std::vector<float>(g.y_size(), kNaN));
    double worst = 0.0;
    for (std::size_t i = 0; i < y.size(); ++i) {
      expect_close(y[i], want[i], 1e-5, what, i);
      worst = std::max(worst, std::fabs(y[i] - exact[i]));
    }
    if (&want != &exact) {
      EXPECT_GT(worst, 1e-4) << what << ": the rounding is visible";
    }
  };
  check(CUDNN_FMA_MATH, exact, "fma");
  check(CUDNN_DEFAULT_MATH, tf32, "default (tf32)");
  check(CUDNN_TENSOR_OP_MATH, tf32, "tensor op (tf32)");
  check(CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, fp16, "allow conversion (fp16)");
  ASSERT_EQ(setenv("NVIDIA_TF32_OVERRIDE", "0", 1), 0);
  check(CUDNN_DEFAULT_MATH, exact, "default with NVIDIA_TF32_OVERRIDE=0");
  ASSERT_EQ(unsetenv("NVIDIA_TF32_OVERRIDE"), 0);
  // Ties round to even: 1 + 2^-11 down to 1, 1 + 3 * 2^-11 up to 1 + 2^-9.
  {
    const ConvCfg one{1, 1, 1, 2, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1};
    Descs e(one);
    ASSERT_EQ(cudnnSetConvolutionMathType(e.conv.d, CUDNN_DEFAULT_MATH), CUDNN_STATUS_SUCCESS);
    const std::vector<float> y =
        forward(one, e, {1.0f + 0x1p-11f, 1.0f + 0x3p-11f}, {1.0f}, 1.0f, 0.0f, {0, 0});
    EXPECT_EQ(y, (std::vector<float>{1.0f, 1.0f + 0x1p-9f}));
  }
  // The backward directions take the same math: the adjoint identity holds for the rounded inputs.
  ASSERT_EQ(cudnnSetConvolutionMathType(d.conv.d, CUDNN_DEFAULT_MATH), CUDNN_STATUS_SUCCESS);
  const std::vector<float> dx = backward_data(d, dy, w, 1.0f, 0.0f, std::vector<float>(g.x_size(), kNaN));
  const std::vector<float> dw = backward_filter(d, x, dy, 1.0f, 0.0f, std::vector<float>(g.w_size(), kNaN));
  const std::vector<float> xt = rounded(x, tf32_ref), wt = rounded(w, tf32_ref), dyt = rounded(dy, tf32_ref);
  const std::vector<double> yt = ref_forward(g, xt, wt);
  double a = 0.0;
  for (std::size_t i = 0; i < yt.size(); ++i) a += yt[i] * dyt[i];
  EXPECT_NEAR(dot(xt, dx), a, 1e-5 * std::fabs(a));
  EXPECT_NEAR(dot(wt, dw), a, 1e-5 * std::fabs(a));
}

TEST_F(Cudnn, NhwcLayoutsMatchNchw) {
  const ConvCfg g = odd_cfg();
  const std::vector<float> x = random_vector(g.x_size(), 51), w = random_vector(g.w_size(), 52);
  const std::vector<double> ref = ref_forward(g, x, w);
  // Transpose x to NHWC and w to KRSC.
  std::vector<float> x_nhwc(x.size()), w_krsc(w.size());
  for (int n = 0; n < g.N; ++n)
    for (int c = 0; c < g.C; ++c)
      for (int h = 0; h < g.H; ++h)
        for (int ww = 0; ww < g.W; ++ww)
          x_nhwc[((n * g.H + h) * g.W + ww) * g.C + c] = x[((n * g.C + c) * g.H + h) * g.W + ww];
  const int Cg = g.Cg();
  for (int k = 0; k < g.K; ++k)
    for (int c = 0; c < Cg; ++c)
      for (int r = 0; r < g.R; ++r)
        for (int s = 0; s < g.S; ++s)
          w_krsc[((k * g.R + r) * g.S + s) * Cg + c] = w[((k * Cg + c) * g.R + r) * g.S + s];
  Descs d(g, CUDNN_TENSOR_NHWC, CUDNN_TENSOR_NHWC);
  const std::vector<float> y =
      forward(g, d, x_nhwc, w_krsc, 1.0f, 0.0f, std::vector<float>(g.y_size(), kNaN));
  const int P = g.P(), Q = g.Q();
  for (int n = 0; n < g.N; ++n)
    for (int k = 0; k < g.K; ++k)
      for (int p = 0; p < P; ++p)
        for (int q = 0; q < Q; ++q) {
          const std::size_t i = ((static_cast<std::size_t>(n) * g.K + k) * P + p) * Q + q;
          expect_close(y[((static_cast<std::size_t>(n) * P + p) * Q + q) * g.K + k], ref[i], 1e-5, "y nhwc",
                       i);
        }
  // Backward data and filter in NHWC / KRSC match NCHW / KCRS.
  const std::vector<float> dy = random_vector(g.y_size(), 53);
  Descs nchw(g);
  const std::vector<float> dx = backward_data(nchw, dy, w, 1.0f, 0.0f, std::vector<float>(g.x_size(), kNaN));
  const std::vector<float> dw =
      backward_filter(nchw, x, dy, 1.0f, 0.0f, std::vector<float>(g.w_size(), kNaN));
  const std::vector<float> dy_nhwc = to_nhwc(dy, g.N, g.K, P, Q);
  EXPECT_EQ(to_nhwc(dx, g.N, g.C, g.H, g.W),
            backward_data(d, dy_nhwc, w_krsc, 1.0f, 0.0f, std::vector<float>(g.x_size(), kNaN)));
  EXPECT_EQ(to_nhwc(dw, g.K, Cg, g.R, g.S),
            backward_filter(d, x_nhwc, dy_nhwc, 1.0f, 0.0f, std::vector<float>(g.w_size(), kNaN)));
  // Explicit strides (cudnnSetTensor4dDescriptorEx): x with a padded row pitch.
  const int pitch = g.W + 3;
  std::vector<float> x_pitched(static_cast<std::size_t>(g.N) * g.C * g.H * pitch, kNaN);
  for (int n = 0; n < g.N; ++n)
    for (int c = 0; c < g.C; ++c)
      for (int h = 0; h < g.H; ++h)
        for (int ww = 0; ww < g.W; ++ww)
          x_pitched[((n * g.C + c) * g.H + h) * pitch + ww] = x[((n * g.C + c) * g.H + h) * g.W + ww];
  Descs e(g);
  ASSERT_EQ(cudnnSetTensor4dDescriptorEx(e.x.d, CUDNN_DATA_FLOAT, g.N, g.C, g.H, g.W, g.C * g.H * pitch,
                                         g.H * pitch, pitch, 1),
            CUDNN_STATUS_SUCCESS);
  const std::vector<float> y2 = forward(g, e, x_pitched, w, 1.0f, 0.0f, std::vector<float>(g.y_size(), kNaN));
  for (std::size_t i = 0; i < y2.size(); ++i) expect_close(y2[i], ref[i], 1e-5, "y pitched", i);
}

TEST_F(Cudnn, BackwardDataAndFilterAreAdjoints) {
  for (const ConvCfg& cfg : all_cfgs())
    for (cudnnConvolutionMode_t mode : {CUDNN_CROSS_CORRELATION, CUDNN_CONVOLUTION}) {
      ConvCfg g = cfg;
      g.mode = mode;
      Descs d(g);
      const std::vector<float> x = random_vector(g.x_size(), 61), w = random_vector(g.w_size(), 62);
      const std::vector<float> dy = random_vector(g.y_size(), 63);
      const std::vector<float> y = forward(g, d, x, w, 1.0f, 0.0f, std::vector<float>(g.y_size(), kNaN));
      const std::vector<float> dx = backward_data(d, dy, w, 1.0f, 0.0f, std::vector<float>(g.x_size(), kNaN));
      const std::vector<float> dw =
          backward_filter(d, x, dy, 1.0f, 0.0f, std::vector<float>(g.w_size(), kNaN));
      const double a = dot(y, dy), b = dot(x, dx), c = dot(w, dw);
      EXPECT_NEAR(b, a, 1e-5 * std::fabs(a)) << "<x, convT(dy, w)> vs <conv(x, w), dy>";
      EXPECT_NEAR(c, a, 1e-5 * std::fabs(a)) << "<w, dW(x, dy)> vs <conv(x, w), dy>";

      // Elementwise: dx[i] = <conv(e_i, w), dy> and dw[j] = <conv(x, e_j), dy> (reference convs).
      std::vector<float> e(g.x_size(), 0.0f);
      for (std::size_t i = 0; i < e.size(); ++i) {
        e[i] = 1.0f;
        const std::vector<double> yi = ref_forward(g, e, w);
        double s = 0.0;
        for (std::size_t j = 0; j < yi.size(); ++j) s += yi[j] * dy[j];
        expect_close(dx[i], s, 1e-5, "dx", i);
        e[i] = 0.0f;
      }
      std::vector<float> f(g.w_size(), 0.0f);
      for (std::size_t i = 0; i < f.size(); ++i) {
        f[i] = 1.0f;
        const std::vector<double> yi = ref_forward(g, x, f);
        double s = 0.0;
        for (std::size_t j = 0; j < yi.size(); ++j) s += yi[j] * dy[j];
        expect_close(dw[i], s, 1e-5, "dw", i);
        f[i] = 0.0f;
      }

      // alpha and beta, with every supported algorithm.
      const std::vector<float> dx0 = random_vector(g.x_size(), 64), dw0 = random_vector(g.w_size(), 65);
      cudnnConvolutionBwdDataAlgoPerf_t dperf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      int dn = 0;
      ASSERT_EQ(cudnnGetConvolutionBackwardDataAlgorithm_v7(
                    h_, d.w.d, d.y.d, d.conv.d, d.x.d, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &dn, dperf),
                CUDNN_STATUS_SUCCESS);
      int dran = 0;
      for (int i = 0; i < dn; ++i) {
        if (dperf[i].status != CUDNN_STATUS_SUCCESS) continue;
        ++dran;
        const std::vector<float> r = backward_data(d, dy, w, 3.0f, -1.0f, dx0, dperf[i].algo);
        for (std::size_t j = 0; j < r.size(); ++j)
          expect_close(r[j], 3.0 * dx[j] - dx0[j], 1e-5, "dx (beta)", j);
      }
      EXPECT_GE(dran, 2);
      cudnnConvolutionBwdFilterAlgoPerf_t fperf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
      int fn = 0;
      ASSERT_EQ(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                    h_, d.x.d, d.y.d, d.conv.d, d.w.d, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &fn, fperf),
                CUDNN_STATUS_SUCCESS);
      int fran = 0;
      for (int i = 0; i < fn; ++i) {
        if (fperf[i].status != CUDNN_STATUS_SUCCESS) continue;
        ++fran;
        const std::vector<float> r = backward_filter(d, x, dy, 0.5f, 2.0f, dw0, fperf[i].algo);
        for (std::size_t j = 0; j < r.size(); ++j)
          expect_close(r[j], 0.5 * dw[j] + 2.0 * dw0[j], 1e-5, "dw (beta)", j);
      }
      EXPECT_GE(fran, 3);
    }
}

TEST_F(Cudnn, BackwardBias) {
  const int N = 3, K = 5, P = 4, Q = 7;
  Tensor dyd(N, K, P, Q), dbd(1, K, 1, 1);
  const std::vector<float> dy = random_vector(static_cast<std::size_t>(N) * K * P * Q, 71);
  std::vector<float> db(K, kNaN);
  const float one = 1.0f, zero = 0.0f, two = 2.0f, half = 0.5f;
  ASSERT_EQ(cudnnConvolutionBackwardBias(h_, &one, dyd.d, dy.data(), &zero, dbd.d, db.data()),
            CUDNN_STATUS_SUCCESS);
  std::vector<double> want(K, 0.0);
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k)
      for (int i = 0; i < P * Q; ++i) want[k] += dy[(static_cast<std::size_t>(n) * K + k) * P * Q + i];
  for (int k = 0; k < K; ++k) expect_close(db[k], want[k], 1e-5, "db", k);
  const std::vector<float> db0 = db;
  ASSERT_EQ(cudnnConvolutionBackwardBias(h_, &two, dyd.d, dy.data(), &half, dbd.d, db.data()),
            CUDNN_STATUS_SUCCESS);
  for (int k = 0; k < K; ++k) expect_close(db[k], 2.0 * want[k] + 0.5 * db0[k], 1e-5, "db (beta)", k);
  Tensor bad(1, K + 1, 1, 1);
  EXPECT_EQ(cudnnConvolutionBackwardBias(h_, &one, dyd.d, dy.data(), &zero, bad.d, db.data()),
            CUDNN_STATUS_BAD_PARAM);
}

TEST_F(Cudnn, AddTensorBroadcast) {
  const int N = 2, C = 3, H = 4, W = 5;
  Tensor bias(1, C, 1, 1), full(N, C, H, W), row(1, 1, 1, W);
  const std::vector<float> b = random_vector(C, 81), r = random_vector(W, 82);
  std::vector<float> y = random_vector(static_cast<std::size_t>(N) * C * H * W, 83);
  const std::vector<float> y0 = y;
  const float one = 1.0f, alpha = 2.0f, beta = -1.0f, zero = 0.0f;
  ASSERT_EQ(cudnnAddTensor(h_, &alpha, bias.d, b.data(), &beta, full.d, y.data()), CUDNN_STATUS_SUCCESS);
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c)
      for (int i = 0; i < H * W; ++i) {
        const std::size_t j = (static_cast<std::size_t>(n) * C + c) * H * W + i;
        expect_close(y[j], 2.0 * b[c] - y0[j], 1e-6, "C", j);
      }
  std::vector<float> z(y.size(), kNaN);
  ASSERT_EQ(cudnnAddTensor(h_, &one, row.d, r.data(), &zero, full.d, z.data()), CUDNN_STATUS_SUCCESS);
  for (std::size_t j = 0; j < z.size(); ++j) EXPECT_EQ(z[j], r[j % W]) << j;
  Tensor bad(1, C + 1, 1, 1);
  EXPECT_EQ(cudnnAddTensor(h_, &one, bad.d, b.data(), &one, full.d, y.data()), CUDNN_STATUS_BAD_PARAM);
}

TEST_F(Cudnn, FindExRanksAndRuns) {
  const ConvCfg g = odd_cfg();
  Descs d(g);
  const std::vector<float> x = random_vector(g.x_size(), 91), w = random_vector(g.w_size(), 92);
  const std::vector<float> dy = random_vector(g.y_size(), 93);
  const std::vector<double> ref = ref_forward(g, x, w);
  std::vector<unsigned char> ws(1 << 16);
  {
    std::vector<float> y(g.y_size(), kNaN);
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int n = 0;
    ASSERT_EQ(cudnnFindConvolutionForwardAlgorithmEx(h_, d.x.d, x.data(), d.w.d, w.data(), d.conv.d, d.y.d,
                                                     y.data(), CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf,
                                                     ws.data(), ws.size()),
              CUDNN_STATUS_SUCCESS);
    EXPECT_EQ(n, CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
    int ok = 0;
    for (int i = 0; i < n; ++i)
      if (perf[i].status == CUDNN_STATUS_SUCCESS) {
        EXPECT_EQ(ok, i) << "successful algorithms come first";
        EXPECT_LE(perf[i].memory, ws.size());
        EXPECT_GE(perf[i].time, 0.0f);
        ++ok;
      }
    EXPECT_GE(ok, 3);
    for (std::size_t j = 0; j < y.size(); ++j) expect_close(y[j], ref[j], 1e-5, "y after find", j);
    int two = 0;
    ASSERT_EQ(cudnnFindConvolutionForwardAlgorithmEx(h_, d.x.d, x.data(), d.w.d, w.data(), d.conv.d, d.y.d,
                                                     y.data(), 2, &two, perf, nullptr, 0),
              CUDNN_STATUS_SUCCESS);
    EXPECT_EQ(two, 2);
    EXPECT_EQ(perf[0].status, CUDNN_STATUS_SUCCESS);
    EXPECT_EQ(perf[0].memory, 0u);  // nothing that needs a workspace ran without one
  }
  {
    std::vector<float> dx(g.x_size(), kNaN);
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int n = 0;
    ASSERT_EQ(cudnnFindConvolutionBackwardDataAlgorithmEx(
                  h_, d.w.d, w.data(), d.y.d, dy.data(), d.conv.d, d.x.d, dx.data(),
                  CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, perf, ws.data(), ws.size()),
              CUDNN_STATUS_SUCCESS);
    EXPECT_EQ(n, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT);
    EXPECT_EQ(perf[0].status, CUDNN_STATUS_SUCCESS);
    EXPECT_NEAR(dot(x, dx), dot(forward(g, d, x, w, 1.0f, 0.0f, std::vector<float>(g.y_size())), dy),
                1e-5 * std::fabs(dot(x, dx)));
  }
  {
    std::vector<float> dw(g.w_size(), kNaN);
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int n = 0;
    ASSERT_EQ(cudnnFindConvolutionBackwardFilterAlgorithmEx(
                  h_, d.x.d, x.data(), d.y.d, dy.data(), d.conv.d, d.w.d, dw.data(),
                  CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, perf, ws.data(), ws.size()),
              CUDNN_STATUS_SUCCESS);
    EXPECT_EQ(n, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT);
    EXPECT_EQ(perf[0].status, CUDNN_STATUS_SUCCESS);
    EXPECT_NEAR(dot(w, dw), dot(forward(g, d, x, w, 1.0f, 0.0f, std::vector<float>(g.y_size())), dy),
                1e-5 * std::fabs(dot(w, dw)));
  }
}

TEST_F(Cudnn, UnitStrideGeometrySupportsMoreAlgorithms) {
  const ConvCfg g{1, 3, 6, 7, 4, 1, 3, 3, 1, 1, 1, 1, 1, 1};
  Descs d(g);
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int n = 0;
  ASSERT_EQ(cudnnGetConvolutionForwardAlgorithm_v7(h_, d.x.d, d.w.d, d.conv.d, d.y.d,
                                                   CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf),
            CUDNN_STATUS_SUCCESS);
  const std::vector<float> x = random_vector(g.x_size(), 101), w = random_vector(g.w_size(), 102);
  const std::vector<double> ref = ref_forward(g, x, w);
  int ok = 0;
  for (int i = 0; i < n; ++i) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
    ++ok;
    const std::vector<float> y =
        forward(g, d, x, w, 1.0f, 0.0f, std::vector<float>(g.y_size(), kNaN), perf[i].algo);
    for (std::size_t j = 0; j < y.size(); ++j) expect_close(y[j], ref[j], 1e-5, "y", j);
  }
  EXPECT_GE(ok, 6);  // the FFT and Winograd algorithms too
}

TEST_F(Cudnn, ArgumentChecks) {
  const ConvCfg g = odd_cfg();
  Descs d(g);
  std::vector<float> x(g.x_size()), w(g.w_size()), y(g.y_size());
  const float one = 1.0f, zero = 0.0f;
  const auto fwd = [&](cudnnHandle_t h, cudnnTensorDescriptor_t xd, cudnnFilterDescriptor_t wd,
                       cudnnTensorDescriptor_t yd, cudnnConvolutionFwdAlgo_t algo, void* ws,
                       std::size_t bytes) {
    return cudnnConvolutionForward(h, &one, xd, x.data(), wd, w.data(), d.conv.d, algo, ws, bytes, &zero, yd,
                                   y.data());
  };
  EXPECT_EQ(fwd(h_, d.x.d, d.w.d, d.y.d, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0),
            CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(fwd(nullptr, d.x.d, d.w.d, d.y.d, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0),
            CUDNN_STATUS_BAD_PARAM);
  Tensor x_bad(g.N, g.C + 2, g.H, g.W);  // channels != filter channels * groups
  EXPECT_EQ(fwd(h_, x_bad.d, d.w.d, d.y.d, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0),
            CUDNN_STATUS_BAD_PARAM);
  Tensor y_bad(g.N, g.K, g.P() + 1, g.Q());
  EXPECT_EQ(fwd(h_, d.x.d, d.w.d, y_bad.d, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0),
            CUDNN_STATUS_BAD_PARAM);
  Filter w_bad(g.K + 1, g.Cg(), g.R, g.S);  // 7 outputs, 2 groups
  EXPECT_EQ(fwd(h_, d.x.d, w_bad.d, d.y.d, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0),
            CUDNN_STATUS_BAD_PARAM);
  Tensor unset;
  EXPECT_EQ(fwd(h_, unset.d, d.w.d, d.y.d, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0),
            CUDNN_STATUS_BAD_PARAM);
  // A workspace smaller than the algorithm needs.
  std::size_t need = 0;
  ASSERT_EQ(cudnnGetConvolutionForwardWorkspaceSize(h_, d.x.d, d.w.d, d.conv.d, d.y.d,
                                                    CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, &need),
            CUDNN_STATUS_SUCCESS);
  ASSERT_GT(need, 0u);
  std::vector<unsigned char> ws(need);
  EXPECT_EQ(
      fwd(h_, d.x.d, d.w.d, d.y.d, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, ws.data(), need - 1),
      CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(fwd(h_, d.x.d, d.w.d, d.y.d, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, ws.data(), need),
            CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(fwd(h_, d.x.d, d.w.d, d.y.d, CUDNN_CONVOLUTION_FWD_ALGO_FFT, ws.data(), need),
            CUDNN_STATUS_NOT_SUPPORTED);  // stride 2
  EXPECT_EQ(fwd(h_, d.x.d, d.w.d, d.y.d, static_cast<cudnnConvolutionFwdAlgo_t>(99), nullptr, 0),
            CUDNN_STATUS_BAD_PARAM);
  // Descriptor setters.
  cudnnTensorDescriptor_t t = nullptr;
  ASSERT_EQ(cudnnCreateTensorDescriptor(&t), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(cudnnSetTensor4dDescriptor(t, CUDNN_TENSOR_NCHW, CUDNN_DATA_DOUBLE, 1, 1, 1, 1),
            CUDNN_STATUS_NOT_SUPPORTED);
  EXPECT_EQ(cudnnSetTensor4dDescriptor(t, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 0, 1, 1, 1),
            CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(cudnnSetTensor4dDescriptor(t, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 65536, 65536, 1, 1),
            CUDNN_STATUS_NOT_SUPPORTED);  // above 2^31 - 1 elements
  ASSERT_EQ(cudnnDestroyTensorDescriptor(t), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(cudnnSetTensor4dDescriptor(t, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 1, 1, 1),
            CUDNN_STATUS_BAD_PARAM);  // destroyed
  EXPECT_EQ(cudnnDestroyTensorDescriptor(nullptr), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(cudnnSetConvolutionGroupCount(d.conv.d, 0), CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(
      cudnnSetConvolution2dDescriptor(d.conv.d, 0, 0, 0, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
      CUDNN_STATUS_BAD_PARAM);
  // Heuristics honor requestedAlgoCount.
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int n = -1;
  ASSERT_EQ(cudnnGetConvolutionForwardAlgorithm_v7(h_, d.x.d, d.w.d, d.conv.d, d.y.d, 2, &n, perf),
            CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(n, 2);
  EXPECT_EQ(cudnnGetConvolutionForwardAlgorithm_v7(h_, d.x.d, d.w.d, d.conv.d, d.y.d, 0, &n, perf),
            CUDNN_STATUS_BAD_PARAM);
  // Handle.
  cudaStream_t s = reinterpret_cast<cudaStream_t>(0x42), got = nullptr;
  ASSERT_EQ(cudnnSetStream(h_, s), CUDNN_STATUS_SUCCESS);
  ASSERT_EQ(cudnnGetStream(h_, &got), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(got, s);
  EXPECT_EQ(cudnnSetStream(nullptr, s), CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(cudnnGetVersion(), static_cast<std::size_t>(CUDNN_VERSION));
  EXPECT_STREQ(cudnnGetErrorString(CUDNN_STATUS_BAD_PARAM), "CUDNN_STATUS_BAD_PARAM");
}

// ---- batch normalization ----

// A batch-norm problem: x (N, C, H, W), packed NCHW unless told, and the parameters of its mode.
struct BnCfg {
  int N, C, H, W;
  cudnnBatchNormMode_t mode;
  bool spatial() const { return mode != CUDNN_BATCHNORM_PER_ACTIVATION; }
  int params() const { return spatial() ? C : C * H * W; }
  int count() const { return spatial() ? N * H * W : N; }  // values per parameter
  std::size_t size() const { return static_cast<std::size_t>(N) * C * H * W; }
  // Parameter of packed NCHW element i.
  int param(std::size_t i) const {
    const int chw = static_cast<int>(i % (static_cast<std::size_t>(C) * H * W));
    return spatial() ? chw / (H * W) : chw;
  }
};

std::vector<BnCfg> bn_cfgs() {
  return {{3, 5, 7, 9, CUDNN_BATCHNORM_SPATIAL},
          {4, 3, 5, 2, CUDNN_BATCHNORM_PER_ACTIVATION},
          {6, 8, 1, 1, CUDNN_BATCHNORM_SPATIAL_PERSISTENT}};
}

// The double reference, on packed NCHW data: each parameter's mean and biased variance.
void ref_bn_stats(const BnCfg& g, const std::vector<float>& x, std::vector<double>& mean,
                  std::vector<double>& var) {
  mean.assign(g.params(), 0.0);
  var.assign(g.params(), 0.0);
  for (std::size_t i = 0; i < x.size(); ++i) mean[g.param(i)] += x[i];
  for (double& m : mean) m /= g.count();
  for (std::size_t i = 0; i < x.size(); ++i)
    var[g.param(i)] += (x[i] - mean[g.param(i)]) * (x[i] - mean[g.param(i)]);
  for (double& v : var) v /= g.count();
}

// y = scale * (x - mean) / sqrt(var + eps) + bias (no blending).
std::vector<double> ref_bn_forward(const BnCfg& g, const std::vector<float>& x,
                                   const std::vector<double>& mean, const std::vector<double>& var,
                                   const std::vector<float>& scale, const std::vector<float>& bias,
                                   double eps) {
  std::vector<double> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const int j = g.param(i);
    y[i] = scale[j] * (x[i] - mean[j]) / std::sqrt(var[j] + eps) + bias[j];
  }
  return y;
}

class CudnnBatchNorm : public Cudnn {
 protected:
  // Derived parameter descriptor of x for g's mode.
  void derive(const BnCfg& g, const Tensor& x, Tensor& p) {
    ASSERT_EQ(cudnnDeriveBNTensorDescriptor(p.d, x.d, g.mode), CUDNN_STATUS_SUCCESS);
  }
};

TEST_F(CudnnBatchNorm, DeriveDescriptor) {
  Tensor x(3, 5, 7, 9, CUDNN_TENSOR_NHWC), p;
  const cudnnBatchNormMode_t modes[] = {CUDNN_BATCHNORM_SPATIAL, CUDNN_BATCHNORM_SPATIAL_PERSISTENT,
                                        CUDNN_BATCHNORM_PER_ACTIVATION};
  for (cudnnBatchNormMode_t mode : modes) {
    ASSERT_EQ(cudnnDeriveBNTensorDescriptor(p.d, x.d, mode), CUDNN_STATUS_SUCCESS);
    cudnnDataType_t t = CUDNN_DATA_DOUBLE;
    int n = 0, c = 0, h = 0, w = 0, ns = 0, cs = 0, hs = 0, ws = 0;
    ASSERT_EQ(cudnnGetTensor4dDescriptor(p.d, &t, &n, &c, &h, &w, &ns, &cs, &hs, &ws), CUDNN_STATUS_SUCCESS);
    const bool spatial = mode != CUDNN_BATCHNORM_PER_ACTIVATION;
    EXPECT_EQ(t, CUDNN_DATA_FLOAT);
    EXPECT_EQ(n, 1);
    EXPECT_EQ(c, 5);
    EXPECT_EQ(h, spatial ? 1 : 7);
    EXPECT_EQ(w, spatial ? 1 : 9);
    EXPECT_EQ(ws, 1);  // packed NCHW whatever x's layout
    EXPECT_EQ(hs, w);
    EXPECT_EQ(cs, h * w);
    EXPECT_EQ(ns, c * h * w);
  }
  EXPECT_EQ(cudnnDeriveBNTensorDescriptor(p.d, x.d, static_cast<cudnnBatchNormMode_t>(7)),
            CUDNN_STATUS_BAD_PARAM);
  Tensor unset;
  EXPECT_EQ(cudnnDeriveBNTensorDescriptor(p.d, unset.d, CUDNN_BATCHNORM_SPATIAL), CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(cudnnDeriveBNTensorDescriptor(nullptr, x.d, CUDNN_BATCHNORM_SPATIAL), CUDNN_STATUS_BAD_PARAM);
}

TEST_F(CudnnBatchNorm, ForwardTrainingMatchesReference) {
  unsigned seed = 200;
  for (const BnCfg& g : bn_cfgs()) {
    Tensor xd(g.N, g.C, g.H, g.W), pd;
    derive(g, xd, pd);
    std::vector<float> x = random_vector(g.size(), seed++);
    for (float& v : x) v = 3.0f * v + 0.5f;  // a mean and variance far from 0 and 1
    const std::vector<float> scale = random_vector(g.params(), seed++),
                             bias = random_vector(g.params(), seed++);
    std::vector<float> rm = random_vector(g.params(), seed++), rv = random_vector(g.params(), seed++);
    for (float& v : rv) v = std::fabs(v) + 0.5f;
    const std::vector<float> rm0 = rm, rv0 = rv;
    std::vector<float> y(g.size(), kNaN), save_mean(g.params(), kNaN), save_invstd(g.params(), kNaN);
    const double eps = 1e-3, factor = 0.3;
    const float one = 1.0f, zero = 0.0f;
    ASSERT_EQ(cudnnBatchNormalizationForwardTraining(h_, g.mode, &one, &zero, xd.d, x.data(), xd.d, y.data(),
                                                     pd.d, scale.data(), bias.data(), factor, rm.data(),
                                                     rv.data(), eps, save_mean.data(), save_invstd.data()),
              CUDNN_STATUS_SUCCESS);
    std::vector<double> mean, var;
    ref_bn_stats(g, x, mean, var);
    const std::vector<double> want = ref_bn_forward(g, x, mean, var, scale, bias, eps);
    for (std::size_t i = 0; i < y.size(); ++i) expect_close(y[i], want[i], 1e-5, "y", i);
    const double unbiased = static_cast<double>(g.count()) / (g.count() - 1);
    for (int j = 0; j < g.params(); ++j) {
      expect_close(save_mean[j], mean[j], 1e-6, "saved mean", j);
      expect_close(save_invstd[j], 1.0 / std::sqrt(var[j] + eps), 1e-6, "saved inverse std", j);
      expect_close(rm[j], (1 - factor) * rm0[j] + factor * mean[j], 1e-6, "running mean", j);
      expect_close(rv[j], (1 - factor) * rv0[j] + factor * var[j] * unbiased, 1e-6, "running variance", j);
    }
    // alpha / beta blend into y; no running or saved outputs (both null each).
    const std::vector<float> y0 = random_vector(g.size(), seed++);
    std::vector<float> y2 = y0;
    const float alpha = 0.75f, beta = -1.5f;
    ASSERT_EQ(cudnnBatchNormalizationForwardTraining(h_, g.mode, &alpha, &beta, xd.d, x.data(), xd.d,
                                                     y2.data(), pd.d, scale.data(), bias.data(), factor,
                                                     nullptr, nullptr, eps, nullptr, nullptr),
              CUDNN_STATUS_SUCCESS);
    for (std::size_t i = 0; i < y2.size(); ++i)
      expect_close(y2[i], 0.75 * want[i] - 1.5 * y0[i], 1e-5, "y (beta)", i);
  }
}

TEST_F(CudnnBatchNorm, CumulativeAverageStartsFromTheBatch) {
  // Factor 1 (the documented first call of a cumulative average) replaces the running stats.
  const BnCfg g{5, 3, 4, 3, CUDNN_BATCHNORM_SPATIAL};
  Tensor xd(g.N, g.C, g.H, g.W), pd;
  derive(g, xd, pd);
  const std::vector<float> x = random_vector(g.size(), 230), scale(g.C, 1.0f), bias(g.C, 0.0f);
  std::vector<float> y(g.size()), rm(g.C, 7.0f), rv(g.C, 9.0f);
  const float one = 1.0f, zero = 0.0f;
  ASSERT_EQ(cudnnBatchNormalizationForwardTraining(h_, g.mode, &one, &zero, xd.d, x.data(), xd.d, y.data(),
                                                   pd.d, scale.data(), bias.data(), 1.0, rm.data(), rv.data(),
                                                   0.0, nullptr, nullptr),
            CUDNN_STATUS_SUCCESS);
  std::vector<double> mean, var;
  ref_bn_stats(g, x, mean, var);
  for (int c = 0; c < g.C; ++c) {
    expect_close(rm[c], mean[c], 1e-6, "running mean", c);
    expect_close(rv[c], var[c] * g.count() / (g.count() - 1), 1e-6, "running variance", c);
  }
}

TEST_F(CudnnBatchNorm, StridedLayouts) {
  // x in NHWC, y in NCHW: each tensor is addressed through its own descriptor.
  const BnCfg g{2, 3, 4, 5, CUDNN_BATCHNORM_SPATIAL};
  Tensor xd(g.N, g.C, g.H, g.W, CUDNN_TENSOR_NHWC), yd(g.N, g.C, g.H, g.W), pd;
  derive(g, xd, pd);
  const std::vector<float> x = random_vector(g.size(), 240);
  const std::vector<float> x_nhwc = to_nhwc(x, g.N, g.C, g.H, g.W);
  const std::vector<float> scale = random_vector(g.C, 241), bias = random_vector(g.C, 242);
  std::vector<float> y(g.size(), kNaN);
  const float one = 1.0f, zero = 0.0f;
  ASSERT_EQ(cudnnBatchNormalizationForwardTraining(h_, g.mode, &one, &zero, xd.d, x_nhwc.data(), yd.d,
                                                   y.data(), pd.d, scale.data(), bias.data(), 0.1, nullptr,
                                                   nullptr, 1e-5, nullptr, nullptr),
            CUDNN_STATUS_SUCCESS);
  std::vector<double> mean, var;
  ref_bn_stats(g, x, mean, var);
  const std::vector<double> want = ref_bn_forward(g, x, mean, var, scale, bias, 1e-5);
  for (std::size_t i = 0; i < y.size(); ++i) expect_close(y[i], want[i], 1e-5, "y", i);
}

TEST_F(CudnnBatchNorm, ForwardInferenceMatchesReference) {
  unsigned seed = 250;
  for (const BnCfg& g : bn_cfgs()) {
    Tensor xd(g.N, g.C, g.H, g.W), pd;
    derive(g, xd, pd);
    const std::vector<float> x = random_vector(g.size(), seed++);
    const std::vector<float> scale = random_vector(g.params(), seed++),
                             bias = random_vector(g.params(), seed++);
    const std::vector<float> mean_f = random_vector(g.params(), seed++);
    std::vector<float> var_f = random_vector(g.params(), seed++);
    for (float& v : var_f) v = std::fabs(v) + 0.25f;
    const std::vector<double> mean(mean_f.begin(), mean_f.end()), var(var_f.begin(), var_f.end());
    const double eps = 1e-2;
    const std::vector<double> want = ref_bn_forward(g, x, mean, var, scale, bias, eps);
    std::vector<float> y(g.size(), kNaN);
    const float one = 1.0f, zero = 0.0f, alpha = 2.0f, beta = 0.5f;
    ASSERT_EQ(
        cudnnBatchNormalizationForwardInference(h_, g.mode, &one, &zero, xd.d, x.data(), xd.d, y.data(), pd.d,
                                                scale.data(), bias.data(), mean_f.data(), var_f.data(), eps),
        CUDNN_STATUS_SUCCESS);
    for (std::size_t i = 0; i < y.size(); ++i) expect_close(y[i], want[i], 1e-5, "y", i);
    const std::vector<float> y0 = y;
    ASSERT_EQ(cudnnBatchNormalizationForwardInference(h_, g.mode, &alpha, &beta, xd.d, x.data(), xd.d,
                                                      y.data(), pd.d, scale.data(), bias.data(),
                                                      mean_f.data(), var_f.data(), eps),
              CUDNN_STATUS_SUCCESS);
    for (std::size_t i = 0; i < y.size(); ++i)
      expect_close(y[i], 2.0 * want[i] + 0.5 * y0[i], 1e-5, "y (beta)", i);
  }
}

// Reference backward (training): dx, dscale, dbias of y = BN(x) for the upstream gradient dy.
void ref_bn_backward(const BnCfg& g, const std::vector<float>& x, const std::vector<float>& dy,
                     const std::vector<float>& scale, double eps, std::vector<double>& dx,
                     std::vector<double>& dscale, std::vector<double>& dbias) {
  std::vector<double> mean, var;
  ref_bn_stats(g, x, mean, var);
  dscale.assign(g.params(), 0.0);
  dbias.assign(g.params(), 0.0);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const int j = g.param(i);
    dbias[j] += dy[i];
    dscale[j] += dy[i] * (x[i] - mean[j]) / std::sqrt(var[j] + eps);
  }
  dx.assign(x.size(), 0.0);
  const double M = g.count();
  for (std::size_t i = 0; i < x.size(); ++i) {
    const int j = g.param(i);
    const double invstd = 1.0 / std::sqrt(var[j] + eps), xhat = (x[i] - mean[j]) * invstd;
    dx[i] = scale[j] * invstd / M * (M * dy[i] - dbias[j] - xhat * dscale[j]);
  }
}

TEST_F(CudnnBatchNorm, BackwardMatchesReference) {
  unsigned seed = 260;
  for (const BnCfg& g : bn_cfgs()) {
    Tensor xd(g.N, g.C, g.H, g.W), pd;
    derive(g, xd, pd);
    std::vector<float> x = random_vector(g.size(), seed++);
    for (float& v : x) v = 2.0f * v - 0.3f;
    const std::vector<float> dy = random_vector(g.size(), seed++), scale = random_vector(g.params(), seed++),
                             bias = random_vector(g.params(), seed++);
    const double eps = 1e-4;
    std::vector<double> want_dx, want_ds, want_db;
    ref_bn_backward(g, x, dy, scale, eps, want_dx, want_ds, want_db);
    // Saved statistics from the forward pass.
    std::vector<float> y(g.size()), save_mean(g.params()), save_invstd(g.params());
    const float one = 1.0f, zero = 0.0f;
    ASSERT_EQ(cudnnBatchNormalizationForwardTraining(h_, g.mode, &one, &zero, xd.d, x.data(), xd.d, y.data(),
                                                     pd.d, scale.data(), bias.data(), 0.1, nullptr, nullptr,
                                                     eps, save_mean.data(), save_invstd.data()),
              CUDNN_STATUS_SUCCESS);
    for (int saved = 0; saved < 2; ++saved) {
      std::vector<float> dx(g.size(), kNaN), ds(g.params(), kNaN), db(g.params(), kNaN);
      ASSERT_EQ(cudnnBatchNormalizationBackward(h_, g.mode, &one, &zero, &one, &zero, xd.d, x.data(), xd.d,
                                                dy.data(), xd.d, dx.data(), pd.d, scale.data(), ds.data(),
                                                db.data(), eps, saved ? save_mean.data() : nullptr,
                                                saved ? save_invstd.data() : nullptr),
                CUDNN_STATUS_SUCCESS);
      for (std::size_t i = 0; i < dx.size(); ++i) expect_close(dx[i], want_dx[i], 1e-5, "dx", i);
      for (int j = 0; j < g.params(); ++j) {
        expect_close(ds[j], want_ds[j], 1e-5, "dscale", j);
        expect_close(db[j], want_db[j], 1e-5, "dbias", j);
      }
    }
    // Separate blending of the data gradient and the parameter gradients.
    const std::vector<float> dx0 = random_vector(g.size(), seed++), ds0 = random_vector(g.params(), seed++),
                             db0 = random_vector(g.params(), seed++);
    std::vector<float> dx = dx0, ds = ds0, db = db0;
    const float a_data = 0.5f, b_data = 2.0f, a_param = -1.0f, b_param = 0.25f;
    ASSERT_EQ(
        cudnnBatchNormalizationBackward(h_, g.mode, &a_data, &b_data, &a_param, &b_param, xd.d, x.data(),
                                        xd.d, dy.data(), xd.d, dx.data(), pd.d, scale.data(), ds.data(),
                                        db.data(), eps, save_mean.data(), save_invstd.data()),
        CUDNN_STATUS_SUCCESS);
    for (std::size_t i = 0; i < dx.size(); ++i)
      expect_close(dx[i], 0.5 * want_dx[i] + 2.0 * dx0[i], 1e-5, "dx", i);
    for (int j = 0; j < g.params(); ++j) {
      expect_close(ds[j], -want_ds[j] + 0.25 * ds0[j], 1e-5, "dscale (beta)", j);
      expect_close(db[j], -want_db[j] + 0.25 * db0[j], 1e-5, "dbias (beta)", j);
    }
  }
}

TEST_F(CudnnBatchNorm, BackwardIsTheGradientOfForward) {
  // Central differences of L = sum(w * y(x, scale, bias)) through the emulated forward (float,
  // so a coarse tolerance), against the emulated backward for dy = w.
  const BnCfg g{3, 2, 2, 3, CUDNN_BATCHNORM_SPATIAL};
  Tensor xd(g.N, g.C, g.H, g.W), pd;
  derive(g, xd, pd);
  std::vector<float> x = random_vector(g.size(), 270), scale = random_vector(g.C, 271),
                     bias = random_vector(g.C, 272);
  const std::vector<float> dy = random_vector(g.size(), 273);
  const double eps = 1e-3;
  const float one = 1.0f, zero = 0.0f;
  const auto loss = [&]() {
    std::vector<float> y(g.size());
    EXPECT_EQ(cudnnBatchNormalizationForwardTraining(h_, g.mode, &one, &zero, xd.d, x.data(), xd.d, y.data(),
                                                     pd.d, scale.data(), bias.data(), 0.0, nullptr, nullptr,
                                                     eps, nullptr, nullptr),
              CUDNN_STATUS_SUCCESS);
    double l = 0;
    for (std::size_t i = 0; i < y.size(); ++i) l += static_cast<double>(dy[i]) * y[i];
    return l;
  };
  std::vector<float> dx(g.size()), ds(g.C), db(g.C);
  ASSERT_EQ(cudnnBatchNormalizationBackward(h_, g.mode, &one, &zero, &one, &zero, xd.d, x.data(), xd.d,
                                            dy.data(), xd.d, dx.data(), pd.d, scale.data(), ds.data(),
                                            db.data(), eps, nullptr, nullptr),
            CUDNN_STATUS_SUCCESS);
  const float h = 1e-2f;
  const auto numeric = [&](float& v) {
    const float v0 = v;
    v = v0 + h;
    const double up = loss();
    v = v0 - h;
    const double down = loss();
    v = v0;
    return (up - down) / (2.0 * h);
  };
  for (std::size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(dx[i], numeric(x[i]), 2e-3) << "dx at " << i;
  for (int c = 0; c < g.C; ++c) {
    EXPECT_NEAR(ds[c], numeric(scale[c]), 2e-3) << "dscale at " << c;
    EXPECT_NEAR(db[c], numeric(bias[c]), 2e-3) << "dbias at " << c;
  }
}

TEST_F(CudnnBatchNorm, ArgumentChecks) {
  const BnCfg g{2, 3, 4, 5, CUDNN_BATCHNORM_SPATIAL};
  Tensor xd(g.N, g.C, g.H, g.W), pd, pa, y_bad(g.N, g.C, g.H, g.W + 1), p_bad(1, g.C + 1, 1, 1);
  derive(g, xd, pd);
  ASSERT_EQ(cudnnDeriveBNTensorDescriptor(pa.d, xd.d, CUDNN_BATCHNORM_PER_ACTIVATION), CUDNN_STATUS_SUCCESS);
  const std::vector<float> x = random_vector(g.size(), 280), s(g.C, 1.0f), b(g.C, 0.0f);
  std::vector<float> y(g.size()), rm(g.C, 0.0f), rv(g.C, 1.0f), sm(g.C), si(g.C), dx(g.size()), ds(g.C),
      db(g.C);
  const float one = 1.0f, zero = 0.0f;
  const auto train = [&](cudnnBatchNormMode_t mode, cudnnTensorDescriptor_t yd, cudnnTensorDescriptor_t p,
                         double eps, float* run_mean, float* run_var, float* save_mean, float* save_invstd) {
    return cudnnBatchNormalizationForwardTraining(h_, mode, &one, &zero, xd.d, x.data(), yd, y.data(), p,
                                                  s.data(), b.data(), 0.1, run_mean, run_var, eps, save_mean,
                                                  save_invstd);
  };
  const cudnnBatchNormMode_t S = CUDNN_BATCHNORM_SPATIAL;
  EXPECT_EQ(train(S, xd.d, pd.d, 1e-5, rm.data(), rv.data(), sm.data(), si.data()), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(train(S, xd.d, pd.d, 0.0, rm.data(), rv.data(), sm.data(), si.data()), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(train(S, xd.d, pd.d, -1e-5, rm.data(), rv.data(), sm.data(), si.data()), CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(train(S, xd.d, pd.d, 1e-5, rm.data(), nullptr, sm.data(), si.data()), CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(train(S, xd.d, pd.d, 1e-5, rm.data(), rv.data(), nullptr, si.data()), CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(train(S, y_bad.d, pd.d, 1e-5, nullptr, nullptr, nullptr, nullptr), CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(train(S, xd.d, p_bad.d, 1e-5, nullptr, nullptr, nullptr, nullptr), CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(train(S, xd.d, pa.d, 1e-5, nullptr, nullptr, nullptr, nullptr),
            CUDNN_STATUS_BAD_PARAM);  // mode's dims
  EXPECT_EQ(train(static_cast<cudnnBatchNormMode_t>(9), xd.d, pd.d, 1e-5, nullptr, nullptr, nullptr, nullptr),
            CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(cudnnBatchNormalizationForwardTraining(nullptr, S, &one, &zero, xd.d, x.data(), xd.d, y.data(),
                                                   pd.d, s.data(), b.data(), 0.1, nullptr, nullptr, 1e-5,
                                                   nullptr, nullptr),
            CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(cudnnBatchNormalizationForwardTraining(h_, S, nullptr, &zero, xd.d, x.data(), xd.d, y.data(),
                                                   pd.d, s.data(), b.data(), 0.1, nullptr, nullptr, 1e-5,
                                                   nullptr, nullptr),
            CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(cudnnBatchNormalizationForwardTraining(h_, S, &one, &zero, xd.d, x.data(), xd.d, y.data(), pd.d,
                                                   s.data(), nullptr, 0.1, nullptr, nullptr, 1e-5, nullptr,
                                                   nullptr),
            CUDNN_STATUS_BAD_PARAM);
  // One value per channel: no unbiased variance.
  Tensor one_value(1, g.C, 1, 1), p1;
  ASSERT_EQ(cudnnDeriveBNTensorDescriptor(p1.d, one_value.d, S), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(cudnnBatchNormalizationForwardTraining(h_, S, &one, &zero, one_value.d, x.data(), one_value.d,
                                                   y.data(), p1.d, s.data(), b.data(), 0.1, nullptr, nullptr,
                                                   1e-5, nullptr, nullptr),
            CUDNN_STATUS_BAD_PARAM);
  // Inference.
  EXPECT_EQ(cudnnBatchNormalizationForwardInference(h_, S, &one, &zero, xd.d, x.data(), xd.d, y.data(), pd.d,
                                                    s.data(), b.data(), rm.data(), rv.data(), 1e-5),
            CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(cudnnBatchNormalizationForwardInference(h_, S, &one, &zero, xd.d, x.data(), xd.d, y.data(), pd.d,
                                                    s.data(), b.data(), rm.data(), nullptr, 1e-5),
            CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(cudnnBatchNormalizationForwardInference(h_, S, &one, &zero, xd.d, x.data(), y_bad.d, y.data(),
                                                    pd.d, s.data(), b.data(), rm.data(), rv.data(), 1e-5),
            CUDNN_STATUS_BAD_PARAM);
  // Backward.
  const auto backward = [&](cudnnTensorDescriptor_t dxd, const float* save_mean, const float* save_invstd,
                            float* dscale) {
    return cudnnBatchNormalizationBackward(h_, S, &one, &zero, &one, &zero, xd.d, x.data(), xd.d, y.data(),
                                           dxd, dx.data(), pd.d, s.data(), dscale, db.data(), 1e-5, save_mean,
                                           save_invstd);
  };
  EXPECT_EQ(backward(xd.d, sm.data(), si.data(), ds.data()), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(backward(xd.d, nullptr, nullptr, ds.data()), CUDNN_STATUS_SUCCESS);
  EXPECT_EQ(backward(xd.d, sm.data(), nullptr, ds.data()), CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(backward(xd.d, sm.data(), si.data(), nullptr), CUDNN_STATUS_BAD_PARAM);
  EXPECT_EQ(backward(y_bad.d, sm.data(), si.data(), ds.data()), CUDNN_STATUS_BAD_PARAM);
}

TEST_F(CudnnBatchNorm, BetaZeroDoesNotReadTheOutputs) {
  const BnCfg g{4, 2, 3, 3, CUDNN_BATCHNORM_PER_ACTIVATION};
  Tensor xd(g.N, g.C, g.H, g.W), pd;
  derive(g, xd, pd);
  const std::vector<float> x = random_vector(g.size(), 290), dy = random_vector(g.size(), 291),
                           s = random_vector(g.params(), 292), b = random_vector(g.params(), 293);
  std::vector<float> y(g.size(), kNaN), dx(g.size(), kNaN), ds(g.params(), kNaN), db(g.params(), kNaN);
  const float one = 1.0f, zero = 0.0f;
  ASSERT_EQ(cudnnBatchNormalizationForwardTraining(h_, g.mode, &one, &zero, xd.d, x.data(), xd.d, y.data(),
                                                   pd.d, s.data(), b.data(), 0.1, nullptr, nullptr, 1e-5,
                                                   nullptr, nullptr),
            CUDNN_STATUS_SUCCESS);
  ASSERT_EQ(cudnnBatchNormalizationBackward(h_, g.mode, &one, &zero, &one, &zero, xd.d, x.data(), xd.d,
                                            dy.data(), xd.d, dx.data(), pd.d, s.data(), ds.data(), db.data(),
                                            1e-5, nullptr, nullptr),
            CUDNN_STATUS_SUCCESS);
  for (float v : y) EXPECT_TRUE(std::isfinite(v));
  for (float v : dx) EXPECT_TRUE(std::isfinite(v));
  for (int j = 0; j < g.params(); ++j) EXPECT_TRUE(std::isfinite(ds[j]) && std::isfinite(db[j])) << j;
}

// ============================== capture ==============================

// A non-blocking stream with a cuDNN and a cuBLAS handle bound to it, destroyed at scope exit.
struct StreamLibraries {
  cudaStream_t s = nullptr;
  cudnnHandle_t dnn = nullptr;
  cublasHandle_t blas = nullptr;
  bool ok = false;
  StreamLibraries() {
    ok = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess &&
         cudnnCreate(&dnn) == CUDNN_STATUS_SUCCESS && cudnnSetStream(dnn, s) == CUDNN_STATUS_SUCCESS &&
         cublasCreate(&blas) == CUBLAS_STATUS_SUCCESS && cublasSetStream(blas, s) == CUBLAS_STATUS_SUCCESS;
  }
  ~StreamLibraries() {
    if (dnn) EXPECT_EQ(cudnnDestroy(dnn), CUDNN_STATUS_SUCCESS);
    if (blas) EXPECT_EQ(cublasDestroy(blas), CUBLAS_STATUS_SUCCESS);
    if (s) EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
  }
  StreamLibraries(const StreamLibraries&) = delete;
  StreamLibraries& operator=(const StreamLibraries&) = delete;
};

// A cuDNN convolution and a cuBLAS product captured into a CUDA graph: nothing is computed at
// the capture, each launch computes from the inputs of the moment, and the descriptors (and the
// host scalars) the calls were given may be gone by then.
TEST(LibraryCapture, ConvolutionAndGemmReplayFromAGraph) {
  const StreamLibraries libs;
  ASSERT_TRUE(libs.ok);
  cudaStream_t s = libs.s;
  cudnnHandle_t dnn = libs.dnn;
  cublasHandle_t blas = libs.blas;
  const ConvCfg g = odd_cfg();
  const int m = 5, n = 4, k = 6;
  const auto device = [](std::size_t count) {
    void* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, count * sizeof(float)), cudaSuccess);  // poisoned: NaN until written
    return static_cast<float*>(p);
  };
  const auto pinned = [](std::size_t count) {
    void* p = nullptr;
    EXPECT_EQ(cudaMallocHost(&p, count * sizeof(float)), cudaSuccess);
    std::fill_n(static_cast<float*>(p), count, -1.0f);
    return static_cast<float*>(p);
  };
  float *x = device(g.x_size()), *w = device(g.w_size()), *y = device(g.y_size());
  float *A = device(m * k), *B = device(k * n), *C = device(m * n);
  float *hy = pinned(g.y_size()), *hc = pinned(m * n);
  auto d = std::make_unique<Descs>(g);
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int found = 0;
  ASSERT_EQ(cudnnGetConvolutionForwardAlgorithm_v7(dnn, d->x.d, d->w.d, d->conv.d, d->y.d, 1, &found, perf),
            CUDNN_STATUS_SUCCESS);
  std::size_t bytes = 0;
  ASSERT_EQ(
      cudnnGetConvolutionForwardWorkspaceSize(dnn, d->x.d, d->w.d, d->conv.d, d->y.d, perf[0].algo, &bytes),
      CUDNN_STATUS_SUCCESS);
  void* ws = nullptr;
  ASSERT_EQ(cudaMalloc(&ws, std::max<std::size_t>(bytes, 1)), cudaSuccess);

  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  auto one = std::make_unique<float>(1.0f), zero = std::make_unique<float>(0.0f);
  ASSERT_EQ((cudnnConvolutionForward)(dnn, one.get(), d->x.d, x, d->w.d, w, d->conv.d, perf[0].algo, ws,
                                      bytes, zero.get(), d->y.d, y),
            CUDNN_STATUS_SUCCESS);
  d.reset();  // the descriptors, destroyed right after the call
  float alpha = 2.0f, beta = 0.0f;
  ASSERT_EQ(cublasSgemm_v2(blas, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, A, m, B, k, &beta, C, m),
            CUBLAS_STATUS_SUCCESS);
  alpha = 100.0f;  // host scalars are read at the call
  one.reset();
  zero.reset();
  ASSERT_EQ(cudaMemcpyAsync(hy, y, g.y_size() * sizeof(float), cudaMemcpyDeviceToHost, s), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(hc, C, m * n * sizeof(float), cudaMemcpyDeviceToHost, s), cudaSuccess);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  std::vector<float> back(g.y_size());
  ASSERT_EQ(cudaMemcpy(back.data(), y, back.size() * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  for (float v : back) ASSERT_TRUE(std::isnan(v)) << "the convolution ran at the capture";
  ASSERT_EQ(cudaMemcpy(back.data(), C, m * n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  for (int i = 0; i < m * n; ++i) ASSERT_TRUE(std::isnan(back[i])) << "the product ran at the capture";
  EXPECT_EQ(hy[0], -1.0f);
  EXPECT_EQ(hc[0], -1.0f);

  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (unsigned rep = 0; rep < 3; ++rep) {
    const auto hx = random_vector(g.x_size(), 500 + rep), hw = random_vector(g.w_size(), 510 + rep);
    const auto ha = random_vector(m * k, 520 + rep), hb = random_vector(k * n, 530 + rep);
    ASSERT_EQ(cudaMemcpy(x, hx.data(), hx.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(w, hw.data(), hw.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(A, ha.data(), ha.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(B, hb.data(), hb.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    const std::vector<double> want_y = ref_forward(g, hx, hw);
    for (std::size_t i = 0; i < want_y.size(); ++i) expect_close(hy[i], want_y[i], 1e-5, "y", i);
    std::vector<double> want_c;
    const std::vector<float> c0(m * n, 0.0f);
    ref_gemm(false, false, m, n, k, 2.0, ha.data(), m, hb.data(), k, 0.0, want_c, c0.data(), m);
    for (int i = 0; i < m * n; ++i) expect_close(hc[i], want_c[i], 1e-5, "C", i);
  }
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  for (float* p : {x, w, y, A, B, C}) EXPECT_EQ(cudaFree(p), cudaSuccess);
  EXPECT_EQ(cudaFree(ws), cudaSuccess);
  EXPECT_EQ(cudaFreeHost(hy), cudaSuccess);
  EXPECT_EQ(cudaFreeHost(hc), cudaSuccess);
}

// A stream that takes no work (its capture invalidated) fails the libraries' calls.
TEST(LibraryCapture, InvalidatedCaptureFailsLibraryCalls) {
  const StreamLibraries libs;
  ASSERT_TRUE(libs.ok);
  cudaStream_t s = libs.s;
  cudnnHandle_t dnn = libs.dnn;
  cublasHandle_t blas = libs.blas;
  void* p = nullptr;
  ASSERT_EQ(cudaMalloc(&p, 64 * sizeof(float)), cudaSuccess);
  auto* f = static_cast<float*>(p);
  Tensor t(1, 4, 4, 4);
  const float one = 1.0f;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ((cudnnAddTensor)(dnn, &one, t.d, f, &one, t.d, f), CUDNN_STATUS_EXECUTION_FAILED_CUDART);
  EXPECT_EQ(cublasSgemm_v2(blas, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &one, f, 8, f, 8, &one, f, 8),
            CUBLAS_STATUS_EXECUTION_FAILED);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);
  (void)cudaGetLastError();
  EXPECT_EQ(cudaFree(p), cudaSuccess);
}

}  // namespace
