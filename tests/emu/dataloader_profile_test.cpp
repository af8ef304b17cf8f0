// What a CUDA DataLoader asks of the runtime, counted on the emulator (emu_trace.h): each batch
// is two asynchronous host-to-device copies (images and labels) from pinned memory, never from
// pageable memory (whose "asynchronous" copy CUDA stages synchronously), and taking batches never
// synchronizes the host with a stream, an event or the device: the consumer's stream waits for the
// copy on the device (cudaStreamWaitEvent). CUDA DataLoader values are checked in
// tests/data/dataloader_test.cpp (DataLoaderGPU.*).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <vector>

#include "cugrad/cugrad.h"
#include "cugrad/data.h"
#include "tests/emu/emu_trace.h"

namespace cg = cugrad;
namespace data = cugrad::data;
namespace trace = cugrad_emu::trace;

TEST(DataLoaderProfileGPU, PinnedAsyncCopiesAndNoHostWaits) {
  const std::int64_t n = 1000, batch = 128;
  std::vector<std::uint8_t> pixels(static_cast<std::size_t>(n * 28 * 28));
  for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<std::uint8_t>(i % 251);
  std::vector<std::int64_t> labels(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) labels[static_cast<std::size_t>(i)] = i % 10;
  const cg::Tensor images = cg::from_vector(pixels, {n, 28, 28}), targets = cg::from_vector(labels, {n});
  cg::synchronize();
  trace::reset();
  std::int64_t batches = 0;
  {
    data::DataLoader loader(
        images, targets,
        {.batch_size = batch, .shuffle = true, .prefetch = 2, .device = cg::Device::cuda(0)});
    for (auto& [x, y] : loader) {
      EXPECT_TRUE(x.is_cuda());
      ++batches;
    }
  }
  const trace::Counts calls = trace::calls();
  for (const auto& [name, count] : calls)
    std::printf("  %-48s %6llu\n", name.c_str(), static_cast<unsigned long long>(count));
  EXPECT_EQ(batches, (n + batch - 1) / batch);
  EXPECT_EQ(trace::count_of(calls, "cudaMemcpyAsync"), static_cast<std::uint64_t>(2 * batches));
  EXPECT_EQ(trace::count_of(calls, "cudaMemcpyAsync from pageable host memory"), 0u);
  EXPECT_GE(trace::count_of(calls, "cudaStreamWaitEvent"), static_cast<std::uint64_t>(batches));
  for (const char* wait :
       {"cudaMemcpy", "cudaStreamSynchronize", "cudaEventSynchronize", "cudaDeviceSynchronize"})
    EXPECT_EQ(trace::count_of(calls, wait), 0u) << wait;
}

TEST(DataLoaderProfileGPU, ThePageableCopyCounterWorks) {
  // The counter above, checked on a copy that is pageable by construction.
  std::vector<float> host(1024, 1.0f);
  cg::Tensor dev = cg::empty({1024}, cg::Device::cuda(0));
  cg::synchronize();
  trace::reset();
  ASSERT_EQ(cudaMemcpyAsync(dev.raw_data(), host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice,
                            nullptr),
            cudaSuccess);
  EXPECT_EQ(trace::count_of(trace::calls(), "cudaMemcpyAsync from pageable host memory"), 1u);
  cg::synchronize();
}
