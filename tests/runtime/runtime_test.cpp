// Runtime: error types and checking macros, memory statistics, the pinned cache, streams,
// events, the stream-ordered allocator and automatic cross-stream safety.
#include <gtest/gtest.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cmath>
#include <thread>

#include "cugrad/cugrad.h"
#include "host/runtime/allocator.h"
#include "tests/support/gpu.h"
#include "tests/support/parity.h"

namespace cg = cugrad;

TEST(Errors, CudaCheckThrowsWithCallTextAndLibraryString) {
  try {
    CUGRAD_CUDA_CHECK(cudaErrorInvalidValue);
    FAIL() << "no throw";
  } catch (const cg::CudaError& e) {
    const std::string m = e.what();
    EXPECT_EQ(e.code(), static_cast<int>(cudaErrorInvalidValue));
    EXPECT_NE(m.find("cudaErrorInvalidValue"), std::string::npos) << m;
    EXPECT_NE(m.find("runtime_test.cpp"), std::string::npos) << m;
    EXPECT_NE(m.find("invalid argument"), std::string::npos) << m;
  }
  EXPECT_THROW(CUGRAD_CUDA_CHECK(cudaErrorMemoryAllocation), cg::OutOfMemoryError);
  EXPECT_NO_THROW(CUGRAD_CUDA_CHECK(cudaSuccess));
}

