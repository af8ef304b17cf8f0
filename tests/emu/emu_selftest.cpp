// Checks of the cugrad CUDA emulator itself: barriers, shuffles, shared memory (static and
// dynamic), launch validation, built-in indices, copy checks, exited threads at barriers, stream
// capture and CUDA graphs (StreamCapture.*).
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "tests/emu/emu_kernels.h"

namespace {

template <class T>
T* device_copy(const std::vector<T>& v) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, v.size() * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return static_cast<T*>(p);
}

template <class T>
std::vector<T> host_copy(const T* p, std::size_t n) {
  std::vector<T> v(n);
  EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

TEST(Emulator, BlockReductionWithShufflesAndBarriers) {
  for (int block : {32, 96, 256, 1000, 1024}) {
    for (int n : {1, 7, 33, 100003}) {
      std::vector<float> x(static_cast<std::size_t>(n));
      for (int i = 0; i < n; ++i) x[static_cast<std::size_t>(i)] = static_cast<float>(i % 17) - 8.0f;
      double want = std::accumulate(x.begin(), x.end(), 0.0);
      float* dx = device_copy(x);
      float* out = device_copy(std::vector<float>{0.0f});
      ASSERT_EQ(emu_test::block_sum(dx, out, n, 5, block), cudaSuccess);
      EXPECT_NEAR(host_copy(out, 1)[0], want, 1e-3) << "block " << block << " n " << n;
      cudaFree(dx);
      cudaFree(out);
    }
  }
}

TEST(Emulator, DynamicSharedMemoryAndItsLimit) {
  std::vector<int> x(300);
  std::iota(x.begin(), x.end(), 0);
  int* dx = device_copy(x);
  int* dy = device_copy(std::vector<int>(300, 0));
  ASSERT_EQ(emu_test::reverse(dx, dy, 300, 300 * sizeof(int)), cudaSuccess);
  auto y = host_copy(dy, 300);
  for (int i = 0; i < 300; ++i) EXPECT_EQ(y[static_cast<std::size_t>(i)], 299 - i);
  EXPECT_EQ(emu_test::reverse(dx, dy, 300, 64 * 1024), cudaErrorInvalidValue);  // over 48 KiB unset
  EXPECT_EQ(emu_test::reverse(dx, dy, 2000, 2000 * sizeof(int)), cudaErrorInvalidConfiguration);
  cudaFree(dx);
  cudaFree(dy);
}

TEST(Emulator, MissingBarrierReadsPoisonInOneOrder) {
  int* dy = device_copy(std::vector<int>(64, 0));
  ASSERT_EQ(emu_test::racy(dy), cudaSuccess);
  auto y = host_copy(dy, 64);
  // Forward order: thread t runs to completion before t + 1 writes its slot, so it reads the
  // poison (-1); reverse order would read thread 0's slot for thread 63 only.
  int poisoned = 0;
  for (int v : y) poisoned += v == -1;
  EXPECT_GE(poisoned, 1);
  cudaFree(dy);
}

TEST(Emulator, BuiltInIndices) {
  const dim3 grid(3, 2, 2), block(5, 3, 2);
  const std::size_t n = 12 * 30;
  unsigned* d = device_copy(std::vector<unsigned>(n, 0));
  ASSERT_EQ(emu_test::indices(d, grid, block), cudaSuccess);
  auto v = host_copy(d, n);
  for (std::size_t b = 0; b < 12; ++b)
    for (std::size_t t = 0; t < 30; ++t) EXPECT_EQ(v[b * 30 + t], b * 1000 + t);
  cudaFree(d);
}

TEST(Emulator, ExitedThreadsDoNotBlockBarriers) {
  int* d = device_copy(std::vector<int>(64, -5));
  ASSERT_EQ(emu_test::early_exit(d, 64, 40), cudaSuccess);
  auto y = host_copy(d, 64);
  for (int i = 0; i < 40; ++i)
    EXPECT_EQ(y[static_cast<std::size_t>(i)], i == 31 ? 31 : (i == 39 ? -1 : i + 1)) << i;
  for (int i = 40; i < 64; ++i) EXPECT_EQ(y[static_cast<std::size_t>(i)], -5);
  cudaFree(d);
}

TEST(Emulator, CopiesCheckTheirSides) {
  std::vector<float> host(4, 1.0f);
  void* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 16), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, host.data(), 16, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, host.data(), 17, cudaMemcpyHostToDevice), cudaErrorInvalidValue);  // overrun
  EXPECT_EQ(cudaMemcpy(host.data(), host.data(), 16, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  (void)cudaGetLastError();
  ASSERT_EQ(cudaFree(d), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(host.data(), d, 16, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);  // after free
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST(Emulator, FreshDeviceMemoryIsPoisoned) {
  void* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 4 * sizeof(float)), cudaSuccess);
  auto v = host_copy(static_cast<float*>(d), 4);
  for (float f : v) EXPECT_TRUE(std::isnan(f));
  cudaFree(d);
}

// With CUGRAD_EMU_ASYNC=1 (CTest runs this program both ways): a wait captures the event's
// record at the call; re-recording the event on an idle stream must not release it early.
TEST(Emulator, StreamWaitEventWaitsForTheRecordItCaptured) {
  cudaStream_t a, b, c;
  ASSERT_EQ(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&c, cudaStreamNonBlocking), cudaSuccess);
  cudaEvent_t e;
  ASSERT_EQ(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), cudaSuccess);
  int* flag = device_copy(std::vector<int>{0});
  int* out = device_copy(std::vector<int>{-7});
  ASSERT_EQ(emu_test::spin_then_set(flag, 50'000'000, a), cudaSuccess);  // 50 ms, then flag = 1
  ASSERT_EQ(cudaEventRecord(e, a), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(b, e, 0), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(e, c), cudaSuccess);  // completes at once on the idle stream
  ASSERT_EQ(cudaMemcpyAsync(out, flag, sizeof(int), cudaMemcpyDeviceToDevice, b), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(b), cudaSuccess);
  EXPECT_EQ(host_copy(out, 1)[0], 1);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaFree(flag);
  cudaFree(out);
  cudaEventDestroy(e);
  for (cudaStream_t s : {a, b, c}) cudaStreamDestroy(s);
}

