// CPU emulation of the part of the cuDNN 9 C API that cugrad uses (cuda/conv.cpp,
// cuda/cudnn_handle.cpp, host/runtime/error.cpp) and that bench/batch_norm_bench.cpp compares
// against (the legacy batch normalization API), linked in place of libcudnn when the GPU
// code paths run on the CPU.
//
// Emulation model (shared with the rest of tests/emu): "device pointers" are host pointers.
// Every computing call (the convolutions, their bias sums, cudnnAddTensor, the batch-norm calls,
// cudnnBackendExecute) validates its arguments and returns its status at the call, and queues
// the computation on the handle's stream (tests/emu/emu_state.h: run at once unless the emulator
// is asynchronous, CUGRAD_EMU_ASYNC=1; recorded into the graph while the stream captures) as a
// closure that owns what it needs by value: the geometry resolved from the descriptors (which
// the caller may destroy right after the call), the host scalars, the math precision, the
// pointers. cudnnFind*AlgorithmEx wait for the stream and compute in the calling thread (they
// time their runs; they are not to be captured). Only CUDNN_DATA_FLOAT tensors are supported (the
// other data types are refused with CUDNN_STATUS_NOT_SUPPORTED when a descriptor is set), and
// only 4-D descriptors exist. Every result is a double sum, scaled by alpha/beta in double and
// rounded to float once, and every algorithm computes the same values. The math type decides
// how the convolution's two inputs reach the multiplier, as on a GPU with tensor cores (the
// runtime emulation reports sm_90): CUDNN_FMA_MATH exactly (strict float32);
// CUDNN_DEFAULT_MATH and CUDNN_TENSOR_OP_MATH rounded to TF32 (10 mantissa bits, round to
// nearest even); CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION rounded to half precision. The
// environment's NVIDIA_TF32_OVERRIDE=0 (read on every call) turns the TF32 rounding off. Bias
// gradients and cudnnAddTensor are always exact.
//
// Semantics, as cuDNN documents them:
//   forward          y  = alpha * conv(x, w) + beta * y
//   backward data    dx = alpha * conv^T(dy, w) + beta * dx
//   backward filter  dw = alpha * dW(x, dy) + beta * dw
//   backward bias    db[c] = alpha * sum_{n,h,w} dy[n,c,h,w] + beta * db[c]
//   add tensor       C  = alpha * A + beta * C, A broadcast along its dimensions of size 1
// with groups, padding, stride, dilation, CUDNN_CONVOLUTION (flipped filter) or
// CUDNN_CROSS_CORRELATION, and the strides stored in the descriptors (NCHW, NHWC, or explicit
// strides from cudnnSetTensor4dDescriptorEx). When beta == 0 the output is never read (it may
// hold NaN).
//
// Algorithms: each direction reports every enumerant of its algorithm enum. Some are always
// supported, some only for some geometries (FFT*: stride 1 and dilation 1; WINOGRAD: also a 3x3
// filter and one group), some never (status CUDNN_STATUS_NOT_SUPPORTED in the perf results, and
// from the workspace query and the convolution call). Some need a workspace (a modest size, or
// an im2col-sized one for FWD_ALGO_GEMM, or a larger one for the FFT algorithms), others none;
// a call given less workspace than its algorithm needs (or a null workspace with a nonzero
// need) fails with CUDNN_STATUS_BAD_PARAM, so that under-allocation is loud rather than
// silently skipped. The needed bytes of the workspace are overwritten on every call (a pattern
// fill), as real scratch use would, so that a too-small allocation shows under ASan/valgrind.
//
// Batch normalization (cudnnDeriveBNTensorDescriptor, cudnnBatchNormalizationForwardTraining,
// ...ForwardInference, ...Backward), as cuDNN documents it. The parameter tensors (scale, bias,
// running / saved mean and variance, their gradients) are 1xCx1x1 for CUDNN_BATCHNORM_SPATIAL
// and CUDNN_BATCHNORM_SPATIAL_PERSISTENT (statistics over N, H, W: M = N*H*W values each) and
// 1xCxHxW for CUDNN_BATCHNORM_PER_ACTIVATION (statistics over N: M = N), laid out by their
// descriptor. With mean and var the batch's mean and biased variance of each parameter's M
// values, and invstd = 1 / sqrt(var + epsilon):
//   training   y = alpha * (scale * (x - mean) * invstd + bias) + beta * y;
//              runningMean = (1 - f) * runningMean + f * mean,
//              runningVariance = (1 - f) * runningVariance + f * var * M / (M - 1) (unbiased),
//              f = exponentialAverageFactor (both running pointers null: no update);
//              resultSaveMean = mean, resultSaveInvVariance = invstd (both null: not saved)
//   inference  y = alpha * (scale * (x - estimatedMean) / sqrt(estimatedVariance + epsilon)
//                  + bias) + beta * y
//   backward   with xhat = (x - mean) * invstd (mean and invstd the saved ones, or recomputed
//              from x when both saved pointers are null):
//              dx = alphaDataDiff * scale * invstd / M * (M * dy - sum(dy) - xhat * sum(dy * xhat))
//                   + betaDataDiff * dx,
//              dScale = alphaParamDiff * sum(dy * xhat) + betaParamDiff * dScale,
//              dBias = alphaParamDiff * sum(dy) + betaParamDiff * dBias.
// Sums are over each parameter's M values, in double; each output is rounded to float once,
// and an output whose beta is 0 is never read. x, y, dy and dx may have different strides.
// CUDNN_STATUS_BAD_PARAM for what cuDNN documents: a null handle, scalar or required pointer,
// exactly one of the two running (or saved) pointers null, epsilon < CUDNN_BN_MIN_EPSILON (or
// NaN), an unknown mode, x / y / dy / dx dims that differ, parameter dims other than the
// mode's; and (the emulation's own strictness) M < 2 in training, where the unbiased variance
// does not exist.
//
// Argument checking: a null or unknown (never created, or destroyed) handle or descriptor, a
// descriptor that was never set, a null data pointer or scalar, or shapes that do not agree
// (x channels != filter channels * groups, filter count not a multiple of groups, y dims not
// the computed output dims, a filter larger than the padded input, bias dims that neither
// match nor are 1) give CUDNN_STATUS_BAD_PARAM.
#include <cudnn.h>

#include "tests/emu/emu_math.h"
#include "tests/emu/emu_state.h"
#include "tests/emu/emu_trace.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

namespace {

// A 4-D tensor or filter: dims[0..3] = n, c, h, w (k, c, r, s for a filter) and the stride of
// each dimension in elements.
struct Dims4 {
  bool set = false;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  std::int64_t dims[4] = {0, 0, 0, 0};
  std::int64_t strides[4] = {0, 0, 0, 0};
  std::int64_t numel() const { return dims[0] * dims[1] * dims[2] * dims[3]; }
};

}  // namespace

struct cudnnContext {
  cudaStream_t stream = nullptr;
};

struct cudnnTensorStruct {
  Dims4 d;
};

struct cudnnFilterStruct {
  Dims4 d;
  cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW;
};

struct cudnnConvolutionStruct {
  bool set = false;
  int pad_h = 0, pad_w = 0, stride_h = 1, stride_w = 1, dil_h = 1, dil_w = 1;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  cudnnDataType_t compute_type = CUDNN_DATA_FLOAT;
  int groups = 1;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};

namespace {

// Stream order for the calls that compute in the calling thread (cudnnFind*AlgorithmEx): wait
// for the work queued on the handle's stream (tests/emu/emu_state.h; nothing to wait for unless
// the emulator is asynchronous), so they see their inputs and later work sees their outputs.
void in_stream_order(cudnnHandle_t handle) {
  if (handle != nullptr) cugrad_emu::state::wait_stream(handle->stream);
}

// The other computing calls queue their work on the handle's stream; a stream that takes no
// work (an invalidated capture, the legacy stream during a capture) fails the call as a failed
// kernel launch would.
cudnnStatus_t queue(cudnnHandle_t handle, std::function<void()> op) {
  return cugrad_emu::state::submit(handle->stream, std::move(op)) == cudaSuccess
             ? CUDNN_STATUS_SUCCESS
             : CUDNN_STATUS_EXECUTION_FAILED_CUDART;
}

// ---- object registry: refuses destroyed or made-up handles and descriptors ----

enum class Kind { handle, tensor, filter, convolution };

struct Registry {
  std::mutex mutex;
  std::unordered_map<const void*, Kind> live;
};

Registry& registry() {
  static Registry* const r = new Registry();  // leaked: usable from static destructors
  return *r;
}

bool is_live(const void* p, Kind kind) {
  if (p == nullptr) return false;
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  const auto it = r.live.find(p);
  return it != r.live.end() && it->second == kind;
}

void add_live(const void* p, Kind kind) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.live[p] = kind;
}

// Removes p from the registry; false if it was not a live object of that kind.
bool remove_live(const void* p, Kind kind) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  const auto it = r.live.find(p);
  if (it == r.live.end() || it->second != kind) return false;
  r.live.erase(it);
  return true;
}

template <class T>
cudnnStatus_t create_object(T** out, Kind kind) {
  if (out == nullptr) return CUDNN_STATUS_BAD_PARAM;
  T* p = new (std::nothrow) T();
  if (p == nullptr) return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
  add_live(p, kind);
  *out = p;
  return CUDNN_STATUS_SUCCESS;
}

// Descriptors: destroying null is a no-op, as in cuDNN.
template <class T>
cudnnStatus_t destroy_descriptor(T* p, Kind kind) {
  if (p == nullptr) return CUDNN_STATUS_SUCCESS;
  if (!remove_live(p, kind)) return CUDNN_STATUS_BAD_PARAM;
  delete p;
  return CUDNN_STATUS_SUCCESS;
}

bool tensor_ok(const cudnnTensorStruct* t) { return is_live(t, Kind::tensor) && t->d.set; }
bool filter_ok(const cudnnFilterStruct* f) { return is_live(f, Kind::filter) && f->d.set; }
bool conv_ok(const cudnnConvolutionStruct* c) { return is_live(c, Kind::convolution) && c->set; }

// Float is supported; another valid data type is not; anything else is a bad parameter.
cudnnStatus_t check_data_type(cudnnDataType_t t) {
  if (t == CUDNN_DATA_FLOAT) return CUDNN_STATUS_SUCCESS;
  const int v = static_cast<int>(t);
  return v >= 0 && v <= static_cast<int>(CUDNN_DATA_COMPLEX_FP64) ? CUDNN_STATUS_NOT_SUPPORTED
                                                                  : CUDNN_STATUS_BAD_PARAM;
}

