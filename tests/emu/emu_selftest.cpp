// Checks of the cugrad CUDA emulator itself: barriers, shuffles, shared memory (static and
// dynamic), launch validation, built-in indices, copy checks, exited threads at barriers.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <numeric>
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
  for (int i = 0; i < 40; ++i) EXPECT_EQ(y[static_cast<std::size_t>(i)], i == 31 ? 31 : (i == 39 ? -1 : i + 1)) << i;
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