// ---- Stream capture and CUDA graphs -------------------------------------------------------------

// The streams a StreamCapture test made: a test that fails with a capture open ends it, so that
// the open capture does not fail the tests after it (cudaMalloc is prohibited while it lasts).
std::vector<cudaStream_t> g_test_streams;

class StreamCapture : public ::testing::Test {
 protected:
  void SetUp() override { g_test_streams.clear(); }
  void TearDown() override {
    for (cudaStream_t s : g_test_streams) {
      cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
      if (cudaStreamIsCapturing(s, &status) != cudaSuccess || status == cudaStreamCaptureStatusNone) continue;
      ADD_FAILURE() << "a capture was left open";
      cudaGraph_t graph = nullptr;
      if (cudaStreamEndCapture(s, &graph) == cudaSuccess) cudaGraphDestroy(graph);
    }
    (void)cudaGetLastError();
  }
};

cudaStream_t new_stream(unsigned flags = cudaStreamNonBlocking) {
  cudaStream_t s = nullptr;
  EXPECT_EQ(cudaStreamCreateWithFlags(&s, flags), cudaSuccess);
  g_test_streams.push_back(s);
  return s;
}

cudaEvent_t new_event() {
  cudaEvent_t e = nullptr;
  EXPECT_EQ(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), cudaSuccess);
  return e;
}

float* pinned_floats(std::size_t n, float fill) {
  void* p = nullptr;
  EXPECT_EQ(cudaMallocHost(&p, n * sizeof(float)), cudaSuccess);
  auto* f = static_cast<float*>(p);
  for (std::size_t i = 0; i < n; ++i) f[i] = fill;
  return f;
}

cudaStreamCaptureStatus capture_status(cudaStream_t s) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  EXPECT_EQ(cudaStreamIsCapturing(s, &status), cudaSuccess);
  return status;
}

std::vector<float> iota_floats(int n, float start) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = start + static_cast<float>(i % 97);
  return v;
}