// Checks the dims and data type of a 4-D tensor or filter (strides are the caller's).
cudnnStatus_t check_dims(cudnnDataType_t type, int n, int c, int h, int w) {
  if (n <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM;
  const cudnnStatus_t st = check_data_type(type);
  if (st != CUDNN_STATUS_SUCCESS) return st;
  // cuDNN: a tensor descriptor may describe at most 2^31 - 1 elements.
  const std::int64_t total = std::int64_t{n} * c * h * w;
  if (total > INT_MAX) return CUDNN_STATUS_NOT_SUPPORTED;
  return CUDNN_STATUS_SUCCESS;
}

// Packed strides of (n, c, h, w) in NCHW or NHWC order.
cudnnStatus_t packed_dims(cudnnTensorFormat_t format, cudnnDataType_t type, int n, int c, int h, int w,
                          Dims4* out) {
  if (format == CUDNN_TENSOR_NCHW_VECT_C) return CUDNN_STATUS_NOT_SUPPORTED;
  if (format != CUDNN_TENSOR_NCHW && format != CUDNN_TENSOR_NHWC) return CUDNN_STATUS_BAD_PARAM;
  const cudnnStatus_t st = check_dims(type, n, c, h, w);
  if (st != CUDNN_STATUS_SUCCESS) return st;
  Dims4 d;
  d.set = true;
  d.type = type;
  d.dims[0] = n;
  d.dims[1] = c;
  d.dims[2] = h;
  d.dims[3] = w;
  if (format == CUDNN_TENSOR_NCHW) {
    d.strides[3] = 1;
    d.strides[2] = w;
    d.strides[1] = std::int64_t{h} * w;
    d.strides[0] = std::int64_t{c} * h * w;
  } else {
    d.strides[1] = 1;
    d.strides[3] = c;
    d.strides[2] = std::int64_t{w} * c;
    d.strides[0] = std::int64_t{h} * w * c;
  }
  *out = d;
  return CUDNN_STATUS_SUCCESS;
}

// Calls f(offset, index) for every element of d, index being the packed NCHW position.
template <class F>
void for_each_element(const Dims4& d, F&& f) {
  std::int64_t idx = 0;
  for (std::int64_t a = 0; a < d.dims[0]; ++a)
    for (std::int64_t b = 0; b < d.dims[1]; ++b)
      for (std::int64_t c = 0; c < d.dims[2]; ++c)
        for (std::int64_t e = 0; e < d.dims[3]; ++e, ++idx)
          f(a * d.strides[0] + b * d.strides[1] + c * d.strides[2] + e * d.strides[3], idx);
}

// out[element] = alpha * acc[index] + beta * out[element]; out is not read when beta == 0.
void write_out(const Dims4& d, const std::vector<double>& acc, float alpha_f, float beta_f, float* out) {
  const double alpha = alpha_f, beta = beta_f;
  for_each_element(d, [&](std::int64_t off, std::int64_t idx) {
    out[off] = static_cast<float>(beta_f == 0.0f ? alpha * acc[idx] : alpha * acc[idx] + beta * out[off]);
  });
}

// ---- convolution geometry ----

struct Geo {
  std::int64_t N, C, H, W;   // input
  std::int64_t K, Cg, R, S;  // filter: K outputs, Cg inputs per group, R x S
  std::int64_t P, Q;         // output spatial dims
  std::int64_t G, Kg;        // groups, outputs per group
  std::int64_t pad_h, pad_w, stride_h, stride_w, dil_h, dil_w;
  bool flip;  // CUDNN_CONVOLUTION: the filter is applied flipped
  Dims4 x, w, y;
};

// Output size of one spatial dimension; 0 when the dilated filter exceeds the padded input.
std::int64_t out_size(std::int64_t in, std::int64_t pad, std::int64_t f, std::int64_t stride,
                      std::int64_t dil) {
  const std::int64_t span = (f - 1) * dil + 1, padded = in + 2 * pad;
  return padded < span ? 0 : (padded - span) / stride + 1;
}

// Validates x, w and the convolution (y may be null: not checked) and fills g.
cudnnStatus_t resolve(const cudnnTensorStruct* x, const cudnnFilterStruct* w,
                      const cudnnConvolutionStruct* conv, const cudnnTensorStruct* y, Geo* g) {
  if (!tensor_ok(x) || !filter_ok(w) || !conv_ok(conv)) return CUDNN_STATUS_BAD_PARAM;
  if (y != nullptr && !tensor_ok(y)) return CUDNN_STATUS_BAD_PARAM;
  if (x->d.type != w->d.type || (y != nullptr && y->d.type != x->d.type)) return CUDNN_STATUS_BAD_PARAM;
  Geo r{};
  r.N = x->d.dims[0];
  r.C = x->d.dims[1];
  r.H = x->d.dims[2];
  r.W = x->d.dims[3];
  r.K = w->d.dims[0];
  r.Cg = w->d.dims[1];
  r.R = w->d.dims[2];
  r.S = w->d.dims[3];
  r.G = conv->groups;
  if (r.C != r.Cg * r.G || r.K % r.G != 0) return CUDNN_STATUS_BAD_PARAM;
  r.Kg = r.K / r.G;
  r.pad_h = conv->pad_h;
  r.pad_w = conv->pad_w;
  r.stride_h = conv->stride_h;
  r.stride_w = conv->stride_w;
  r.dil_h = conv->dil_h;
  r.dil_w = conv->dil_w;
  r.flip = conv->mode == CUDNN_CONVOLUTION;
  r.P = out_size(r.H, r.pad_h, r.R, r.stride_h, r.dil_h);
  r.Q = out_size(r.W, r.pad_w, r.S, r.stride_w, r.dil_w);
  if (r.P <= 0 || r.Q <= 0) return CUDNN_STATUS_BAD_PARAM;
  r.x = x->d;
  r.w = w->d;
  if (y != nullptr) {
    const Dims4& yd = y->d;
    if (yd.dims[0] != r.N || yd.dims[1] != r.K || yd.dims[2] != r.P || yd.dims[3] != r.Q)
      return CUDNN_STATUS_BAD_PARAM;
    r.y = yd;
  }
  // Float data computes in float (cuDNN's TRUE_FLOAT_CONFIG); nothing else is emulated.
  if (conv->compute_type != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
  *g = r;
  return CUDNN_STATUS_SUCCESS;
}

// The outputs o in [0, out) whose input position o * stride + off lies in [0, in): [*lo, *hi).
void valid_range(std::int64_t off, std::int64_t stride, std::int64_t in, std::int64_t out, std::int64_t* lo,
                 std::int64_t* hi) {
  const auto ceil_div = [](std::int64_t a, std::int64_t b) { return (a + b - 1) / b; };  // a >= 0, b > 0
  std::int64_t l = off >= 0 ? 0 : ceil_div(-off, stride);
  std::int64_t h = in - off <= 0 ? 0 : ceil_div(in - off, stride);
  h = std::min(h, out);
  l = std::min(l, h);
  *lo = l;
  *hi = h;
}

// One run of taps: a filter element (w_off in memory, w_idx in packed KCRS order) against
// `count` consecutive output columns of one output row and the input elements they read.
// Element i of the run: x at x_off + i * x_step (packed index x_idx + i * x_step_idx), y at
// y_off + i * y_step (packed index y_idx + i).
struct Run {
  std::int64_t w_off, w_idx;
  std::int64_t x_off, x_step, x_idx, x_step_idx;
  std::int64_t y_off, y_step, y_idx;
  std::int64_t count;
};

// Calls f(run) for every run of the convolution, so that every (input, filter, output) triple
// is visited exactly once.
template <class F>
void for_each_run(const Geo& g, F&& f) {
  const std::int64_t* xs = g.x.strides;
  const std::int64_t* ws = g.w.strides;
  const std::int64_t* ys = g.y.strides;
  for (std::int64_t n = 0; n < g.N; ++n)
    for (std::int64_t gi = 0; gi < g.G; ++gi)
      for (std::int64_t kk = 0; kk < g.Kg; ++kk) {
        const std::int64_t k = gi * g.Kg + kk;
        for (std::int64_t cc = 0; cc < g.Cg; ++cc) {
          const std::int64_t c = gi * g.Cg + cc;
          for (std::int64_t r = 0; r < g.R; ++r) {
            const std::int64_t rr = g.flip ? g.R - 1 - r : r;
            std::int64_t p_lo = 0, p_hi = 0;
            valid_range(r * g.dil_h - g.pad_h, g.stride_h, g.H, g.P, &p_lo, &p_hi);
            for (std::int64_t s = 0; s < g.S; ++s) {
              const std::int64_t ss = g.flip ? g.S - 1 - s : s;
              std::int64_t q_lo = 0, q_hi = 0;
              valid_range(s * g.dil_w - g.pad_w, g.stride_w, g.W, g.Q, &q_lo, &q_hi);
              if (q_lo >= q_hi) continue;
              Run run;
              run.w_off = k * ws[0] + cc * ws[1] + rr * ws[2] + ss * ws[3];
              run.w_idx = ((k * g.Cg + cc) * g.R + rr) * g.S + ss;
              run.x_step = g.stride_w * xs[3];
              run.x_step_idx = g.stride_w;
              run.y_step = ys[3];
              run.count = q_hi - q_lo;
              const std::int64_t w0 = q_lo * g.stride_w - g.pad_w + s * g.dil_w;  // input column of q_lo
              for (std::int64_t p = p_lo; p < p_hi; ++p) {
                const std::int64_t h = p * g.stride_h - g.pad_h + r * g.dil_h;
                run.x_off = n * xs[0] + c * xs[1] + h * xs[2] + w0 * xs[3];
                run.x_idx = ((n * g.C + c) * g.H + h) * g.W + w0;
                run.y_off = n * ys[0] + k * ys[1] + p * ys[2] + q_lo * ys[3];
                run.y_idx = ((n * g.K + k) * g.P + p) * g.Q + q_lo;
                f(run);
              }
            }
          }
        }
      }
}

enum class Dir { forward, backward_data, backward_filter };

// How the convolution's inputs reach the multiplier.
enum class Precision { fp32, tf32, fp16 };

using cugrad_emu::to_tf32;

template <Precision P>
double load(const float* p) {
  if constexpr (P == Precision::tf32) return to_tf32(*p);
  if constexpr (P == Precision::fp16) return static_cast<float>(static_cast<_Float16>(*p));
  return *p;
}

Precision precision_of(cudnnMathType_t math) {
  switch (math) {
    case CUDNN_FMA_MATH:
      return Precision::fp32;
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION:
      return Precision::fp16;
    case CUDNN_DEFAULT_MATH:
    case CUDNN_TENSOR_OP_MATH: {
      const char* env = std::getenv("NVIDIA_TF32_OVERRIDE");
      return env != nullptr && std::strcmp(env, "0") == 0 ? Precision::fp32 : Precision::tf32;
    }
  }
  return Precision::fp32;
}

// Runs one direction: the output is y (forward), x (backward data) or w (backward filter).
template <Precision P>
void compute(Dir dir, const Geo& g, float alpha, const float* x, const float* w, const float* y, float beta,
             float* out) {
  switch (dir) {
    case Dir::forward: {
      std::vector<double> acc(static_cast<std::size_t>(g.y.numel()), 0.0);
      for_each_run(g, [&](const Run& u) {
        const double wv = load<P>(w + u.w_off);
        const float* xp = x + u.x_off;
        double* a = acc.data() + u.y_idx;
        for (std::int64_t i = 0; i < u.count; ++i) a[i] += load<P>(xp + i * u.x_step) * wv;
      });
      write_out(g.y, acc, alpha, beta, out);
      break;
    }
    case Dir::backward_data: {
      std::vector<double> acc(static_cast<std::size_t>(g.x.numel()), 0.0);
      for_each_run(g, [&](const Run& u) {
        const double wv = load<P>(w + u.w_off);
        const float* yp = y + u.y_off;
        double* a = acc.data() + u.x_idx;
        for (std::int64_t i = 0; i < u.count; ++i) a[i * u.x_step_idx] += load<P>(yp + i * u.y_step) * wv;
      });
      write_out(g.x, acc, alpha, beta, out);
      break;
    }
    case Dir::backward_filter: {
      std::vector<double> acc(static_cast<std::size_t>(g.w.numel()), 0.0);
      for_each_run(g, [&](const Run& u) {
        const float* xp = x + u.x_off;
        const float* yp = y + u.y_off;
        double sum = 0.0;
        for (std::int64_t i = 0; i < u.count; ++i)
          sum += load<P>(xp + i * u.x_step) * load<P>(yp + i * u.y_step);
        acc[u.w_idx] += sum;
      });
      write_out(g.w, acc, alpha, beta, out);
      break;
    }
  }
}

// ---- algorithms ----

enum class Need { none, small, gemm, fft };
enum class When { always, unit, winograd, never };

struct AlgoInfo {
  int algo;
  Need need;
  When when;
  bool deterministic;
};

// Every enumerant of each algorithm enum, in the emulated heuristics' preference order.
constexpr AlgoInfo kForward[] = {
    {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, Need::small, When::always, true},
    {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, Need::none, When::always, true},
    {CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD, Need::none, When::winograd, true},
    {CUDNN_CONVOLUTION_FWD_ALGO_GEMM, Need::gemm, When::always, true},
    {CUDNN_CONVOLUTION_FWD_ALGO_FFT, Need::fft, When::unit, true},
    {CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING, Need::fft, When::unit, true},
    {CUDNN_CONVOLUTION_FWD_ALGO_DIRECT, Need::none, When::never, true},
    {CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED, Need::none, When::never, true},
};
constexpr AlgoInfo kBackwardData[] = {
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, Need::small, When::always, true},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, Need::none, When::always, false},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD, Need::none, When::winograd, true},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT, Need::fft, When::unit, true},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING, Need::fft, When::unit, true},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED, Need::none, When::never, true},
};
constexpr AlgoInfo kBackwardFilter[] = {
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, Need::small, When::always, true},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, Need::none, When::always, false},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3, Need::small, When::always, false},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT, Need::fft, When::unit, true},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING, Need::fft, When::unit, true},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD, Need::none, When::never, true},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED, Need::none, When::never, true},
};
static_assert(std::size(kForward) == CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
static_assert(std::size(kBackwardData) == CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT);
static_assert(std::size(kBackwardFilter) == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT);

struct AlgoTable {
  const AlgoInfo* begin;
  const AlgoInfo* end;
};

AlgoTable table(Dir dir) {
  switch (dir) {
    case Dir::forward:
      return {std::begin(kForward), std::end(kForward)};
    case Dir::backward_data:
      return {std::begin(kBackwardData), std::end(kBackwardData)};
    case Dir::backward_filter:
      return {std::begin(kBackwardFilter), std::end(kBackwardFilter)};
  }
  return {nullptr, nullptr};
}

const AlgoInfo* find_algo(Dir dir, int algo) {
  const AlgoTable t = table(dir);
  for (const AlgoInfo* a = t.begin; a != t.end; ++a)
    if (a->algo == algo) return a;
  return nullptr;
}

bool supported(const AlgoInfo& a, const Geo& g) {
  const bool unit = g.stride_h == 1 && g.stride_w == 1 && g.dil_h == 1 && g.dil_w == 1;
  switch (a.when) {
    case When::always:
      return true;
    case When::unit:
      return unit;
    case When::winograd:
      return unit && g.R == 3 && g.S == 3 && g.G == 1;
    case When::never:
      return false;
  }
  return false;
}

std::size_t workspace_bytes(const AlgoInfo& a, const Geo& g) {
  switch (a.need) {
    case Need::none:
      return 0;
    case Need::small:
      return 256 + 8 * static_cast<std::size_t>(g.Cg * g.R * g.S);  // index tables
    case Need::gemm:
      return sizeof(float) * static_cast<std::size_t>(g.Cg * g.R * g.S * g.P * g.Q);  // im2col
    case Need::fft:
      return sizeof(float) * 2 * static_cast<std::size_t>(g.x.numel() + g.K * g.Cg * g.H * g.W + g.y.numel());
  }
  return 0;
}

// Validates everything about one convolution call except the scalars; on success *info is
// the algorithm and *need its workspace.
cudnnStatus_t check_call(Dir dir, cudnnHandle_t handle, const cudnnTensorStruct* xd, const void* x,
                         const cudnnFilterStruct* wd, const void* w, const cudnnConvolutionStruct* cd,
                         const cudnnTensorStruct* yd, const void* y, int algo, const void* ws,
                         std::size_t ws_bytes, Geo* g, const AlgoInfo** info) {
  if (!is_live(handle, Kind::handle)) return CUDNN_STATUS_BAD_PARAM;
  if (x == nullptr || w == nullptr || y == nullptr) return CUDNN_STATUS_BAD_PARAM;
  const cudnnStatus_t st = resolve(xd, wd, cd, yd, g);
  if (st != CUDNN_STATUS_SUCCESS) return st;
  const AlgoInfo* a = find_algo(dir, algo);
  if (a == nullptr) return CUDNN_STATUS_BAD_PARAM;
  if (!supported(*a, *g)) return CUDNN_STATUS_NOT_SUPPORTED;
  const std::size_t need = workspace_bytes(*a, *g);
  if (need > 0 && (ws == nullptr || ws_bytes < need)) return CUDNN_STATUS_BAD_PARAM;
  *info = a;
  return CUDNN_STATUS_SUCCESS;
}

// One convolution call, resolved at the call: everything its computation needs, by value.
struct ConvJob {
  Dir dir;
  Geo g;
  Precision precision;  // the math type (and NVIDIA_TF32_OVERRIDE) at the call
  float alpha, beta;
  const float *x, *w, *y;
  float* out;
  void* ws;
  std::size_t ws_need;
};

// Validates a convolution call (x, w, y are the forward roles: the output is y, x or w) and
// resolves it into *job.
cudnnStatus_t prepare_conv(Dir dir, cudnnHandle_t handle, const void* alpha, const cudnnTensorStruct* xd,
                           const void* x, const cudnnFilterStruct* wd, const void* w,
                           const cudnnConvolutionStruct* cd, const cudnnTensorStruct* yd, const void* y,
                           int algo, void* ws, std::size_t ws_bytes, const void* beta, ConvJob* job) {
  Geo g{};
  const AlgoInfo* info = nullptr;
  const cudnnStatus_t st = check_call(dir, handle, xd, x, wd, w, cd, yd, y, algo, ws, ws_bytes, &g, &info);
  if (st != CUDNN_STATUS_SUCCESS) return st;
  if (alpha == nullptr || beta == nullptr) return CUDNN_STATUS_BAD_PARAM;
  const void* out = dir == Dir::forward ? y : dir == Dir::backward_data ? x : w;
  *job = ConvJob{dir,
                 g,
                 precision_of(cd->math),
                 *static_cast<const float*>(alpha),
                 *static_cast<const float*>(beta),
                 static_cast<const float*>(x),
                 static_cast<const float*>(w),
                 static_cast<const float*>(y),
                 const_cast<float*>(static_cast<const float*>(out)),
                 ws,
                 workspace_bytes(*info, g)};
  return CUDNN_STATUS_SUCCESS;
}

void run_conv(const ConvJob& j) {
  // Uses the workspace as scratch the way a real kernel would (a pattern fill of what it needs).
  if (j.ws_need > 0) std::memset(j.ws, 0xA5, j.ws_need);
  const auto run = [&](auto kernel) { kernel(j.dir, j.g, j.alpha, j.x, j.w, j.y, j.beta, j.out); };
  switch (j.precision) {
    case Precision::fp32:
      run(compute<Precision::fp32>);
      break;
    case Precision::tf32:
      run(compute<Precision::tf32>);
      break;
    case Precision::fp16:
      run(compute<Precision::fp16>);
      break;
  }
}

// The convolution entry points: validate now, compute in stream order.
cudnnStatus_t queue_conv(Dir dir, cudnnHandle_t handle, const void* alpha, const cudnnTensorStruct* xd,
                         const void* x, const cudnnFilterStruct* wd, const void* w,
                         const cudnnConvolutionStruct* cd, const cudnnTensorStruct* yd, const void* y,
                         int algo, void* ws, std::size_t ws_bytes, const void* beta) {
  ConvJob job;
  const cudnnStatus_t st =
      prepare_conv(dir, handle, alpha, xd, x, wd, w, cd, yd, y, algo, ws, ws_bytes, beta, &job);
  if (st != CUDNN_STATUS_SUCCESS || cugrad_emu::state::null_compute()) return st;
  return queue(handle, [job] { run_conv(job); });
}

// cudnnGet*Algorithm_v7: every algorithm, supported ones first in preference order.
template <class Perf, class Algo>
cudnnStatus_t heuristics(Dir dir, cudnnHandle_t handle, const cudnnTensorStruct* xd,
                         const cudnnFilterStruct* wd, const cudnnConvolutionStruct* cd,
                         const cudnnTensorStruct* yd, int requested, int* returned, Perf* perf) {
  if (!is_live(handle, Kind::handle)) return CUDNN_STATUS_BAD_PARAM;
  if (returned == nullptr || perf == nullptr || requested <= 0) return CUDNN_STATUS_BAD_PARAM;
  Geo g{};
  const cudnnStatus_t st = resolve(xd, wd, cd, yd, &g);
  if (st != CUDNN_STATUS_SUCCESS) return st;
  std::vector<Perf> all;
  const AlgoTable t = table(dir);
  for (int pass = 0; pass < 2; ++pass)
    for (const AlgoInfo* a = t.begin; a != t.end; ++a) {
      const bool ok = supported(*a, g);
      if (ok != (pass == 0)) continue;
      Perf p{};
      p.algo = static_cast<Algo>(a->algo);
      p.status = ok ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_NOT_SUPPORTED;
      p.time = ok ? 0.1f * static_cast<float>(all.size() + 1) : -1.0f;  // an estimate: the rank
      p.memory = ok ? workspace_bytes(*a, g) : 0;
      p.determinism = a->deterministic ? CUDNN_DETERMINISTIC : CUDNN_NON_DETERMINISTIC;
      p.mathType = cd->math;
      all.push_back(p);
    }
  const int n = std::min<int>(requested, static_cast<int>(all.size()));
  std::copy(all.begin(), all.begin() + n, perf);
  *returned = n;
  return CUDNN_STATUS_SUCCESS;
}

// cudnnFind*AlgorithmEx: runs every supported algorithm that fits the workspace on the given
// buffers (alpha = 1, beta = 0: the output is overwritten) and ranks them by measured time.
template <class Perf, class Algo>
cudnnStatus_t find_ex(Dir dir, cudnnHandle_t handle, const cudnnTensorStruct* xd, const void* x,
                      const cudnnFilterStruct* wd, const void* w, const cudnnConvolutionStruct* cd,
                      const cudnnTensorStruct* yd, const void* y, int requested, int* returned, Perf* perf,
                      void* ws, std::size_t ws_bytes) {
  if (!is_live(handle, Kind::handle)) return CUDNN_STATUS_BAD_PARAM;
  if (returned == nullptr || perf == nullptr || requested <= 0) return CUDNN_STATUS_BAD_PARAM;
  if (x == nullptr || w == nullptr || y == nullptr) return CUDNN_STATUS_BAD_PARAM;
  if (ws == nullptr && ws_bytes > 0) return CUDNN_STATUS_BAD_PARAM;
  Geo g{};
  const cudnnStatus_t st = resolve(xd, wd, cd, yd, &g);
  if (st != CUDNN_STATUS_SUCCESS) return st;
  std::vector<Perf> ran, failed;
  const AlgoTable t = table(dir);
  const float one = 1.0f, zero = 0.0f;
  for (const AlgoInfo* a = t.begin; a != t.end; ++a) {
    Perf p{};
    p.algo = static_cast<Algo>(a->algo);
    p.determinism = a->deterministic ? CUDNN_DETERMINISTIC : CUDNN_NON_DETERMINISTIC;
    p.mathType = cd->math;
    p.time = -1.0f;
    if (!supported(*a, g)) {
      p.status = CUDNN_STATUS_NOT_SUPPORTED;
      failed.push_back(p);
      continue;
    }
    p.memory = workspace_bytes(*a, g);
    if (p.memory > ws_bytes) {
      // What cuDNN reports as CUDNN_STATUS_ALLOC_FAILED (a deprecated alias of this value).
      p.status = CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
      failed.push_back(p);
      continue;
    }
    const auto start = std::chrono::steady_clock::now();
    ConvJob job;
    p.status = prepare_conv(dir, handle, &one, xd, x, wd, w, cd, yd, y, a->algo, ws, ws_bytes, &zero, &job);
    if (p.status == CUDNN_STATUS_SUCCESS && !cugrad_emu::state::null_compute()) run_conv(job);  // now
    const auto stop = std::chrono::steady_clock::now();
    if (p.status == CUDNN_STATUS_SUCCESS) {
      p.time = std::chrono::duration<float, std::milli>(stop - start).count();
      ran.push_back(p);
    } else {
      failed.push_back(p);
    }
  }
  std::stable_sort(ran.begin(), ran.end(), [](const Perf& a, const Perf& b) { return a.time < b.time; });
  ran.insert(ran.end(), failed.begin(), failed.end());
  const int n = std::min<int>(requested, static_cast<int>(ran.size()));
  std::copy(ran.begin(), ran.begin() + n, perf);
  *returned = n;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t workspace_size(Dir dir, cudnnHandle_t handle, const cudnnTensorStruct* xd,
                             const cudnnFilterStruct* wd, const cudnnConvolutionStruct* cd,
                             const cudnnTensorStruct* yd, int algo, std::size_t* bytes) {
  if (!is_live(handle, Kind::handle) || bytes == nullptr) return CUDNN_STATUS_BAD_PARAM;
  Geo g{};
  const cudnnStatus_t st = resolve(xd, wd, cd, yd, &g);
  if (st != CUDNN_STATUS_SUCCESS) return st;
  const AlgoInfo* a = find_algo(dir, algo);
  if (a == nullptr) return CUDNN_STATUS_BAD_PARAM;
  if (!supported(*a, g)) return CUDNN_STATUS_NOT_SUPPORTED;
  *bytes = workspace_bytes(*a, g);
  return CUDNN_STATUS_SUCCESS;
}

// ---- batch normalization ----

bool spatial_mode(cudnnBatchNormMode_t mode) { return mode != CUDNN_BATCHNORM_PER_ACTIVATION; }

bool bn_mode_ok(cudnnBatchNormMode_t mode) {
  return mode == CUDNN_BATCHNORM_PER_ACTIVATION || mode == CUDNN_BATCHNORM_SPATIAL ||
         mode == CUDNN_BATCHNORM_SPATIAL_PERSISTENT;
}

// One batch-norm call: the data tensors (x, and y / dy / dx of its dims, each with its own
// strides) and the parameter tensor, indexed j in [0, params): c (spatial) or (c * H + h) * W
// + w (per activation). M = count values per parameter.
struct BnGeo {
  Dims4 x, p;
  bool spatial = true;
  std::int64_t params = 0, count = 0;
};

// Starts a batch-norm call: validates handle, mode, epsilon, x, the tensors that must match x,
// and the parameter descriptor, and fills g.
cudnnStatus_t resolve_bn(cudnnHandle_t handle, cudnnBatchNormMode_t mode, const cudnnTensorStruct* xd,
                         std::initializer_list<const cudnnTensorStruct*> like_x, const cudnnTensorStruct* pd,
                         double epsilon, BnGeo* g) {
  if (!is_live(handle, Kind::handle) || !bn_mode_ok(mode)) return CUDNN_STATUS_BAD_PARAM;
  if (!(epsilon >= CUDNN_BN_MIN_EPSILON)) return CUDNN_STATUS_BAD_PARAM;
  if (!tensor_ok(xd) || !tensor_ok(pd)) return CUDNN_STATUS_BAD_PARAM;
  const Dims4& x = xd->d;
  for (const cudnnTensorStruct* t : like_x) {
    if (!tensor_ok(t) || t->d.type != x.type) return CUDNN_STATUS_BAD_PARAM;
    for (int i = 0; i < 4; ++i)
      if (t->d.dims[i] != x.dims[i]) return CUDNN_STATUS_BAD_PARAM;
  }
  BnGeo r;
  r.x = x;
  r.p = pd->d;
  r.spatial = spatial_mode(mode);
  const std::int64_t want[4] = {1, x.dims[1], r.spatial ? 1 : x.dims[2], r.spatial ? 1 : x.dims[3]};
  for (int i = 0; i < 4; ++i)
    if (r.p.dims[i] != want[i]) return CUDNN_STATUS_BAD_PARAM;
  if (r.p.type != x.type) return CUDNN_STATUS_BAD_PARAM;  // float data: float parameters
  r.params = r.spatial ? x.dims[1] : x.dims[1] * x.dims[2] * x.dims[3];
  r.count = x.numel() / r.params;
  *g = r;
  return CUDNN_STATUS_SUCCESS;
}

// The position of element (n, c, h, w) in a tensor laid out by d.
std::int64_t at(const Dims4& d, std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w) {
  return n * d.strides[0] + c * d.strides[1] + h * d.strides[2] + w * d.strides[3];
}

// The position of each parameter j in the parameter tensors.
std::vector<std::int64_t> param_offsets(const BnGeo& g) {
  std::vector<std::int64_t> off(static_cast<std::size_t>(g.params));
  for (std::int64_t c = 0, j = 0; c < g.x.dims[1]; ++c)
    for (std::int64_t h = 0; h < (g.spatial ? 1 : g.x.dims[2]); ++h)
      for (std::int64_t w = 0; w < (g.spatial ? 1 : g.x.dims[3]); ++w, ++j) off[j] = at(g.p, 0, c, h, w);
  return off;
}

// Calls f(n, c, h, w, j) for every element of x, j its parameter.
template <class F>
void for_each_bn(const BnGeo& g, F&& f) {
  const std::int64_t H = g.x.dims[2], W = g.x.dims[3];
  for (std::int64_t n = 0; n < g.x.dims[0]; ++n)
    for (std::int64_t c = 0; c < g.x.dims[1]; ++c)
      for (std::int64_t h = 0; h < H; ++h)
        for (std::int64_t w = 0; w < W; ++w) f(n, c, h, w, g.spatial ? c : (c * H + h) * W + w);
}

// out = alpha * v + beta * out, in double, rounded once; out is not read when beta == 0.
void blend(float* out, double v, float alpha, float beta) {
  *out = static_cast<float>(beta == 0.0f ? alpha * v
                                         : static_cast<double>(alpha) * v + static_cast<double>(beta) * *out);
}

// Each parameter's batch mean and biased variance (two passes, double).
void bn_statistics(const BnGeo& g, const float* x, std::vector<double>* mean, std::vector<double>* var) {
  mean->assign(static_cast<std::size_t>(g.params), 0.0);
  var->assign(static_cast<std::size_t>(g.params), 0.0);
  for_each_bn(g, [&](std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w, std::int64_t j) {
    (*mean)[j] += x[at(g.x, n, c, h, w)];
  });
  for (double& m : *mean) m /= static_cast<double>(g.count);
  for_each_bn(g, [&](std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w, std::int64_t j) {
    const double d = x[at(g.x, n, c, h, w)] - (*mean)[j];
    (*var)[j] += d * d;
  });
  for (double& v : *var) v /= static_cast<double>(g.count);
}

// y = alpha * (scale * (x - mean) * invstd + bias) + beta * y.
void bn_normalize(const BnGeo& g, const Dims4& yd, const float* x, float* y, const float* scale,
                  const float* bias, const std::vector<double>& mean, const std::vector<double>& invstd,
                  float alpha, float beta) {
  const std::vector<std::int64_t> poff = param_offsets(g);
  for_each_bn(g, [&](std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w, std::int64_t j) {
    const double v =
        static_cast<double>(scale[poff[j]]) * (x[at(g.x, n, c, h, w)] - mean[j]) * invstd[j] + bias[poff[j]];
    blend(y + at(yd, n, c, h, w), v, alpha, beta);
  });
}

}  // namespace

extern "C" {

// ---- library, handle ----

size_t CUDNNWINAPI cudnnGetVersion(void) { return CUDNN_VERSION; }

const char* CUDNNWINAPI cudnnGetErrorString(cudnnStatus_t status) {
  switch (static_cast<int>(status)) {
#define CUGRAD_EMU_STATUS(name) \
  case name:                    \
    return #name;
    CUGRAD_EMU_STATUS(CUDNN_STATUS_SUCCESS)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_NOT_INITIALIZED)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_SERIALIZATION_VERSION_MISMATCH)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_DEPRECATED)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_LICENSE_ERROR)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_RUNTIME_IN_PROGRESS)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_RUNTIME_FP_OVERFLOW)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_BAD_PARAM)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_NULL_POINTER)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_OUT_OF_BOUND)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_STREAM_MISMATCH)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_CUDA_GRAPH_MISMATCH)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_SHAPE)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_LAYOUT)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDA_DRIVER)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDART)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_ARCH_MISMATCH)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_RUNTIME_PREREQUISITE_MISSING)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_SUBLIBRARY_UNAVAILABLE)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_SHARED_MEMORY_INSUFFICIENT)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_PADDING)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_BAD_LAUNCH_PARAM)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_CUDA_GRAPH_NATIVE_API)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_INVALID_DYNAMIC_SHAPE)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_INTERNAL_ERROR)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_INTERNAL_ERROR_COMPILATION_FAILED)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_INTERNAL_ERROR_UNEXPECTED_VALUE)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_INTERNAL_ERROR_BAD_LAUNCH_PARAM)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_INTERNAL_ERROR_TEXTURE_CREATION_FAILED)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_EXECUTION_FAILED)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_EXECUTION_FAILED_CUBLAS)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_EXECUTION_FAILED_CUDART)
    CUGRAD_EMU_STATUS(CUDNN_STATUS_EXECUTION_FAILED_CURAND)