TEST(Errors, CublasAndCudnnChecksThrowTheirTypes) {
  try {
    CUGRAD_CUBLAS_CHECK(CUBLAS_STATUS_ALLOC_FAILED);
    FAIL() << "no throw";
  } catch (const cg::CublasError& e) {
    EXPECT_NE(std::string(e.what()).find("CUBLAS_STATUS_ALLOC_FAILED"), std::string::npos) << e.what();
  }
  try {
    CUGRAD_CUDNN_CHECK(CUDNN_STATUS_BAD_PARAM);
    FAIL() << "no throw";
  } catch (const cg::CudnnError& e) {
    EXPECT_NE(std::string(e.what()).find("BAD_PARAM"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(CUGRAD_CUBLAS_CHECK(0));
  EXPECT_NO_THROW(CUGRAD_CUDNN_CHECK(0));
}

TEST(Errors, AllAreCugradErrors) {
  EXPECT_THROW(throw cg::OutOfMemoryError("x", 2), cg::Error);
  EXPECT_THROW(throw cg::ValueError("x"), cg::Error);
  EXPECT_THROW(throw cg::CublasError("x", 1), cg::Error);
}

TEST(Memory, CpuStatsTrackAllocations) {
  const auto before = cg::memory_stats(cg::Device::cpu());
  {
    auto t = cg::empty({1 << 20});  // 4 MiB
    const auto during = cg::memory_stats(cg::Device::cpu());
    EXPECT_GE(during.bytes_in_use, before.bytes_in_use + (4u << 20));
    EXPECT_GE(during.peak_bytes_in_use, during.bytes_in_use);
    EXPECT_GT(during.allocation_count, before.allocation_count);
  }
  const auto after = cg::memory_stats(cg::Device::cpu());
  EXPECT_EQ(after.bytes_in_use, before.bytes_in_use);
  cg::reset_peak_memory_stats(cg::Device::cpu());
  EXPECT_EQ(cg::memory_stats(cg::Device::cpu()).peak_bytes_in_use, after.bytes_in_use);
}

TEST(Memory, PoisonFillsNewMemory) {
  cg::testing::PoisonGuard poison;
  auto t = cg::empty({17});
  for (float v : t.to_vector<float>()) EXPECT_TRUE(std::isnan(v));
  auto i = cg::empty({5}, cg::Device::cpu(), cg::DType::int64);
  for (auto v : i.to_vector<std::int64_t>()) EXPECT_EQ(v, -1);
}

TEST(Pinned, BlocksAreCachedAndReused) {
  cg::empty_pinned_cache();  // no free block of this size or twice it from earlier tests
  void* first = nullptr;
  {
    auto b = cg::runtime::pinned_allocate(10000);
    ASSERT_NE(b.data(), nullptr);
    EXPECT_GE(b.size(), 10000u);
    first = b.data();
    static_cast<char*>(b.data())[9999] = 1;  // writable
    EXPECT_GE(cg::pinned_memory_stats().bytes_in_use, b.size());
  }
  const auto reserved = cg::pinned_memory_stats().bytes_reserved;
  auto again = cg::runtime::pinned_allocate(9000);  // same bucket: the cached block comes back
  EXPECT_EQ(again.data(), first);
  EXPECT_EQ(cg::pinned_memory_stats().bytes_reserved, reserved);
  auto other = cg::runtime::pinned_allocate(9000);  // first is taken: a new block
  EXPECT_NE(other.data(), first);
  EXPECT_GT(cg::pinned_memory_stats().bytes_reserved, reserved);
  cg::runtime::PinnedBlock moved = std::move(other);
  EXPECT_NE(moved.data(), nullptr);
}

// Sizes of 1 MB and more, which no other test of this program asks the pinned cache for.
TEST(Pinned, AReadyBlockOfTwiceTheSizeServesBeforeTheCacheGrows) {
  namespace rt = cg::runtime;
  cg::empty_pinned_cache();
  const cg::PinnedMemoryStats start = cg::pinned_memory_stats();
  EXPECT_EQ(start.bytes_reserved, start.bytes_in_use) << "empty_pinned_cache left free blocks";

  void* four_mb = nullptr;
  {
    rt::PinnedBlock b = rt::pinned_allocate((3u << 20) + 5);  // bucket 4 MB
    EXPECT_EQ(b.size(), 4u << 20);
    four_mb = b.data();
  }
  cg::PinnedMemoryStats s = cg::pinned_memory_stats();
  EXPECT_EQ(s.allocation_count, start.allocation_count + 1);
  EXPECT_EQ(s.bytes_reserved, start.bytes_reserved + (4u << 20));
  EXPECT_EQ(s.bytes_in_use, start.bytes_in_use);

  // A 2 MB request finds no 2 MB block: the free 4 MB block serves it, whole.
  rt::PinnedBlock two = rt::pinned_allocate((1u << 20) + 1);
  EXPECT_EQ(two.data(), four_mb);
  EXPECT_EQ(two.size(), 4u << 20);
  s = cg::pinned_memory_stats();
  EXPECT_EQ(s.allocation_count, start.allocation_count + 1);
  EXPECT_EQ(s.reuse_count, start.reuse_count + 1);
  EXPECT_EQ(s.bytes_in_use, start.bytes_in_use + (4u << 20));

  // A 1 MB request does not take a block four times its size: the cache pins a 1 MB block.
  void* other_four_mb = nullptr;
  void* sixteen_mb = nullptr;
  {
    rt::PinnedBlock b = rt::pinned_allocate(4u << 20);
    EXPECT_EQ(b.size(), 4u << 20);
    EXPECT_NE(b.data(), four_mb);
    other_four_mb = b.data();
  }
  {
    rt::PinnedBlock b = rt::pinned_allocate(16u << 20);
    sixteen_mb = b.data();
  }
  const cg::PinnedMemoryStats before_small = cg::pinned_memory_stats();
  {
    rt::PinnedBlock one = rt::pinned_allocate(1u << 20);
    EXPECT_EQ(one.size(), 1u << 20);
    EXPECT_NE(one.data(), sixteen_mb);
    EXPECT_NE(one.data(), other_four_mb);
    EXPECT_EQ(cg::pinned_memory_stats().allocation_count, before_small.allocation_count + 1);
  }

  // The borrowed block returns to its own size: a 4 MB request gets it back.
  two = rt::PinnedBlock();
  rt::PinnedBlock again = rt::pinned_allocate(4u << 20);
  EXPECT_EQ(again.size(), 4u << 20);
  s = cg::pinned_memory_stats();
  EXPECT_EQ(s.allocation_count, before_small.allocation_count + 1);

  // Emptying unpins every free block and keeps the ones in use.
  cg::empty_pinned_cache();
  s = cg::pinned_memory_stats();
  EXPECT_EQ(s.bytes_in_use, start.bytes_in_use + (4u << 20));
  EXPECT_EQ(s.bytes_reserved, s.bytes_in_use);
  again = rt::PinnedBlock();
  cg::empty_pinned_cache();
  EXPECT_EQ(cg::pinned_memory_stats().bytes_reserved, start.bytes_in_use);
}

TEST(Stream, CpuStreamIsTrivial) {
  cg::Stream s = cg::Stream::current(cg::Device::cpu());
  EXPECT_EQ(s.handle(), nullptr);
  EXPECT_TRUE(s.query());
  EXPECT_NO_THROW(s.synchronize());
  cg::Event e;
  EXPECT_TRUE(e.query());
  EXPECT_THROW(e.record(s), cg::ValueError);  // events need a CUDA stream
}

// ---- GPU ----

// A cached block that pending device work still uses (release_after) is handed out neither to
// a request of its size nor to one of half its size; once the work is done, either may take it.
// Needs asynchronous streams (a GPU, or the emulator's CUGRAD_EMU_ASYNC=1): the gate blocks.
TEST(PinnedGPU, ABlockAwaitedByTheDeviceIsNotHandedOut) {
  CUGRAD_REQUIRE_GPU();
  namespace rt = cg::runtime;
  const cg::Device gpu = cg::Device::cuda(0);
  const cg::Stream s = cg::Stream::create(gpu);
  cg::empty_pinned_cache();
  cg::testing::StreamGate gate(s);
  void* awaited = nullptr;
  {
    rt::PinnedBlock b = rt::pinned_allocate(8u << 20);
    awaited = b.data();
    b.release_after(s);  // the stream's work so far (behind the gate) uses the block
  }
  rt::PinnedBlock same = rt::pinned_allocate(8u << 20);
  rt::PinnedBlock half = rt::pinned_allocate(4u << 20);
  EXPECT_NE(same.data(), awaited);
  EXPECT_NE(half.data(), awaited);
  // Emptying the cache keeps it too: the device has not finished with it.
  cg::empty_pinned_cache();
  EXPECT_EQ(cg::pinned_memory_stats().bytes_reserved, cg::pinned_memory_stats().bytes_in_use + (8u << 20));
  gate.open();
  s.synchronize();
  rt::PinnedBlock after = rt::pinned_allocate(4u << 20);  // no free 4 MB block: the ready 8 MB one
  EXPECT_EQ(after.data(), awaited);
  EXPECT_EQ(after.size(), 8u << 20);
}

TEST(StreamGPU, CurrentStreamFollowsGuards) {
  CUGRAD_REQUIRE_GPU();
  const cg::Device gpu = cg::Device::cuda(0);
  const cg::Stream def = cg::Stream::current(gpu);
  EXPECT_EQ(def, cg::Stream::default_stream(gpu));
  cg::Stream a = cg::Stream::create(gpu), b = cg::Stream::create(gpu, -1);
  EXPECT_FALSE(a == def);
  {
    cg::StreamGuard ga(a);
    EXPECT_EQ(cg::Stream::current(gpu), a);
    {
      cg::StreamGuard gb(b);
      EXPECT_EQ(cg::Stream::current(gpu), b);
    }
    EXPECT_EQ(cg::Stream::current(gpu), a);
  }
  EXPECT_EQ(cg::Stream::current(gpu), def);
  // Per thread: another thread sees the default stream.
  cg::StreamGuard ga(a);
  cg::Stream seen;
  std::thread([&] { seen = cg::Stream::current(gpu); }).join();
  EXPECT_EQ(seen, def);
}

TEST(StreamGPU, EventsOrderAndTime) {
  CUGRAD_REQUIRE_GPU();
  const cg::Device gpu = cg::Device::cuda(0);
  cg::Stream s = cg::Stream::create(gpu);
  cg::Event start(true), stop(true);
  start.record(s);
  cg::testing::spin_on(s, 20.0);
  stop.record(s);
  EXPECT_FALSE(stop.query());  // the spin is still running
  stop.synchronize();
  EXPECT_TRUE(stop.query());
  EXPECT_GT(stop.elapsed_ms(start), 10.f);
  cg::Event no_timing;
  no_timing.record(s);
  EXPECT_THROW(no_timing.elapsed_ms(start), cg::ValueError);
  // wait(): work on another stream after the event starts only when the event has fired.
  cg::Stream t = cg::Stream::create(gpu);
  cg::Event mark;
  cg::testing::spin_on(s, 20.0);
  mark.record(s);
  mark.wait(t);
  cg::Event after_t;
  after_t.record(t);
  EXPECT_FALSE(after_t.query());
  after_t.synchronize();
  EXPECT_TRUE(mark.query());
}

TEST(AllocatorGPU, StatsReuseAndPeak) {
  CUGRAD_REQUIRE_GPU();
  const cg::Device gpu = cg::Device::cuda(0);
  cg::synchronize(gpu);
  const auto base = cg::memory_stats(gpu);
  void* first = nullptr;
  {
    auto t = cg::empty({1 << 20}, gpu);
    first = t.raw_data();
    const auto s = cg::memory_stats(gpu);
    EXPECT_EQ(s.bytes_in_use, base.bytes_in_use + (4u << 20));
    EXPECT_GE(s.peak_bytes_in_use, s.bytes_in_use);
    EXPECT_GE(s.bytes_reserved, s.bytes_in_use);
    EXPECT_EQ(s.allocation_count, base.allocation_count + 1);
  }
  EXPECT_EQ(cg::memory_stats(gpu).bytes_in_use, base.bytes_in_use);
  // Freed memory stays in the pool (release threshold) and is reused on the same stream.
  auto again = cg::empty({1 << 20}, gpu);
  EXPECT_EQ(again.raw_data(), first);
  EXPECT_GE(cg::memory_stats(gpu).bytes_reserved, 4u << 20);
  cg::reset_peak_memory_stats(gpu);
  EXPECT_EQ(cg::memory_stats(gpu).peak_bytes_in_use, cg::memory_stats(gpu).bytes_in_use);
}

TEST(AllocatorGPU, OutOfMemoryIsReportedAndEngineStaysUsable) {
  CUGRAD_REQUIRE_GPU();
  const cg::Device gpu = cg::Device::cuda(0);
  try {
    auto huge = cg::empty({std::int64_t{1} << 48}, gpu, cg::DType::uint8);  // 256 TiB
    FAIL() << "no throw";
  } catch (const cg::OutOfMemoryError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("281474976710656"), std::string::npos) << m;
    EXPECT_NE(m.find("reserved"), std::string::npos) << m;
  }
  auto x = cg::ones({1000}, gpu) * 3.0;
  EXPECT_FLOAT_EQ(x.cpu().to_vector<float>()[999], 3.f);
}

TEST(AllocatorGPU, CrossStreamReadWaitsForProducer) {
  CUGRAD_REQUIRE_GPU();
  const cg::Device gpu = cg::Device::cuda(0);
  const auto x_host = cg::randn({1 << 22});
  const auto expected = (x_host * 2.0 + 1.0).exp();
  cg::Stream producer = cg::Stream::create(gpu), consumer = cg::Stream::create(gpu);
  cg::Tensor x, y;
  {
    cg::StreamGuard g(producer);
    x = x_host.to(gpu);
    cg::testing::spin_on(producer, 50.0);  // delay the producer
    x.mul_(2.0).add_(1.0);
  }
  {
    cg::StreamGuard g(consumer);
    y = x.exp();  // must wait for the producer's writes automatically
  }
  EXPECT_TRUE(cg::testing::all_close(y, expected));
}

TEST(AllocatorGPU, CrossStreamWriteWaitsForReaders) {
  CUGRAD_REQUIRE_GPU();
  const cg::Device gpu = cg::Device::cuda(0);
  const auto x_host = cg::randn({1 << 22});
  cg::Stream reader = cg::Stream::create(gpu), writer = cg::Stream::create(gpu);
  cg::Tensor x = x_host.to(gpu);
  cg::Tensor copy;
  {
    cg::StreamGuard g(reader);
    cg::testing::spin_on(reader, 50.0);
    copy = x * 1.0;  // reads x after the spin
  }
  {
    cg::StreamGuard g(writer);
    x.fill_(0.0);  // must not overwrite x before the reader has read it
  }
  EXPECT_TRUE(cg::testing::all_equal(copy, x_host));
  EXPECT_TRUE(cg::testing::all_equal(x, cg::zeros({1 << 22})));
}

TEST(AllocatorGPU, FreeWaitsForEveryStreamThatUsedTheMemory) {
  CUGRAD_REQUIRE_GPU();
  const cg::Device gpu = cg::Device::cuda(0);
  const auto x_host = cg::randn({1 << 22});
  cg::Stream side = cg::Stream::create(gpu);
  cg::Tensor result;
  {
    cg::Tensor x = x_host.to(gpu);  // allocated on the default stream
    cg::StreamGuard g(side);
    cg::testing::spin_on(side, 50.0);
    result = x + 0.0;  // side reads x late
  }  // x freed here: its memory must not be reused before `side` has read it
  auto clobber = cg::full({1 << 22}, 7.0, gpu);  // likely reuses x's block on the default stream
  EXPECT_TRUE(cg::testing::all_equal(result, x_host));
  EXPECT_TRUE(cg::testing::all_equal(clobber, cg::full({1 << 22}, 7.0)));
}

TEST(AllocatorGPU, SlowStreamGivesTheSingleStreamResult) {
  CUGRAD_REQUIRE_GPU();
  const cg::Device gpu = cg::Device::cuda(0);
  cg::manual_seed(1);
  const auto a_host = cg::randn({1000003}), b_host = cg::randn({1000003});
  const auto single = ((a_host.cuda() * b_host.cuda()).relu() + a_host.cuda()).cpu();
  cg::Stream s1 = cg::Stream::create(gpu), s2 = cg::Stream::create(gpu);
  cg::Tensor a, b, prod, out;
  {
    cg::StreamGuard g(s1);
    a = a_host.to(gpu);
    cg::testing::spin_on(s1, 30.0);
    prod = a * b_host.to(gpu);
  }
  {
    cg::StreamGuard g(s2);
    out = prod.relu() + a;
  }
  EXPECT_TRUE(cg::testing::all_equal(out, single));
}