// A memset, two kernels and a copy to pinned memory, captured: nothing runs at the capture, and
// each launch computes from the input of the moment.
TEST_F(StreamCapture, ChainReplaysWithNewInputsAndRunsNothingAtCapture) {
  const int n = 1000;
  cudaStream_t s = new_stream();
  float* x = device_copy(iota_floats(n, 0.0f));
  float* y = device_copy(std::vector<float>(n, 42.0f));
  float* h = pinned_floats(n, -1.0f);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  EXPECT_EQ(capture_status(s), cudaStreamCaptureStatusActive);
  ASSERT_EQ(cudaMemsetAsync(y, 0, n * sizeof(float), s), cudaSuccess);
  ASSERT_EQ(emu_test::add_into(x, y, n, s), cudaSuccess);               // y = x (after the memset)
  ASSERT_EQ(emu_test::scale_add(y, y, n, 3.0f, 1.0f, s), cudaSuccess);  // y = 3x + 1
  ASSERT_EQ(cudaMemcpyAsync(h, y, n * sizeof(float), cudaMemcpyDeviceToHost, s), cudaSuccess);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  ASSERT_NE(graph, nullptr);
  EXPECT_EQ(capture_status(s), cudaStreamCaptureStatusNone);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(host_copy(y, n), std::vector<float>(n, 42.0f)) << "captured work ran at the capture";
  EXPECT_EQ(h[0], -1.0f);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int rep = 0; rep < 3; ++rep) {
    const auto in = iota_floats(n, 10.0f * static_cast<float>(rep));
    ASSERT_EQ(cudaMemcpy(x, in.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    for (int i = 0; i < n; ++i)
      ASSERT_EQ(h[i], 3.0f * in[static_cast<std::size_t>(i)] + 1.0f) << rep << " " << i;
  }
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaErrorInvalidValue);
  (void)cudaGetLastError();
  cudaFree(x);
  cudaFree(y);
  cudaFreeHost(h);
  cudaStreamDestroy(s);
}

void count_call(void* counter) { static_cast<std::atomic<int>*>(counter)->fetch_add(1); }