#undef CUGRAD_EMU_STATUS
    case 2001:  // CUDNN_STATUS_INVALID_VALUE (deprecated)
      return "CUDNN_STATUS_INVALID_VALUE";
  }
  return "CUDNN_STATUS_UNKNOWN";
}

cudnnStatus_t CUDNNWINAPI cudnnCreate(cudnnHandle_t* handle) { return create_object(handle, Kind::handle); }

cudnnStatus_t CUDNNWINAPI cudnnDestroy(cudnnHandle_t handle) {
  if (handle == nullptr || !remove_live(handle, Kind::handle)) return CUDNN_STATUS_BAD_PARAM;
  delete handle;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnSetStream(cudnnHandle_t handle, cudaStream_t streamId) {
  if (!is_live(handle, Kind::handle)) return CUDNN_STATUS_BAD_PARAM;
  handle->stream = streamId;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnGetStream(cudnnHandle_t handle, cudaStream_t* streamId) {
  if (!is_live(handle, Kind::handle) || streamId == nullptr) return CUDNN_STATUS_BAD_PARAM;
  *streamId = handle->stream;
  return CUDNN_STATUS_SUCCESS;
}

// ---- tensor descriptors ----

cudnnStatus_t CUDNNWINAPI cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t* tensorDesc) {
  return create_object(tensorDesc, Kind::tensor);
}

cudnnStatus_t CUDNNWINAPI cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t tensorDesc) {
  return destroy_descriptor(tensorDesc, Kind::tensor);
}

cudnnStatus_t CUDNNWINAPI cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t tensorDesc,
                                                     cudnnTensorFormat_t format, cudnnDataType_t dataType,
                                                     int n, int c, int h, int w) {
  if (!is_live(tensorDesc, Kind::tensor)) return CUDNN_STATUS_BAD_PARAM;
  Dims4 d;
  const cudnnStatus_t st = packed_dims(format, dataType, n, c, h, w, &d);
  if (st == CUDNN_STATUS_SUCCESS) tensorDesc->d = d;
  return st;
}

cudnnStatus_t CUDNNWINAPI cudnnSetTensor4dDescriptorEx(cudnnTensorDescriptor_t tensorDesc,
                                                       cudnnDataType_t dataType, int n, int c, int h, int w,
                                                       int nStride, int cStride, int hStride, int wStride) {
  if (!is_live(tensorDesc, Kind::tensor)) return CUDNN_STATUS_BAD_PARAM;
  if (nStride <= 0 || cStride <= 0 || hStride <= 0 || wStride <= 0) return CUDNN_STATUS_BAD_PARAM;
  const cudnnStatus_t st = check_dims(dataType, n, c, h, w);
  if (st != CUDNN_STATUS_SUCCESS) return st;
  Dims4 d;
  d.set = true;
  d.type = dataType;
  const int dims[4] = {n, c, h, w}, strides[4] = {nStride, cStride, hStride, wStride};
  for (int i = 0; i < 4; ++i) {
    d.dims[i] = dims[i];
    d.strides[i] = strides[i];
  }
  tensorDesc->d = d;
  return CUDNN_STATUS_SUCCESS;
}

// Reads back a set descriptor; a null output pointer is skipped.
cudnnStatus_t CUDNNWINAPI cudnnGetTensor4dDescriptor(const cudnnTensorDescriptor_t tensorDesc,
                                                     cudnnDataType_t* dataType, int* n, int* c, int* h,
                                                     int* w, int* nStride, int* cStride, int* hStride,
                                                     int* wStride) {
  if (!tensor_ok(tensorDesc)) return CUDNN_STATUS_BAD_PARAM;
  const Dims4& d = tensorDesc->d;
  if (dataType != nullptr) *dataType = d.type;
  int* const dims[4] = {n, c, h, w};
  int* const strides[4] = {nStride, cStride, hStride, wStride};
  for (int i = 0; i < 4; ++i) {
    if (dims[i] != nullptr) *dims[i] = static_cast<int>(d.dims[i]);
    if (strides[i] != nullptr) *strides[i] = static_cast<int>(d.strides[i]);
  }
  return CUDNN_STATUS_SUCCESS;
}

// ---- filter descriptors ----

cudnnStatus_t CUDNNWINAPI cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t* filterDesc) {
  return create_object(filterDesc, Kind::filter);
}

cudnnStatus_t CUDNNWINAPI cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t filterDesc) {
  return destroy_descriptor(filterDesc, Kind::filter);
}

// NCHW is k x c x h x w row-major; NHWC is k x h x w x c (KRSC).
cudnnStatus_t CUDNNWINAPI cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t filterDesc,
                                                     cudnnDataType_t dataType, cudnnTensorFormat_t format,
                                                     int k, int c, int h, int w) {
  if (!is_live(filterDesc, Kind::filter)) return CUDNN_STATUS_BAD_PARAM;
  Dims4 d;
  const cudnnStatus_t st = packed_dims(format, dataType, k, c, h, w, &d);
  if (st != CUDNN_STATUS_SUCCESS) return st;
  filterDesc->d = d;
  filterDesc->format = format;
  return CUDNN_STATUS_SUCCESS;
}