TEST_F(StreamCapture, HostFunctionsRunAtEachLaunchOnly) {
  cudaStream_t s = new_stream();
  std::atomic<int> calls{0};
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_EQ(cudaLaunchHostFunc(s, count_call, &calls), cudaSuccess);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiateWithFlags(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(calls.load(), 0);
  for (int rep = 0; rep < 3; ++rep) ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(calls.load(), 3);
  // Destroyed with launches pending: they keep what they run.
  for (int rep = 0; rep < 2; ++rep) ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(calls.load(), 5);
  cudaStreamDestroy(s);
}

// s1 forks s2 through an event; both work on the first kernel's output; s1 joins s2 back.
TEST_F(StreamCapture, ForkAndJoinAcrossTwoStreams) {
  const int n = 300;
  cudaStream_t s1 = new_stream(), s2 = new_stream();
  cudaEvent_t fork = new_event(), join = new_event();
  float* x = device_copy(iota_floats(n, 1.0f));
  float* a = device_copy(std::vector<float>(n, 0.0f));
  float* b = device_copy(std::vector<float>(n, 0.0f));
  float* c = device_copy(std::vector<float>(n, 0.0f));
  float* h = pinned_floats(n, -1.0f);
  ASSERT_EQ(cudaStreamBeginCapture(s1, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(emu_test::scale_add(x, a, n, 2.0f, 1.0f, s1), cudaSuccess);  // a = 2x + 1
  ASSERT_EQ(cudaEventRecord(fork, s1), cudaSuccess);
  EXPECT_EQ(capture_status(s2), cudaStreamCaptureStatusNone);
  ASSERT_EQ(cudaStreamWaitEvent(s2, fork, 0), cudaSuccess);  // s2 joins the capture
  EXPECT_EQ(capture_status(s2), cudaStreamCaptureStatusActive);
  EXPECT_EQ(cudaEventQuery(fork), cudaErrorCapturedEvent);
  // ... which invalidates the capture: take it from the top without that query.
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(s1, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(graph, nullptr);
  EXPECT_EQ(capture_status(s2), cudaStreamCaptureStatusNone);
  (void)cudaGetLastError();

  ASSERT_EQ(cudaStreamBeginCapture(s1, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(emu_test::scale_add(x, a, n, 2.0f, 1.0f, s1), cudaSuccess);  // a = 2x + 1
  ASSERT_EQ(cudaEventRecord(fork, s1), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(s2, fork, 0), cudaSuccess);
  ASSERT_EQ(emu_test::scale_add(a, b, n, 3.0f, 0.0f, s2), cudaSuccess);  // b = 3a
  ASSERT_EQ(emu_test::scale_add(a, c, n, 1.0f, 5.0f, s1), cudaSuccess);  // c = a + 5
  ASSERT_EQ(cudaEventRecord(join, s2), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(s1, join, 0), cudaSuccess);
  ASSERT_EQ(emu_test::add_into(b, c, n, s1), cudaSuccess);  // c = 4a + 5
  ASSERT_EQ(cudaMemcpyAsync(h, c, n * sizeof(float), cudaMemcpyDeviceToHost, s1), cudaSuccess);
  ASSERT_EQ(cudaStreamEndCapture(s1, &graph), cudaSuccess);
  EXPECT_EQ(capture_status(s2), cudaStreamCaptureStatusNone);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(h[0], -1.0f);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int rep = 0; rep < 2; ++rep) {
    const auto in = iota_floats(n, 1.0f + 7.0f * static_cast<float>(rep));
    ASSERT_EQ(cudaMemcpy(x, in.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, s2), cudaSuccess);  // any stream
    ASSERT_EQ(cudaStreamSynchronize(s2), cudaSuccess);
    for (int i = 0; i < n; ++i)
      ASSERT_EQ(h[i], 4.0f * (2.0f * in[static_cast<std::size_t>(i)] + 1.0f) + 5.0f) << rep << " " << i;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  for (float* p : {x, a, b, c}) cudaFree(p);
  cudaFreeHost(h);
  cudaEventDestroy(fork);
  cudaEventDestroy(join);
  cudaStreamDestroy(s1);
  cudaStreamDestroy(s2);
}

// Each call CUDA prohibits in a capture: its error, then the capture is invalidated (the stream
// still reports it, work on it fails), and cudaStreamEndCapture returns no graph.
TEST_F(StreamCapture, ProhibitedCallsInvalidateTheCapture) {
  cudaStream_t s = new_stream(), other = new_stream();
  float* d = device_copy(std::vector<float>(64, 1.0f));
  std::vector<float> pageable(64, 0.0f);
  float* pinned = pinned_floats(64, 0.0f);
  cudaEvent_t outside = new_event(), inside = new_event();
  ASSERT_EQ(cudaEventRecord(outside, other), cudaSuccess);
  void* scratch = nullptr;
  struct Case {
    const char* name;
    std::function<cudaError_t()> call;
    cudaError_t want;
  };
  const std::vector<Case> cases = {
      {"cudaStreamSynchronize", [&] { return cudaStreamSynchronize(s); }, cudaErrorStreamCaptureUnsupported},
      {"cudaStreamQuery", [&] { return cudaStreamQuery(s); }, cudaErrorStreamCaptureUnsupported},
      {"cudaDeviceSynchronize", [&] { return cudaDeviceSynchronize(); }, cudaErrorStreamCaptureUnsupported},
      {"cudaMalloc", [&] { return cudaMalloc(&scratch, 16); }, cudaErrorStreamCaptureUnsupported},
      {"cudaMallocHost", [&] { return cudaMallocHost(&scratch, 16); }, cudaErrorStreamCaptureUnsupported},
      {"cudaFree", [&] { return cudaFree(d); }, cudaErrorStreamCaptureUnsupported},
      {"cudaFreeHost", [&] { return cudaFreeHost(pinned); }, cudaErrorStreamCaptureUnsupported},
      {"cudaMemcpy", [&] { return cudaMemcpy(pageable.data(), d, 16, cudaMemcpyDeviceToHost); },
       cudaErrorStreamCaptureUnsupported},
      {"cudaMemset", [&] { return cudaMemset(d, 0, 16); }, cudaErrorStreamCaptureUnsupported},
      {"cudaMemcpyAsync from pageable memory",
       [&] { return cudaMemcpyAsync(d, pageable.data(), 16, cudaMemcpyHostToDevice, s); },
       cudaErrorStreamCaptureUnsupported},
      {"cudaMemcpyAsync to pageable memory",
       [&] { return cudaMemcpyAsync(pageable.data(), d, 16, cudaMemcpyDeviceToHost, s); },
       cudaErrorStreamCaptureUnsupported},
      {"cudaFreeAsync of memory from outside the capture", [&] { return cudaFreeAsync(d, s); },
       cudaErrorInvalidValue},
      {"cudaStreamWaitEvent on an event recorded outside", [&] { return cudaStreamWaitEvent(s, outside, 0); },
       cudaErrorStreamCaptureIsolation},
      {"cudaEventQuery of a captured event",
       [&] {
         EXPECT_EQ(cudaEventRecord(inside, s), cudaSuccess);
         return cudaEventQuery(inside);
       },
       cudaErrorCapturedEvent},
      {"cudaEventSynchronize of a captured event",
       [&] {
         EXPECT_EQ(cudaEventRecord(inside, s), cudaSuccess);
         return cudaEventSynchronize(inside);
       },
       cudaErrorCapturedEvent},
      {"cudaStreamEndCapture on a stream that joined",
       [&] {
         EXPECT_EQ(cudaEventRecord(inside, s), cudaSuccess);
         EXPECT_EQ(cudaStreamWaitEvent(other, inside, 0), cudaSuccess);
         cudaGraph_t g = nullptr;
         return cudaStreamEndCapture(other, &g);
       },
       cudaErrorStreamCaptureUnmatched},
      {"cudaMalloc from another thread (global mode)",
       [&] {
         cudaError_t e = cudaSuccess;
         std::thread t([&] { e = cudaMalloc(&scratch, 16); });
         t.join();
         return e;
       },
       cudaErrorStreamCaptureUnsupported},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
    ASSERT_EQ(emu_test::scale_add(d, d, 64, 1.0f, 0.0f, s), cudaSuccess);
    EXPECT_EQ(c.call(), c.want);
    EXPECT_EQ(capture_status(s), cudaStreamCaptureStatusInvalidated);
    EXPECT_EQ(emu_test::scale_add(d, d, 64, 1.0f, 0.0f, s), cudaErrorStreamCaptureInvalidated);
    EXPECT_EQ(cudaMemsetAsync(d, 0, 16, s), cudaErrorStreamCaptureInvalidated);
    cudaGraph_t graph = reinterpret_cast<cudaGraph_t>(&scratch);
    EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);
    EXPECT_EQ(graph, nullptr);
    EXPECT_EQ(capture_status(s), cudaStreamCaptureStatusNone);
    EXPECT_EQ(capture_status(other), cudaStreamCaptureStatusNone);
    (void)cudaGetLastError();
  }
  // The events last recorded in the (ended) capture stay unusable until recorded again.
  EXPECT_EQ(cudaEventQuery(inside), cudaErrorCapturedEvent);
  ASSERT_EQ(cudaEventRecord(inside, s), cudaSuccess);
  ASSERT_EQ(cudaEventSynchronize(inside), cudaSuccess);
  // Nothing that failed was done, and the stream works as before.
  EXPECT_EQ(host_copy(d, 1)[0], 1.0f);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  (void)cudaGetLastError();
  cudaFree(d);
  cudaFreeHost(pinned);
  cudaEventDestroy(outside);
  cudaEventDestroy(inside);
  cudaStreamDestroy(s);
  cudaStreamDestroy(other);
}

TEST_F(StreamCapture, BeginAndEndRules) {
  cudaStream_t s = new_stream(), t = new_stream();
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamBeginCapture(nullptr, cudaStreamCaptureModeGlobal), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaStreamBeginCapture(cudaStreamLegacy, cudaStreamCaptureModeGlobal),
            cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorIllegalState);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  EXPECT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaErrorIllegalState);
  EXPECT_EQ(cudaStreamEndCapture(t, &graph), cudaErrorIllegalState);  // t takes no part
  // Not an offence: the capture is still valid, and empty.
  EXPECT_EQ(capture_status(s), cudaStreamCaptureStatusActive);
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, t), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(t), cudaSuccess);
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  (void)cudaGetLastError();
  cudaStreamDestroy(s);
  cudaStreamDestroy(t);
}

// The modes: which threads may make potentially unsafe calls (cudaMalloc) during a capture.
TEST_F(StreamCapture, CaptureModesDecideWhoMayCallUnsafeFunctions) {
  cudaStream_t s = new_stream();
  const auto malloc_from_other_thread = [] {
    cudaError_t e = cudaSuccess;
    std::thread t([&] {
      void* p = nullptr;
      e = cudaMalloc(&p, 16);
      if (e == cudaSuccess) cudaFree(p);
    });
    t.join();
    return e;
  };
  cudaGraph_t graph = nullptr;
  // Thread-local: other threads are free; the capturing thread is not.
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  EXPECT_EQ(malloc_from_other_thread(), cudaSuccess);
  EXPECT_EQ(capture_status(s), cudaStreamCaptureStatusActive);
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, 16), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);
  // Relaxed: nobody is prohibited (but synchronizing the capturing stream still is).
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&p, 16), cudaSuccess);
  ASSERT_EQ(cudaFree(p), cudaSuccess);
  EXPECT_EQ(malloc_from_other_thread(), cudaSuccess);
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  // Global, with the calling thread's own mode relaxed.
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  ASSERT_EQ(cudaThreadExchangeStreamCaptureMode(&mode), cudaSuccess);
  EXPECT_EQ(mode, cudaStreamCaptureModeGlobal);
  ASSERT_EQ(cudaMalloc(&p, 16), cudaSuccess);
  ASSERT_EQ(cudaFree(p), cudaSuccess);
  ASSERT_EQ(cudaThreadExchangeStreamCaptureMode(&mode), cudaSuccess);
  EXPECT_EQ(mode, cudaStreamCaptureModeRelaxed);
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  (void)cudaGetLastError();
  cudaStreamDestroy(s);
}