// ---- convolution descriptors ----

cudnnStatus_t CUDNNWINAPI cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t* convDesc) {
  return create_object(convDesc, Kind::convolution);
}

cudnnStatus_t CUDNNWINAPI cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t convDesc) {
  return destroy_descriptor(convDesc, Kind::convolution);
}

cudnnStatus_t CUDNNWINAPI cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t convDesc, int pad_h,
                                                          int pad_w, int u, int v, int dilation_h,
                                                          int dilation_w, cudnnConvolutionMode_t mode,
                                                          cudnnDataType_t computeType) {
  if (!is_live(convDesc, Kind::convolution)) return CUDNN_STATUS_BAD_PARAM;
  if (pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dilation_h <= 0 || dilation_w <= 0)
    return CUDNN_STATUS_BAD_PARAM;
  if (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION) return CUDNN_STATUS_BAD_PARAM;
  const int ct = static_cast<int>(computeType);
  if (ct < 0 || ct > static_cast<int>(CUDNN_DATA_COMPLEX_FP64)) return CUDNN_STATUS_BAD_PARAM;
  convDesc->pad_h = pad_h;
  convDesc->pad_w = pad_w;
  convDesc->stride_h = u;
  convDesc->stride_w = v;
  convDesc->dil_h = dilation_h;
  convDesc->dil_w = dilation_w;
  convDesc->mode = mode;
  convDesc->compute_type = computeType;
  convDesc->set = true;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnSetConvolutionGroupCount(cudnnConvolutionDescriptor_t convDesc,
                                                        int groupCount) {
  if (!is_live(convDesc, Kind::convolution) || groupCount < 1) return CUDNN_STATUS_BAD_PARAM;
  convDesc->groups = groupCount;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t convDesc,
                                                      cudnnMathType_t mathType) {
  if (!is_live(convDesc, Kind::convolution)) return CUDNN_STATUS_BAD_PARAM;
  switch (mathType) {
    case CUDNN_DEFAULT_MATH:
    case CUDNN_TENSOR_OP_MATH:
    case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION:
    case CUDNN_FMA_MATH:
      convDesc->math = mathType;
      return CUDNN_STATUS_SUCCESS;
  }
  return CUDNN_STATUS_BAD_PARAM;
}

cudnnStatus_t CUDNNWINAPI cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t convDesc,
                                                                const cudnnTensorDescriptor_t inputTensorDesc,
                                                                const cudnnFilterDescriptor_t filterDesc,
                                                                int* n, int* c, int* h, int* w) {
  if (n == nullptr || c == nullptr || h == nullptr || w == nullptr) return CUDNN_STATUS_BAD_PARAM;
  Geo g{};
  const cudnnStatus_t st = resolve(inputTensorDesc, filterDesc, convDesc, nullptr, &g);
  if (st != CUDNN_STATUS_SUCCESS) return st;
  *n = static_cast<int>(g.N);
  *c = static_cast<int>(g.K);
  *h = static_cast<int>(g.P);
  *w = static_cast<int>(g.Q);
  return CUDNN_STATUS_SUCCESS;
}

// ---- algorithm choice and workspaces ----

cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionForwardAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc, const cudnnFilterDescriptor_t filterDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t destDesc,
    const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t* perfResults) {
  cugrad_emu::trace::count(__func__);
  return heuristics<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(
      Dir::forward, handle, srcDesc, filterDesc, convDesc, destDesc, requestedAlgoCount, returnedAlgoCount,
      perfResults);
}

cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t filterDesc, const cudnnTensorDescriptor_t diffDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t gradDesc,
    const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionBwdDataAlgoPerf_t* perfResults) {
  cugrad_emu::trace::count(__func__);
  return heuristics<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(
      Dir::backward_data, handle, gradDesc, filterDesc, convDesc, diffDesc, requestedAlgoCount,
      returnedAlgoCount, perfResults);
}

cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc, const cudnnTensorDescriptor_t diffDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t gradDesc,
    const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionBwdFilterAlgoPerf_t* perfResults) {
  cugrad_emu::trace::count(__func__);
  return heuristics<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(
      Dir::backward_filter, handle, srcDesc, gradDesc, convDesc, diffDesc, requestedAlgoCount,
      returnedAlgoCount, perfResults);
}

cudnnStatus_t CUDNNWINAPI cudnnFindConvolutionForwardAlgorithmEx(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const void* x,
    const cudnnFilterDescriptor_t wDesc, const void* w, const cudnnConvolutionDescriptor_t convDesc,
    const cudnnTensorDescriptor_t yDesc, void* y, const int requestedAlgoCount, int* returnedAlgoCount,
    cudnnConvolutionFwdAlgoPerf_t* perfResults, void* workSpace, size_t workSpaceSizeInBytes) {
  cugrad_emu::trace::count(__func__);
  if (is_live(handle, Kind::handle)) in_stream_order(handle);
  return find_ex<cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t>(
      Dir::forward, handle, xDesc, x, wDesc, w, convDesc, yDesc, y, requestedAlgoCount, returnedAlgoCount,
      perfResults, workSpace, workSpaceSizeInBytes);
}

cudnnStatus_t CUDNNWINAPI cudnnFindConvolutionBackwardDataAlgorithmEx(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc, const void* w,
    const cudnnTensorDescriptor_t dyDesc, const void* dy, const cudnnConvolutionDescriptor_t convDesc,
    const cudnnTensorDescriptor_t dxDesc, void* dx, const int requestedAlgoCount, int* returnedAlgoCount,
    cudnnConvolutionBwdDataAlgoPerf_t* perfResults, void* workSpace, size_t workSpaceSizeInBytes) {
  cugrad_emu::trace::count(__func__);
  if (is_live(handle, Kind::handle)) in_stream_order(handle);
  return find_ex<cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t>(
      Dir::backward_data, handle, dxDesc, dx, wDesc, w, convDesc, dyDesc, dy, requestedAlgoCount,
      returnedAlgoCount, perfResults, workSpace, workSpaceSizeInBytes);
}

cudnnStatus_t CUDNNWINAPI cudnnFindConvolutionBackwardFilterAlgorithmEx(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const void* x,
    const cudnnTensorDescriptor_t dyDesc, const void* y, const cudnnConvolutionDescriptor_t convDesc,
    const cudnnFilterDescriptor_t dwDesc, void* dw, const int requestedAlgoCount, int* returnedAlgoCount,
    cudnnConvolutionBwdFilterAlgoPerf_t* perfResults, void* workSpace, size_t workSpaceSizeInBytes) {
  cugrad_emu::trace::count(__func__);
  if (is_live(handle, Kind::handle)) in_stream_order(handle);
  return find_ex<cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t>(
      Dir::backward_filter, handle, xDesc, x, dwDesc, dw, convDesc, dyDesc, y, requestedAlgoCount,
      returnedAlgoCount, perfResults, workSpace, workSpaceSizeInBytes);
}

cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionForwardWorkspaceSize(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnFilterDescriptor_t wDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t yDesc,
    cudnnConvolutionFwdAlgo_t algo, size_t* sizeInBytes) {
  cugrad_emu::trace::count(__func__);
  return workspace_size(Dir::forward, handle, xDesc, wDesc, convDesc, yDesc, algo, sizeInBytes);
}

cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionBackwardDataWorkspaceSize(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc, const cudnnTensorDescriptor_t dyDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t dxDesc,
    cudnnConvolutionBwdDataAlgo_t algo, size_t* sizeInBytes) {
  cugrad_emu::trace::count(__func__);
  return workspace_size(Dir::backward_data, handle, dxDesc, wDesc, convDesc, dyDesc, algo, sizeInBytes);
}

cudnnStatus_t CUDNNWINAPI cudnnGetConvolutionBackwardFilterWorkspaceSize(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnTensorDescriptor_t dyDesc,
    const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t gradDesc,
    cudnnConvolutionBwdFilterAlgo_t algo, size_t* sizeInBytes) {
  cugrad_emu::trace::count(__func__);
  return workspace_size(Dir::backward_filter, handle, xDesc, gradDesc, convDesc, dyDesc, algo, sizeInBytes);
}

// ---- convolutions ----

cudnnStatus_t CUDNNWINAPI cudnnConvolutionForward(cudnnHandle_t handle, const void* alpha,
                                                  const cudnnTensorDescriptor_t xDesc, const void* x,
                                                  const cudnnFilterDescriptor_t wDesc, const void* w,
                                                  const cudnnConvolutionDescriptor_t convDesc,
                                                  cudnnConvolutionFwdAlgo_t algo, void* workSpace,
                                                  size_t workSpaceSizeInBytes, const void* beta,
                                                  const cudnnTensorDescriptor_t yDesc, void* y) {
  cugrad_emu::trace::count(__func__);
  return queue_conv(Dir::forward, handle, alpha, xDesc, x, wDesc, w, convDesc, yDesc, y, algo, workSpace,
                    workSpaceSizeInBytes, beta);
}

cudnnStatus_t CUDNNWINAPI cudnnConvolutionBackwardData(cudnnHandle_t handle, const void* alpha,
                                                       const cudnnFilterDescriptor_t wDesc, const void* w,
                                                       const cudnnTensorDescriptor_t dyDesc, const void* dy,
                                                       const cudnnConvolutionDescriptor_t convDesc,
                                                       cudnnConvolutionBwdDataAlgo_t algo, void* workSpace,
                                                       size_t workSpaceSizeInBytes, const void* beta,
                                                       const cudnnTensorDescriptor_t dxDesc, void* dx) {
  cugrad_emu::trace::count(__func__);
  return queue_conv(Dir::backward_data, handle, alpha, dxDesc, dx, wDesc, w, convDesc, dyDesc, dy, algo,
                    workSpace, workSpaceSizeInBytes, beta);
}

cudnnStatus_t CUDNNWINAPI cudnnConvolutionBackwardFilter(
    cudnnHandle_t handle, const void* alpha, const cudnnTensorDescriptor_t xDesc, const void* x,
    const cudnnTensorDescriptor_t dyDesc, const void* dy, const cudnnConvolutionDescriptor_t convDesc,
    cudnnConvolutionBwdFilterAlgo_t algo, void* workSpace, size_t workSpaceSizeInBytes, const void* beta,
    const cudnnFilterDescriptor_t dwDesc, void* dw) {
  cugrad_emu::trace::count(__func__);
  return queue_conv(Dir::backward_filter, handle, alpha, xDesc, x, dwDesc, dw, convDesc, dyDesc, dy, algo,
                    workSpace, workSpaceSizeInBytes, beta);
}

cudnnStatus_t CUDNNWINAPI cudnnConvolutionBackwardBias(cudnnHandle_t handle, const void* alpha,
                                                       const cudnnTensorDescriptor_t dyDesc, const void* dy,
                                                       const void* beta, const cudnnTensorDescriptor_t dbDesc,
                                                       void* db) {
  cugrad_emu::trace::count(__func__);
  if (!is_live(handle, Kind::handle) || !tensor_ok(dyDesc) || !tensor_ok(dbDesc))
    return CUDNN_STATUS_BAD_PARAM;
  if (alpha == nullptr || beta == nullptr || dy == nullptr || db == nullptr) return CUDNN_STATUS_BAD_PARAM;
  const Dims4 g = dyDesc->d;
  const Dims4 b = dbDesc->d;
  if (g.type != b.type) return CUDNN_STATUS_BAD_PARAM;
  if (b.dims[0] != 1 || b.dims[1] != g.dims[1] || b.dims[2] != 1 || b.dims[3] != 1)
    return CUDNN_STATUS_BAD_PARAM;
  if (cugrad_emu::state::null_compute()) return CUDNN_STATUS_SUCCESS;
  const float* src = static_cast<const float*>(dy);
  float* dst = static_cast<float*>(db);
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  return queue(handle, [g, b, src, dst, al, be] {
    std::vector<double> acc(static_cast<std::size_t>(g.dims[1]), 0.0);
    for (std::int64_t n = 0; n < g.dims[0]; ++n)
      for (std::int64_t c = 0; c < g.dims[1]; ++c)
        for (std::int64_t h = 0; h < g.dims[2]; ++h)
          for (std::int64_t w = 0; w < g.dims[3]; ++w)
            acc[c] += src[n * g.strides[0] + c * g.strides[1] + h * g.strides[2] + w * g.strides[3]];
    write_out(b, acc, al, be, dst);
  });
}

cudnnStatus_t CUDNNWINAPI cudnnAddTensor(cudnnHandle_t handle, const void* alpha,
                                         const cudnnTensorDescriptor_t aDesc, const void* A, const void* beta,
                                         const cudnnTensorDescriptor_t cDesc, void* C) {
  cugrad_emu::trace::count(__func__);
  if (!is_live(handle, Kind::handle) || !tensor_ok(aDesc) || !tensor_ok(cDesc)) return CUDNN_STATUS_BAD_PARAM;
  if (alpha == nullptr || beta == nullptr || A == nullptr || C == nullptr) return CUDNN_STATUS_BAD_PARAM;
  const Dims4& a = aDesc->d;
  const Dims4 c = cDesc->d;
  if (a.type != c.type) return CUDNN_STATUS_BAD_PARAM;
  // Each dimension of A matches C's or is 1 (broadcast: stride 0 along it).
  std::int64_t as[4];
  for (int i = 0; i < 4; ++i) {
    if (a.dims[i] != c.dims[i] && a.dims[i] != 1) return CUDNN_STATUS_BAD_PARAM;
    as[i] = a.dims[i] == 1 ? 0 : a.strides[i];
  }
  if (cugrad_emu::state::null_compute()) return CUDNN_STATUS_SUCCESS;
  const double al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  const bool read_c = *static_cast<const float*>(beta) != 0.0f;
  const float* src = static_cast<const float*>(A);
  float* dst = static_cast<float*>(C);
  return queue(handle, [c, as0 = as[0], as1 = as[1], as2 = as[2], as3 = as[3], al, be, read_c, src, dst] {
    for (std::int64_t n = 0; n < c.dims[0]; ++n)
      for (std::int64_t ch = 0; ch < c.dims[1]; ++ch)
        for (std::int64_t h = 0; h < c.dims[2]; ++h)
          for (std::int64_t w = 0; w < c.dims[3]; ++w) {
            const double v = src[n * as0 + ch * as1 + h * as2 + w * as3];
            float& out = dst[n * c.strides[0] + ch * c.strides[1] + h * c.strides[2] + w * c.strides[3]];
            out = static_cast<float>(read_c ? al * v + be * out : al * v);
          }
  });
}

// ---- batch normalization ----

cudnnStatus_t CUDNNWINAPI cudnnDeriveBNTensorDescriptor(cudnnTensorDescriptor_t derivedBnDesc,
                                                        const cudnnTensorDescriptor_t xDesc,
                                                        cudnnBatchNormMode_t mode) {
  if (!is_live(derivedBnDesc, Kind::tensor) || !tensor_ok(xDesc) || !bn_mode_ok(mode))
    return CUDNN_STATUS_BAD_PARAM;
  const Dims4& x = xDesc->d;
  const bool spatial = spatial_mode(mode);
  Dims4 d;
  const cudnnStatus_t st =
      packed_dims(CUDNN_TENSOR_NCHW, x.type, 1, static_cast<int>(x.dims[1]),
                  spatial ? 1 : static_cast<int>(x.dims[2]), spatial ? 1 : static_cast<int>(x.dims[3]), &d);
  if (st == CUDNN_STATUS_SUCCESS) derivedBnDesc->d = d;
  return st;
}

cudnnStatus_t CUDNNWINAPI cudnnBatchNormalizationForwardTraining(
    cudnnHandle_t handle, cudnnBatchNormMode_t mode, const void* alpha, const void* beta,
    const cudnnTensorDescriptor_t xDesc, const void* x, const cudnnTensorDescriptor_t yDesc, void* y,
    const cudnnTensorDescriptor_t bnScaleBiasMeanVarDesc, const void* bnScale, const void* bnBias,
    double exponentialAverageFactor, void* resultRunningMean, void* resultRunningVariance, double epsilon,
    void* resultSaveMean, void* resultSaveInvVariance) {
  cugrad_emu::trace::count(__func__);
  BnGeo g;
  const cudnnStatus_t st = resolve_bn(handle, mode, xDesc, {yDesc}, bnScaleBiasMeanVarDesc, epsilon, &g);
  if (st != CUDNN_STATUS_SUCCESS) return st;
  if (alpha == nullptr || beta == nullptr || x == nullptr || y == nullptr || bnScale == nullptr ||
      bnBias == nullptr)
    return CUDNN_STATUS_BAD_PARAM;
  if ((resultRunningMean == nullptr) != (resultRunningVariance == nullptr) ||
      (resultSaveMean == nullptr) != (resultSaveInvVariance == nullptr))
    return CUDNN_STATUS_BAD_PARAM;
  if (g.count < 2) return CUDNN_STATUS_BAD_PARAM;
  const float* xs = static_cast<const float*>(x);
  const Dims4 yd = yDesc->d;
  float* ys = static_cast<float*>(y);
  const float* scale = static_cast<const float*>(bnScale);
  const float* bias = static_cast<const float*>(bnBias);
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  float* rmean = static_cast<float*>(resultRunningMean);
  float* rvar = static_cast<float*>(resultRunningVariance);
  float* smean = static_cast<float*>(resultSaveMean);
  float* sinv = static_cast<float*>(resultSaveInvVariance);
  const double f = exponentialAverageFactor;
  return queue(handle, [=] {
    std::vector<double> mean, var;
    bn_statistics(g, xs, &mean, &var);
    std::vector<double> invstd(var.size());
    for (std::size_t j = 0; j < var.size(); ++j) invstd[j] = 1.0 / std::sqrt(var[j] + epsilon);
    bn_normalize(g, yd, xs, ys, scale, bias, mean, invstd, al, be);
    const std::vector<std::int64_t> poff = param_offsets(g);
    const double unbiased = static_cast<double>(g.count) / static_cast<double>(g.count - 1);
    for (std::size_t j = 0; j < poff.size(); ++j) {
      if (rmean != nullptr) {
        float& rm = rmean[poff[j]];
        float& rv = rvar[poff[j]];
        rm = static_cast<float>((1.0 - f) * rm + f * mean[j]);
        rv = static_cast<float>((1.0 - f) * rv + f * var[j] * unbiased);
      }
      if (smean != nullptr) {
        smean[poff[j]] = static_cast<float>(mean[j]);
        sinv[poff[j]] = static_cast<float>(invstd[j]);
      }
    }
  });
}

cudnnStatus_t CUDNNWINAPI cudnnBatchNormalizationForwardInference(
    cudnnHandle_t handle, cudnnBatchNormMode_t mode, const void* alpha, const void* beta,
    const cudnnTensorDescriptor_t xDesc, const void* x, const cudnnTensorDescriptor_t yDesc, void* y,
    const cudnnTensorDescriptor_t bnScaleBiasMeanVarDesc, const void* bnScale, const void* bnBias,
    const void* estimatedMean, const void* estimatedVariance, double epsilon) {
  cugrad_emu::trace::count(__func__);
  BnGeo g;
  const cudnnStatus_t st = resolve_bn(handle, mode, xDesc, {yDesc}, bnScaleBiasMeanVarDesc, epsilon, &g);
  if (st != CUDNN_STATUS_SUCCESS) return st;
  if (alpha == nullptr || beta == nullptr || x == nullptr || y == nullptr || bnScale == nullptr ||
      bnBias == nullptr || estimatedMean == nullptr || estimatedVariance == nullptr)
    return CUDNN_STATUS_BAD_PARAM;
  const Dims4 yd = yDesc->d;
  const float* xs = static_cast<const float*>(x);
  float* ys = static_cast<float*>(y);
  const float* scale = static_cast<const float*>(bnScale);
  const float* bias = static_cast<const float*>(bnBias);
  const float* emean = static_cast<const float*>(estimatedMean);
  const float* evar = static_cast<const float*>(estimatedVariance);
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  return queue(handle, [=] {
    const std::vector<std::int64_t> poff = param_offsets(g);
    std::vector<double> mean(poff.size()), invstd(poff.size());
    for (std::size_t j = 0; j < poff.size(); ++j) {
      mean[j] = emean[poff[j]];
      invstd[j] = 1.0 / std::sqrt(static_cast<double>(evar[poff[j]]) + epsilon);
    }
    bn_normalize(g, yd, xs, ys, scale, bias, mean, invstd, al, be);
  });
}

cudnnStatus_t CUDNNWINAPI cudnnBatchNormalizationBackward(
    cudnnHandle_t handle, cudnnBatchNormMode_t mode, const void* alphaDataDiff, const void* betaDataDiff,
    const void* alphaParamDiff, const void* betaParamDiff, const cudnnTensorDescriptor_t xDesc, const void* x,
    const cudnnTensorDescriptor_t dyDesc, const void* dy, const cudnnTensorDescriptor_t dxDesc, void* dx,
    const cudnnTensorDescriptor_t dBnScaleBiasDesc, const void* bnScale, void* dBnScaleResult,
    void* dBnBiasResult, double epsilon, const void* savedMean, const void* savedInvVariance) {
  cugrad_emu::trace::count(__func__);
  BnGeo g;
  const cudnnStatus_t st = resolve_bn(handle, mode, xDesc, {dyDesc, dxDesc}, dBnScaleBiasDesc, epsilon, &g);
  if (st != CUDNN_STATUS_SUCCESS) return st;
  if (alphaDataDiff == nullptr || betaDataDiff == nullptr || alphaParamDiff == nullptr ||
      betaParamDiff == nullptr || x == nullptr || dy == nullptr || dx == nullptr || bnScale == nullptr ||
      dBnScaleResult == nullptr || dBnBiasResult == nullptr)
    return CUDNN_STATUS_BAD_PARAM;
  if ((savedMean == nullptr) != (savedInvVariance == nullptr)) return CUDNN_STATUS_BAD_PARAM;
  const float* xs = static_cast<const float*>(x);
  const float* dys = static_cast<const float*>(dy);
  const float* scale = static_cast<const float*>(bnScale);
  const float* smean = static_cast<const float*>(savedMean);
  const float* sinv = static_cast<const float*>(savedInvVariance);
  float* dxs = static_cast<float*>(dx);
  float* dscale = static_cast<float*>(dBnScaleResult);
  float* dbias = static_cast<float*>(dBnBiasResult);
  const Dims4 dyd = dyDesc->d, dxd = dxDesc->d;
  const float a_data = *static_cast<const float*>(alphaDataDiff),
              b_data = *static_cast<const float*>(betaDataDiff);
  const float a_param = *static_cast<const float*>(alphaParamDiff),
              b_param = *static_cast<const float*>(betaParamDiff);
  return queue(handle, [=] {
    const std::vector<std::int64_t> poff = param_offsets(g);
    std::vector<double> mean, invstd;
    if (smean != nullptr) {
      for (const std::int64_t o : poff) {
        mean.push_back(smean[o]);
        invstd.push_back(sinv[o]);
      }
    } else {
      bn_statistics(g, xs, &mean, &invstd);
      for (double& v : invstd) v = 1.0 / std::sqrt(v + epsilon);
    }
    std::vector<double> sum_dy(poff.size(), 0.0), sum_dy_xhat(poff.size(), 0.0);
    for_each_bn(g, [&](std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w, std::int64_t j) {
      const double d = dys[at(dyd, n, c, h, w)];
      sum_dy[j] += d;
      sum_dy_xhat[j] += d * (xs[at(g.x, n, c, h, w)] - mean[j]) * invstd[j];
    });
    const double M = static_cast<double>(g.count);
    for_each_bn(g, [&](std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w, std::int64_t j) {
      const double xhat = (xs[at(g.x, n, c, h, w)] - mean[j]) * invstd[j];
      const double v = static_cast<double>(scale[poff[j]]) * invstd[j] / M *
                       (M * dys[at(dyd, n, c, h, w)] - sum_dy[j] - xhat * sum_dy_xhat[j]);
      blend(dxs + at(dxd, n, c, h, w), v, a_data, b_data);
    });
    for (std::size_t j = 0; j < poff.size(); ++j) {
      blend(dscale + poff[j], sum_dy_xhat[j], a_param, b_param);
      blend(dbias + poff[j], sum_dy[j], a_param, b_param);
    }
  });
}

}  // extern "C"