// The legacy stream synchronizes with blocking streams: unusable while one captures, usable
// while only non-blocking streams capture.
TEST_F(StreamCapture, LegacyStreamDuringCapture) {
  float* d = device_copy(std::vector<float>(64, 2.0f));
  cudaStream_t nonblocking = new_stream(), blocking = new_stream(cudaStreamDefault);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(nonblocking, cudaStreamCaptureModeRelaxed), cudaSuccess);
  ASSERT_EQ(emu_test::scale_add(d, d, 64, 2.0f, 0.0f, nullptr), cudaSuccess);  // runs
  ASSERT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
  ASSERT_EQ(cudaStreamEndCapture(nonblocking, &graph), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(host_copy(d, 1)[0], 4.0f);
  ASSERT_EQ(cudaStreamBeginCapture(blocking, cudaStreamCaptureModeRelaxed), cudaSuccess);
  cudaStreamCaptureStatus status;
  EXPECT_EQ(cudaStreamIsCapturing(nullptr, &status), cudaErrorStreamCaptureImplicit);  // no invalidation
  EXPECT_EQ(capture_status(blocking), cudaStreamCaptureStatusActive);
  EXPECT_EQ(emu_test::scale_add(d, d, 64, 2.0f, 0.0f, nullptr), cudaErrorStreamCaptureImplicit);
  EXPECT_EQ(capture_status(blocking), cudaStreamCaptureStatusInvalidated);
  EXPECT_EQ(cudaStreamEndCapture(blocking, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(host_copy(d, 1)[0], 4.0f);
  (void)cudaGetLastError();
  cudaFree(d);
  cudaStreamDestroy(nonblocking);
  cudaStreamDestroy(blocking);
}

TEST_F(StreamCapture, UnjoinedForkFailsTheCapture) {
  cudaStream_t s1 = new_stream(), s2 = new_stream();
  cudaEvent_t fork = new_event();
  float* d = device_copy(std::vector<float>(64, 1.0f));
  ASSERT_EQ(cudaStreamBeginCapture(s1, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(fork, s1), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(s2, fork, 0), cudaSuccess);
  ASSERT_EQ(emu_test::scale_add(d, d, 64, 2.0f, 0.0f, s2), cudaSuccess);  // never joined back
  ASSERT_EQ(emu_test::scale_add(d, d, 64, 2.0f, 0.0f, s1), cudaSuccess);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(s1, &graph), cudaErrorStreamCaptureUnjoined);
  EXPECT_EQ(graph, nullptr);
  EXPECT_EQ(capture_status(s2), cudaStreamCaptureStatusNone);
  EXPECT_EQ(capture_status(s1), cudaStreamCaptureStatusNone);
  EXPECT_EQ(cudaGetLastError(), cudaErrorStreamCaptureUnjoined);
  // A fork that did nothing needs no join.
  ASSERT_EQ(cudaStreamBeginCapture(s1, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(fork, s1), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(s2, fork, 0), cudaSuccess);
  ASSERT_EQ(emu_test::scale_add(d, d, 64, 2.0f, 0.0f, s1), cudaSuccess);
  ASSERT_EQ(cudaStreamEndCapture(s1, &graph), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(host_copy(d, 1)[0], 1.0f);
  (void)cudaGetLastError();
  cudaFree(d);
  cudaEventDestroy(fork);
  cudaStreamDestroy(s1);
  cudaStreamDestroy(s2);
}

TEST_F(StreamCapture, TwoCapturesCannotMergeAndExternalWaitsAreNodes) {
  cudaStream_t a = new_stream(), b = new_stream(), other = new_stream();
  cudaEvent_t e = new_event();
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(a, cudaStreamCaptureModeRelaxed), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(b, cudaStreamCaptureModeRelaxed), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(e, a), cudaSuccess);
  EXPECT_EQ(cudaStreamWaitEvent(b, e, 0), cudaErrorStreamCaptureMerge);
  EXPECT_EQ(cudaStreamEndCapture(b, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(cudaStreamEndCapture(a, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(cudaGetLastError(), cudaErrorStreamCaptureInvalidated);
  // cudaEventWaitExternal: a wait node on the event's record at each launch.
  float* d = device_copy(std::vector<float>(64, 1.0f));
  float* h = pinned_floats(64, 0.0f);
  ASSERT_EQ(cudaEventRecord(e, other), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(a, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(a, e, cudaEventWaitExternal), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(h, d, 64 * sizeof(float), cudaMemcpyDeviceToHost, a), cudaSuccess);
  ASSERT_EQ(cudaStreamEndCapture(a, &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(emu_test::spin_then_set(reinterpret_cast<int*>(d), 20'000'000, other), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(e, other), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, a), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(a), cudaSuccess);
  EXPECT_EQ(reinterpret_cast<int*>(h)[0], 1);  // the copy waited for the kernel
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  (void)cudaGetLastError();
  cudaFree(d);
  cudaFreeHost(h);
  cudaEventDestroy(e);
  for (cudaStream_t s : {a, b, other}) cudaStreamDestroy(s);
}

// A graph allocation left allocated by the graph: the same address at every launch, allocated
// after a launch (the user may read and free it), and relaunching while it is allocated takes
// cudaGraphInstantiateFlagAutoFreeOnLaunch.
TEST_F(StreamCapture, GraphAllocationsAcrossLaunches) {
  const int n = 256;
  cudaStream_t s = new_stream();
  float* x = device_copy(iota_floats(n, 0.0f));
  float* h = pinned_floats(n, -1.0f);
  void* p = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(cudaMallocAsync(&p, n * sizeof(float), s), cudaSuccess);
  ASSERT_NE(p, nullptr);
  auto* y = static_cast<float*>(p);
  ASSERT_EQ(emu_test::scale_add(x, y, n, 2.0f, 0.0f, s), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(h, y, n * sizeof(float), cudaMemcpyDeviceToHost, s), cudaSuccess);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  // Not allocated before a launch.
  std::vector<float> back(n);
  EXPECT_EQ(cudaMemcpy(back.data(), y, sizeof(float), cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  cudaGraphExec_t second = nullptr;
  EXPECT_EQ(cudaGraphInstantiate(&second, graph, 0), cudaErrorInvalidValue);  // one exec at a time
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(h[5], 10.0f);
  ASSERT_EQ(cudaMemcpy(back.data(), y, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(back[7], 14.0f);
  EXPECT_EQ(cudaGraphLaunch(exec, s), cudaErrorInvalidValue);  // still allocated
  ASSERT_EQ(cudaFreeAsync(y, s), cudaSuccess);
  EXPECT_EQ(cudaFreeAsync(y, s), cudaErrorInvalidValue);  // freed already
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(h[5], 10.0f);
  ASSERT_EQ(cudaFree(y), cudaSuccess);
  ASSERT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);

  // With cudaGraphInstantiateFlagAutoFreeOnLaunch: each launch frees and allocates it again, at
  // the same address.
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, cudaGraphInstantiateFlagAutoFreeOnLaunch), cudaSuccess);
  for (int rep = 0; rep < 3; ++rep) {
    const auto in = iota_floats(n, static_cast<float>(rep));
    ASSERT_EQ(cudaMemcpy(x, in.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    for (int i = 0; i < n; ++i) ASSERT_EQ(h[i], 2.0f * in[static_cast<std::size_t>(i)]);
    ASSERT_EQ(cudaMemcpy(back.data(), y, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(back[3], 2.0f * in[3]);
  }
  // Destroyed while allocated: the memory stays the user's until freed.
  ASSERT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  ASSERT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(back.data(), y, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaFreeAsync(y, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(back.data(), y, sizeof(float), cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  (void)cudaGetLastError();
  cudaFree(x);
  cudaFreeHost(h);
  cudaStreamDestroy(s);
}

// Allocated and freed inside the graph: relaunches need no flag, and the memory is not
// allocated between launches.
TEST_F(StreamCapture, GraphAllocationFreedInTheGraph) {
  const int n = 64;
  cudaStream_t s = new_stream();
  float* x = device_copy(iota_floats(n, 1.0f));
  float* h = pinned_floats(n, -1.0f);
  void* p = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(cudaMallocAsync(&p, n * sizeof(float), s), cudaSuccess);
  auto* t = static_cast<float*>(p);
  ASSERT_EQ(emu_test::scale_add(x, t, n, 1.0f, 1.0f, s), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(h, t, n * sizeof(float), cudaMemcpyDeviceToHost, s), cudaSuccess);
  ASSERT_EQ(cudaFreeAsync(t, s), cudaSuccess);
  // Freed in the capture: a second free, or a copy from it, is refused.
  EXPECT_EQ(cudaMemsetAsync(t, 0, 4, s), cudaErrorInvalidValue);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int rep = 0; rep < 3; ++rep) ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(h[3], 5.0f);
  std::vector<float> back(1);
  EXPECT_EQ(cudaMemcpy(back.data(), t, sizeof(float), cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFree(t), cudaErrorInvalidValue);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  // A second free of the same allocation inside a capture invalidates it.
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(cudaMallocAsync(&p, 16, s), cudaSuccess);
  ASSERT_EQ(cudaFreeAsync(p, s), cudaSuccess);
  EXPECT_EQ(cudaFreeAsync(p, s), cudaErrorInvalidValue);
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);
  (void)cudaGetLastError();
  cudaFree(x);
  cudaFreeHost(h);
  cudaStreamDestroy(s);
}

// ---- The race check's cases (emu_tsan.h). In a CUGRAD_EMU_RACECHECK=ON build CTest runs the
// *Race tests one at a time and passes them only when ThreadSanitizer reports a data race in the
// named kernel (tests/emu/CMakeLists.txt), and runs the rest with no report allowed. In other
// builds they check the results the emulator's schedule gives. ------------------------------------

TEST(RaceCheck, WarpExchangeThroughSharedMemoryWithoutSyncwarpIsARace) {
  int* d = device_copy(std::vector<int>(32, 0));
  ASSERT_EQ(emu_test::warp_rotate(d, false), cudaSuccess);
  cudaFree(d);
}

TEST(RaceCheck, WarpExchangeWithSyncwarpIsClean) {
  int* d = device_copy(std::vector<int>(32, 0));
  ASSERT_EQ(emu_test::warp_rotate(d, true), cudaSuccess);
  auto y = host_copy(d, 32);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[static_cast<std::size_t>(i)], (i + 1) % 32 * 10);
  cudaFree(d);
}

std::vector<int> tile_loop_input(int tiles) {
  std::vector<int> x(static_cast<std::size_t>(tiles) * 64);
  std::iota(x.begin(), x.end(), 1);
  return x;
}

TEST(RaceCheck, TileLoopWithoutItsTrailingBarrierIsARace) {
  int* dx = device_copy(tile_loop_input(3));
  int* dy = device_copy(std::vector<int>(64, 0));
  ASSERT_EQ(emu_test::tile_loop(dx, dy, 3, false), cudaSuccess);
  cudaFree(dx);
  cudaFree(dy);
}

TEST(RaceCheck, TileLoopWithItsTrailingBarrierIsClean) {
  const auto x = tile_loop_input(3);
  int* dx = device_copy(x);
  int* dy = device_copy(std::vector<int>(64, 0));
  ASSERT_EQ(emu_test::tile_loop(dx, dy, 3, true), cudaSuccess);
  auto y = host_copy(dy, 64);
  for (int i = 0; i < 64; ++i) {
    int want = 0;
    for (int t = 0; t < 3; ++t) want += x[static_cast<std::size_t>(t * 64 + 63 - i)];
    EXPECT_EQ(y[static_cast<std::size_t>(i)], want) << i;
  }
  cudaFree(dx);
  cudaFree(dy);
}

TEST(RaceCheck, AtomicsInSharedAndGlobalMemoryAreClean) {
  int* d = device_copy(std::vector<int>{0});
  ASSERT_EQ(emu_test::atomic_count(d, 3, 96), cudaSuccess);
  EXPECT_EQ(host_copy(d, 1)[0], 3 * 96);
  cudaFree(d);
}

// Stream a writes a word behind a 20 ms kernel; stream b reads it, with or without waiting for
// an event recorded after the write. Run with CUGRAD_EMU_ASYNC=1 (a worker thread per stream).
void two_streams(bool wait) {
  cudaStream_t a, b;
  ASSERT_EQ(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking), cudaSuccess);
  cudaEvent_t e;
  ASSERT_EQ(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), cudaSuccess);
  int* flag = device_copy(std::vector<int>{0});
  int* out = device_copy(std::vector<int>{-7});
  ASSERT_EQ(emu_test::spin_then_set(flag, 20'000'000, a), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(e, a), cudaSuccess);
  if (wait) ASSERT_EQ(cudaStreamWaitEvent(b, e, 0), cudaSuccess);
  ASSERT_EQ(emu_test::copy_one(flag, out, b), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  if (wait) EXPECT_EQ(host_copy(out, 1)[0], 1);
  cudaFree(flag);
  cudaFree(out);
  cudaEventDestroy(e);
  for (cudaStream_t s : {a, b}) cudaStreamDestroy(s);
}

TEST(RaceCheck, TwoStreamsWithoutAWaitIsARace) { two_streams(false); }

TEST(RaceCheck, TwoStreamsOrderedByAnEventAreClean) { two_streams(true); }

TEST(RaceCheck, TwoThreadsStoringOneGlobalWordIsARace) {
  int* d = device_copy(std::vector<int>(2, 0));
  ASSERT_EQ(emu_test::global_clash(d), cudaSuccess);
  cudaFree(d);
}

}  // namespace