// ---- the graph (backend) API, for cuda/conv_graph.cpp: one convolution operation per graph ----
//
// Descriptors keep their attributes as raw values; finalizing checks what a convolution graph
// needs. The engine heuristics offer four emulated engines, each computing the convolution the
// same way but with notes that cugrad must filter on:
//   engine 0: CUDNN_NUMERICAL_NOTE_TENSOR_CORE (computes with TF32 inputs, as a GPU would)
//   engine 1: CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION
//   engine 2: CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC, needs a 256-byte workspace; each call moves
//             a few outputs by one ulp, differently every call (as atomics' summation order would)
//   engine 3: no notes, no workspace
//   engine 4: no notes, no workspace; no heuristics mode proposes it: only a configuration made
//             from the engine's global index reaches it (CUDNN_ATTR_OPERATIONGRAPH_ENGINE_GLOBAL_COUNT = 5)
// CUDNN_HEUR_MODE_A proposes engines 0..3 in that order, CUDNN_HEUR_MODE_FALLBACK engine 3 only.
// CUGRAD_EMU_CUDNN_GRAPH=0 in the environment makes heuristics finalize with
// CUDNN_STATUS_NOT_SUPPORTED (a cuDNN without engines for the graph: cugrad must fall back).
// cudnnBackendExecute computes as the legacy entry points (same semantics, alpha and beta from
// the operation), after checking the variant pack's ids, pointers and workspace.

namespace {

struct Attr {
  cudnnBackendAttributeType_t type;
  std::int64_t count;
  std::vector<unsigned char> bytes;
};

struct BackendObj {
  cudnnBackendDescriptorType_t type;
  bool finalized = false;
  std::unordered_map<int, Attr> attrs;
  int engine = -1;               // ENGINECFG, ENGINE: the emulated engine
  BackendObj* graph = nullptr;   // HEUR, ENGINECFG, ENGINE: the operation graph
  BackendObj* config = nullptr;  // EXECUTION_PLAN: its engine configuration (copied below)
  int plan_engine = -1;
  BackendObj* plan_graph = nullptr;
};

std::mutex g_backend_mutex;
std::unordered_map<void*, BackendObj*>& backend_live() {
  static auto* m = new std::unordered_map<void*, BackendObj*>();
  return *m;
}

BackendObj* backend_obj(void* p) {
  std::lock_guard<std::mutex> lock(g_backend_mutex);
  const auto it = backend_live().find(p);
  return it == backend_live().end() ? nullptr : it->second;
}

std::size_t attr_element_size(cudnnBackendAttributeType_t t) {
  switch (t) {
    case CUDNN_TYPE_HANDLE:
      return sizeof(cudnnHandle_t);
    case CUDNN_TYPE_DATA_TYPE:
      return sizeof(cudnnDataType_t);
    case CUDNN_TYPE_INT64:
      return sizeof(std::int64_t);
    case CUDNN_TYPE_FLOAT:
      return sizeof(float);
    case CUDNN_TYPE_DOUBLE:
      return sizeof(double);
    case CUDNN_TYPE_VOID_PTR:
      return sizeof(void*);
    case CUDNN_TYPE_CONVOLUTION_MODE:
      return sizeof(cudnnConvolutionMode_t);
    case CUDNN_TYPE_HEUR_MODE:
      return sizeof(cudnnBackendHeurMode_t);
    case CUDNN_TYPE_BACKEND_DESCRIPTOR:
      return sizeof(cudnnBackendDescriptor_t);
    default:
      return 0;
  }
}

const Attr* attr(const BackendObj* o, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
                 std::int64_t count = -1) {
  const auto it = o->attrs.find(static_cast<int>(name));
  if (it == o->attrs.end() || it->second.type != type) return nullptr;
  if (count >= 0 && it->second.count != count) return nullptr;
  return &it->second;
}

template <class T>
T attr_value(const Attr* a, std::int64_t i = 0) {
  T v;
  std::memcpy(&v, a->bytes.data() + static_cast<std::size_t>(i) * sizeof(T), sizeof(T));
  return v;
}

// The finalized descriptor an attribute names, of the given type, or null.
BackendObj* attr_desc(const BackendObj* o, cudnnBackendAttributeName_t name,
                      cudnnBackendDescriptorType_t type) {
  const Attr* a = attr(o, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1);
  if (a == nullptr) return nullptr;
  BackendObj* d = backend_obj(attr_value<void*>(a));
  return d != nullptr && d->type == type && d->finalized ? d : nullptr;
}

struct GraphConv {
  Dir dir;
  BackendObj *x, *w, *y, *conv;
  float alpha, beta;
};

// The convolution operation of a finalized graph.
bool graph_conv(const BackendObj* graph, GraphConv* out) {
  const Attr* ops = attr(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1);
  if (ops == nullptr) return false;
  const BackendObj* op = backend_obj(attr_value<void*>(ops));
  if (op == nullptr || !op->finalized) return false;
  const auto tensor = [&](cudnnBackendAttributeName_t n) {
    return attr_desc(op, n, CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  };
  const auto scalar = [&](cudnnBackendAttributeName_t n, float* v) {
    const Attr* a = attr(op, n, CUDNN_TYPE_FLOAT, 1);
    if (a != nullptr) {
      *v = attr_value<float>(a);
      return true;
    }
    a = attr(op, n, CUDNN_TYPE_DOUBLE, 1);
    if (a == nullptr) return false;
    *v = static_cast<float>(attr_value<double>(a));
    return true;
  };
  struct OpNames {  // written out apart from cuda/conv_graph.cpp's table, so that a slip there shows
    cudnnBackendDescriptorType_t type;
    Dir dir;
    cudnnBackendAttributeName_t x, w, y, conv, alpha, beta;
  };
  static constexpr OpNames kOps[] = {
      {CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR, Dir::forward,
       CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
       CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
       CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA},
      {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR, Dir::backward_data,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA},
      {CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR, Dir::backward_filter,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA},
  };
  const OpNames* names = nullptr;
  for (const OpNames& n : kOps)
    if (n.type == op->type) names = &n;
  if (names == nullptr) return false;
  GraphConv g{};
  g.dir = names->dir;
  g.x = tensor(names->x);
  g.w = tensor(names->w);
  g.y = tensor(names->y);
  g.conv = attr_desc(op, names->conv, CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  const bool ok = scalar(names->alpha, &g.alpha) && scalar(names->beta, &g.beta);
  if (!ok || g.x == nullptr || g.w == nullptr || g.y == nullptr || g.conv == nullptr) return false;
  *out = g;
  return true;
}

Dims4 tensor_dims(const BackendObj* t) {
  Dims4 d;
  d.set = true;
  const Attr* dims = attr(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4);
  const Attr* strides = attr(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4);
  for (int i = 0; i < 4; ++i) {
    d.dims[i] = attr_value<std::int64_t>(dims, i);
    d.strides[i] = attr_value<std::int64_t>(strides, i);
  }
  return d;
}

// The legacy geometry of a graph convolution (the same checks as resolve()).
cudnnStatus_t graph_geo(const GraphConv& c, Geo* out) {
  Geo r{};
  r.x = tensor_dims(c.x);
  r.w = tensor_dims(c.w);
  r.y = tensor_dims(c.y);
  r.N = r.x.dims[0];
  r.C = r.x.dims[1];
  r.H = r.x.dims[2];
  r.W = r.x.dims[3];
  r.K = r.w.dims[0];
  r.Cg = r.w.dims[1];
  r.R = r.w.dims[2];
  r.S = r.w.dims[3];
  if (r.Cg <= 0 || r.C % r.Cg != 0) return CUDNN_STATUS_BAD_PARAM;
  r.G = r.C / r.Cg;
  if (r.K % r.G != 0) return CUDNN_STATUS_BAD_PARAM;
  r.Kg = r.K / r.G;
  const Attr* dil = attr(c.conv, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2);
  const Attr* stride = attr(c.conv, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2);
  const Attr* pre = attr(c.conv, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2);
  r.dil_h = attr_value<std::int64_t>(dil, 0);
  r.dil_w = attr_value<std::int64_t>(dil, 1);
  r.stride_h = attr_value<std::int64_t>(stride, 0);
  r.stride_w = attr_value<std::int64_t>(stride, 1);
  r.pad_h = attr_value<std::int64_t>(pre, 0);
  r.pad_w = attr_value<std::int64_t>(pre, 1);
  r.flip = attr_value<cudnnConvolutionMode_t>(attr(c.conv, CUDNN_ATTR_CONVOLUTION_CONV_MODE,
                                                   CUDNN_TYPE_CONVOLUTION_MODE, 1)) == CUDNN_CONVOLUTION;
  r.P = out_size(r.H, r.pad_h, r.R, r.stride_h, r.dil_h);
  r.Q = out_size(r.W, r.pad_w, r.S, r.stride_w, r.dil_w);
  if (r.P <= 0 || r.Q <= 0 || r.y.dims[0] != r.N || r.y.dims[1] != r.K || r.y.dims[2] != r.P ||
      r.y.dims[3] != r.Q)
    return CUDNN_STATUS_BAD_PARAM;
  *out = r;
  return CUDNN_STATUS_SUCCESS;
}

constexpr int kGraphEngines = 4;  // proposed by the heuristics
constexpr int kGraphEngineCount = 5;
std::size_t engine_workspace(int engine) { return engine == 2 ? 256 : 0; }

cudnnStatus_t finalize_backend(BackendObj* o) {
  switch (o->type) {
    case CUDNN_BACKEND_TENSOR_DESCRIPTOR: {
      const Attr* type = attr(o, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1);
      if (type == nullptr || attr(o, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4) == nullptr ||
          attr(o, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4) == nullptr ||
          attr(o, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1) == nullptr)
        return CUDNN_STATUS_BAD_PARAM;
      if (attr_value<cudnnDataType_t>(type) != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
      const Dims4 d = tensor_dims(o);
      for (int i = 0; i < 4; ++i)
        if (d.dims[i] <= 0 || d.strides[i] <= 0) return CUDNN_STATUS_BAD_PARAM;
      return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR: {
      const Attr* comp = attr(o, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1);
      const Attr* dims = attr(o, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1);
      const Attr* pre = attr(o, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2);
      const Attr* post = attr(o, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2);
      if (comp == nullptr || dims == nullptr || pre == nullptr || post == nullptr ||
          attr(o, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1) == nullptr ||
          attr(o, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2) == nullptr ||
          attr(o, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2) == nullptr ||
          attr_value<std::int64_t>(dims) != 2)
        return CUDNN_STATUS_BAD_PARAM;
      if (attr_value<cudnnDataType_t>(comp) != CUDNN_DATA_FLOAT || pre->bytes != post->bytes)
        return CUDNN_STATUS_NOT_SUPPORTED;  // emulated: float math, symmetric padding
      return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR:
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR: {
      BackendObj graph{CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR};  // checks the operation through a graph view
      o->finalized = true;
      void* self = nullptr;
      {
        std::lock_guard<std::mutex> lock(g_backend_mutex);
        for (const auto& [k, v] : backend_live())
          if (v == o) self = k;
      }
      Attr ops{CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, std::vector<unsigned char>(sizeof(void*))};
      std::memcpy(ops.bytes.data(), &self, sizeof(void*));
      graph.attrs[CUDNN_ATTR_OPERATIONGRAPH_OPS] = ops;
      GraphConv c{};
      Geo geo{};
      const bool ok = graph_conv(&graph, &c) && graph_geo(c, &geo) == CUDNN_STATUS_SUCCESS;
      o->finalized = false;
      return ok ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_BAD_PARAM;
    }
    case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR: {
      GraphConv c{};
      const Attr* h = attr(o, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1);
      if (h == nullptr || !is_live(attr_value<cudnnHandle_t>(h), Kind::handle) || !graph_conv(o, &c))
        return CUDNN_STATUS_BAD_PARAM;
      return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR: {
      o->graph = attr_desc(o, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
      if (o->graph == nullptr || attr(o, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1) == nullptr)
        return CUDNN_STATUS_BAD_PARAM;
      const char* env = std::getenv("CUGRAD_EMU_CUDNN_GRAPH");
      if (env != nullptr && std::strcmp(env, "0") == 0) return CUDNN_STATUS_NOT_SUPPORTED;
      return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_BACKEND_ENGINE_DESCRIPTOR: {
      o->graph = attr_desc(o, CUDNN_ATTR_ENGINE_OPERATION_GRAPH, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
      const Attr* index = attr(o, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1);
      if (o->graph == nullptr || index == nullptr) return CUDNN_STATUS_BAD_PARAM;
      const std::int64_t i = attr_value<std::int64_t>(index);
      if (i < 0 || i >= kGraphEngineCount) return CUDNN_STATUS_NOT_SUPPORTED;
      o->engine = static_cast<int>(i);
      return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_BACKEND_ENGINECFG_DESCRIPTOR: {
      const BackendObj* engine = attr_desc(o, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_BACKEND_ENGINE_DESCRIPTOR);
      if (engine == nullptr) return CUDNN_STATUS_BAD_PARAM;
      o->engine = engine->engine;
      o->graph = engine->graph;
      return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR: {
      const Attr* h = attr(o, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1);
      BackendObj* cfg =
          attr_desc(o, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
      if (h == nullptr || !is_live(attr_value<cudnnHandle_t>(h), Kind::handle) || cfg == nullptr)
        return CUDNN_STATUS_BAD_PARAM;
      o->plan_engine = cfg->engine;
      o->plan_graph = cfg->graph;
      return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR: {
      const Attr* ids = attr(o, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64);
      const Attr* ptrs = attr(o, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR);
      if (ids == nullptr || ptrs == nullptr || ids->count != ptrs->count ||
          attr(o, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1) == nullptr)
        return CUDNN_STATUS_BAD_PARAM;
      return CUDNN_STATUS_SUCCESS;
    }
    default:
      return CUDNN_STATUS_NOT_SUPPORTED;
  }
}

// The pointer a variant pack gives for the tensor `t`, or null.
void* pack_pointer(const BackendObj* pack, const BackendObj* t) {
  const std::int64_t uid =
      attr_value<std::int64_t>(attr(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1));
  const Attr* ids = attr(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64);
  const Attr* ptrs = attr(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR);
  for (std::int64_t i = 0; i < ids->count; ++i)
    if (attr_value<std::int64_t>(ids, i) == uid) return attr_value<void*>(ptrs, i);
  return nullptr;
}

}  // namespace

extern "C" {

cudnnStatus_t CUDNNWINAPI cudnnBackendCreateDescriptor(cudnnBackendDescriptorType_t descriptorType,
                                                       cudnnBackendDescriptor_t* descriptor) {
  if (descriptor == nullptr) return CUDNN_STATUS_BAD_PARAM;
  auto* o = new BackendObj{descriptorType};
  std::lock_guard<std::mutex> lock(g_backend_mutex);
  backend_live()[o] = o;
  *descriptor = o;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnBackendDestroyDescriptor(cudnnBackendDescriptor_t descriptor) {
  if (descriptor == nullptr) return CUDNN_STATUS_SUCCESS;
  BackendObj* o = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_backend_mutex);
    const auto it = backend_live().find(descriptor);
    if (it == backend_live().end()) return CUDNN_STATUS_BAD_PARAM;
    o = it->second;
    backend_live().erase(it);
  }
  delete o;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnBackendSetAttribute(cudnnBackendDescriptor_t descriptor,
                                                   cudnnBackendAttributeName_t attributeName,
                                                   cudnnBackendAttributeType_t attributeType,
                                                   int64_t elementCount, const void* arrayOfElements) {
  BackendObj* o = backend_obj(descriptor);
  const std::size_t size = attr_element_size(attributeType);
  if (o == nullptr || o->finalized || elementCount < 0 || (elementCount > 0 && arrayOfElements == nullptr))
    return CUDNN_STATUS_BAD_PARAM;
  if (size == 0) return CUDNN_STATUS_NOT_SUPPORTED;
  Attr a{attributeType, elementCount,
         std::vector<unsigned char>(size * static_cast<std::size_t>(elementCount))};
  if (elementCount > 0) std::memcpy(a.bytes.data(), arrayOfElements, a.bytes.size());
  o->attrs[static_cast<int>(attributeName)] = std::move(a);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t CUDNNWINAPI cudnnBackendFinalize(cudnnBackendDescriptor_t descriptor) {
  cugrad_emu::trace::count(__func__);
  BackendObj* o = backend_obj(descriptor);
  if (o == nullptr || o->finalized) return CUDNN_STATUS_BAD_PARAM;
  const cudnnStatus_t st = finalize_backend(o);
  if (st == CUDNN_STATUS_SUCCESS) o->finalized = true;
  return st;
}

cudnnStatus_t CUDNNWINAPI cudnnBackendGetAttribute(cudnnBackendDescriptor_t const descriptor,
                                                   cudnnBackendAttributeName_t attributeName,
                                                   cudnnBackendAttributeType_t attributeType,
                                                   int64_t requestedElementCount, int64_t* elementCount,
                                                   void* arrayOfElements) {
  BackendObj* o = backend_obj(descriptor);
  if (o == nullptr || !o->finalized || elementCount == nullptr || requestedElementCount < 0)
    return CUDNN_STATUS_BAD_PARAM;
  // The descriptors to fill (results of the heuristics, the engine of a configuration).
  const auto fill = [&](int index, int engine, cudnnBackendDescriptorType_t type) {
    BackendObj* out = backend_obj(static_cast<void**>(arrayOfElements)[index]);
    if (out == nullptr || out->type != type) return false;
    out->engine = engine;
    out->graph = o->graph;
    out->finalized = true;
    return true;
  };
  switch (attributeName) {
    case CUDNN_ATTR_ENGINEHEUR_RESULTS: {
      if (o->type != CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR || attributeType != CUDNN_TYPE_BACKEND_DESCRIPTOR)
        return CUDNN_STATUS_BAD_PARAM;
      const auto mode =
          attr_value<cudnnBackendHeurMode_t>(attr(o, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE));
      const int first = mode == CUDNN_HEUR_MODE_FALLBACK ? kGraphEngines - 1 : 0;
      const std::int64_t available = kGraphEngines - first;
      if (requestedElementCount == 0) {
        *elementCount = available;
        return CUDNN_STATUS_SUCCESS;
      }
      if (arrayOfElements == nullptr) return CUDNN_STATUS_BAD_PARAM;
      const std::int64_t n = std::min(requestedElementCount, available);
      for (std::int64_t i = 0; i < n; ++i)
        if (!fill(static_cast<int>(i), first + static_cast<int>(i), CUDNN_BACKEND_ENGINECFG_DESCRIPTOR))
          return CUDNN_STATUS_BAD_PARAM;
      *elementCount = n;
      return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_ATTR_ENGINECFG_ENGINE:
      if (o->type != CUDNN_BACKEND_ENGINECFG_DESCRIPTOR || attributeType != CUDNN_TYPE_BACKEND_DESCRIPTOR ||
          requestedElementCount < 1 || arrayOfElements == nullptr ||
          !fill(0, o->engine, CUDNN_BACKEND_ENGINE_DESCRIPTOR))
        return CUDNN_STATUS_BAD_PARAM;
      *elementCount = 1;
      return CUDNN_STATUS_SUCCESS;
    case CUDNN_ATTR_ENGINE_NUMERICAL_NOTE:
    case CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE: {
      if (o->type != CUDNN_BACKEND_ENGINE_DESCRIPTOR) return CUDNN_STATUS_BAD_PARAM;
      const bool numerical = attributeName == CUDNN_ATTR_ENGINE_NUMERICAL_NOTE;
      if (attributeType != (numerical ? CUDNN_TYPE_NUMERICAL_NOTE : CUDNN_TYPE_BEHAVIOR_NOTE))
        return CUDNN_STATUS_BAD_PARAM;
      std::vector<int> notes;
      if (numerical && o->engine == 0) notes.push_back(CUDNN_NUMERICAL_NOTE_TENSOR_CORE);
      if (numerical && o->engine == 2) notes.push_back(CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC);
      if (!numerical && o->engine == 1) notes.push_back(CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION);
      const std::int64_t n =
          std::min<std::int64_t>(requestedElementCount, static_cast<std::int64_t>(notes.size()));
      if (n > 0 && arrayOfElements == nullptr) return CUDNN_STATUS_BAD_PARAM;
      for (std::int64_t i = 0; i < n; ++i) {
        if (numerical)
          static_cast<cudnnBackendNumericalNote_t*>(arrayOfElements)[i] =
              static_cast<cudnnBackendNumericalNote_t>(notes[static_cast<std::size_t>(i)]);
        else
          static_cast<cudnnBackendBehaviorNote_t*>(arrayOfElements)[i] =
              static_cast<cudnnBackendBehaviorNote_t>(notes[static_cast<std::size_t>(i)]);
      }
      *elementCount = requestedElementCount == 0 ? static_cast<std::int64_t>(notes.size()) : n;
      return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_ATTR_OPERATIONGRAPH_ENGINE_GLOBAL_COUNT:
      if (o->type != CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR || attributeType != CUDNN_TYPE_INT64 ||
          requestedElementCount < 1 || arrayOfElements == nullptr)
        return CUDNN_STATUS_BAD_PARAM;
      *static_cast<std::int64_t*>(arrayOfElements) = kGraphEngineCount;
      *elementCount = 1;
      return CUDNN_STATUS_SUCCESS;
    case CUDNN_ATTR_ENGINE_GLOBAL_INDEX:
      if (o->type != CUDNN_BACKEND_ENGINE_DESCRIPTOR || attributeType != CUDNN_TYPE_INT64 ||
          requestedElementCount < 1 || arrayOfElements == nullptr)
        return CUDNN_STATUS_BAD_PARAM;
      *static_cast<std::int64_t*>(arrayOfElements) = o->engine;
      *elementCount = 1;
      return CUDNN_STATUS_SUCCESS;
    case CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE:
      if (o->type != CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR || attributeType != CUDNN_TYPE_INT64 ||
          requestedElementCount < 1 || arrayOfElements == nullptr)
        return CUDNN_STATUS_BAD_PARAM;
      *static_cast<std::int64_t*>(arrayOfElements) =
          static_cast<std::int64_t>(engine_workspace(o->plan_engine));
      *elementCount = 1;
      return CUDNN_STATUS_SUCCESS;
    default:
      return CUDNN_STATUS_NOT_SUPPORTED;
  }
}

cudnnStatus_t CUDNNWINAPI cudnnBackendExecute(cudnnHandle_t handle, cudnnBackendDescriptor_t executionPlan,
                                              cudnnBackendDescriptor_t variantPack) {
  cugrad_emu::trace::count(__func__);
  const BackendObj* plan = backend_obj(executionPlan);
  const BackendObj* pack = backend_obj(variantPack);
  if (!is_live(handle, Kind::handle) || plan == nullptr || pack == nullptr || !plan->finalized ||
      !pack->finalized || plan->type != CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR ||
      pack->type != CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR || backend_obj(plan->plan_graph) == nullptr)
    return CUDNN_STATUS_BAD_PARAM;
  GraphConv c{};
  Geo g{};
  if (!graph_conv(plan->plan_graph, &c) || graph_geo(c, &g) != CUDNN_STATUS_SUCCESS)
    return CUDNN_STATUS_BAD_PARAM;
  void* x = pack_pointer(pack, c.x);
  void* w = pack_pointer(pack, c.w);
  void* y = pack_pointer(pack, c.y);
  void* ws = attr_value<void*>(attr(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1));
  const std::size_t need = engine_workspace(plan->plan_engine);
  if (x == nullptr || w == nullptr || y == nullptr || (need > 0 && ws == nullptr))
    return CUDNN_STATUS_BAD_PARAM;
  if (cugrad_emu::state::null_compute()) return CUDNN_STATUS_SUCCESS;
  // Queued with what it needs by value: the plan and the variant pack may be destroyed after the
  // call.
  float* out = static_cast<float*>(c.dir == Dir::forward ? y : c.dir == Dir::backward_data ? x : w);
  const Dir dir = c.dir;
  const float alpha = c.alpha, beta = c.beta;
  const int engine = plan->plan_engine;
  const auto* xs = static_cast<const float*>(x);
  const auto* wts = static_cast<const float*>(w);
  const auto* ys = static_cast<const float*>(y);
  return queue(handle, [=] {
    if (need > 0) std::memset(ws, 0xA5, need);
    const auto run = [&](auto kernel) { kernel(dir, g, alpha, xs, wts, ys, beta, out); };
    if (engine == 0)
      run(compute<Precision::tf32>);  // the tensor-core engine
    else
      run(compute<Precision::fp32>);
    if (engine == 2) {  // nondeterministic: one output in 7, from a per-run offset, one ulp up
      static std::atomic<std::int64_t> calls{0};
      const Dims4& od = dir == Dir::forward ? g.y : dir == Dir::backward_data ? g.x : g.w;
      const std::int64_t phase = calls.fetch_add(1) % 7;
      for_each_element(od, [&](std::int64_t off, std::int64_t idx) {
        if (idx % 7 == phase) out[off] = std::nextafter(out[off], INFINITY);
      });
    }
  });
}

}  // extern "C"
