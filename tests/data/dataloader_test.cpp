// DataLoader: reproducible shuffles (same seed, same batches; other seeds differ; the documented
// Philox Fisher-Yates), every sample once per epoch, batch counts with and without drop_last,
// normalization values, random crop and flip checked pixel by pixel on hand-made images, sample
// selection, epochs and range-for, early destruction, worker exceptions reaching the consumer,
// Fashion-MNIST batches, and (GPU suite) CUDA batches equal to CPU batches across streams.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "cugrad/cugrad.h"
#include "cugrad/data.h"
#include "host/runtime/philox.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
namespace data = cugrad::data;

namespace {

// N images of H x W (C channels when c > 0) whose pixels identify them, with label = index.
struct Synthetic {
  cg::Tensor images, labels;
  std::vector<std::uint8_t> pixels;
  std::int64_t n, c, h, w;
};

Synthetic synthetic(std::int64_t n, std::int64_t h, std::int64_t w, std::int64_t c = 0) {
  Synthetic s{{}, {}, {}, n, c == 0 ? 1 : c, h, w};
  s.pixels.resize(static_cast<std::size_t>(n * s.c * h * w));
  for (std::size_t i = 0; i < s.pixels.size(); ++i)
    s.pixels[i] = static_cast<std::uint8_t>((i * 7 + i / 5) % 256);
  std::vector<std::int64_t> labels(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) labels[static_cast<std::size_t>(i)] = i;
  s.images = c == 0 ? cg::from_vector(s.pixels, {n, h, w}) : cg::from_vector(s.pixels, {n, c, h, w});
  s.labels = cg::from_vector(labels, {n});
  return s;
}

std::vector<data::Batch> all_batches(data::DataLoader& loader) {
  std::vector<data::Batch> out;
  while (auto b = loader.next()) out.push_back(std::move(*b));
  return out;
}

std::vector<std::int64_t> labels_of(const std::vector<data::Batch>& batches) {
  std::vector<std::int64_t> out;
  for (const auto& b : batches) {
    const auto y = b.y.cpu().to_vector<std::int64_t>();
    out.insert(out.end(), y.begin(), y.end());
  }
  return out;
}

::testing::AssertionResult same_batches(const std::vector<data::Batch>& a,
                                        const std::vector<data::Batch>& b) {
  if (a.size() != b.size())
    return ::testing::AssertionFailure() << a.size() << " vs " << b.size() << " batches";
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].x.shape() != b[i].x.shape())
      return ::testing::AssertionFailure() << "batch " << i << " x shapes differ";
    if (a[i].x.cpu().to_vector<float>() != b[i].x.cpu().to_vector<float>())
      return ::testing::AssertionFailure() << "batch " << i << " x differs";
    if (a[i].y.cpu().to_vector<std::int64_t>() != b[i].y.cpu().to_vector<std::int64_t>())
      return ::testing::AssertionFailure() << "batch " << i << " y differs";
  }
  return ::testing::AssertionSuccess();
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const cg::Error& e) {
    return e.what();
  }
  return "(no cugrad::Error)";
}

// What torchvision's ToTensor + Normalize give for one pixel, in float32.
float normalized(std::uint8_t v, double mean, double stddev) {
  return (static_cast<float>(v) / 255.f - static_cast<float>(mean)) / static_cast<float>(stddev);
}

// A dataset whose read_image throws for one index (the worker's exception path).
class ThrowingDataset : public data::Dataset {
 public:
  ThrowingDataset(std::int64_t n, std::int64_t bad, bool cugrad_error)
      : n_(n), bad_(bad), cugrad_error_(cugrad_error) {}
  std::int64_t size() const override { return n_; }
  cg::Shape image_shape() const override { return {4, 4}; }
  std::int64_t label(std::int64_t i) const override { return i % 3; }
  void read_image(std::int64_t i, std::uint8_t* out) const override {
    if (i == bad_) {
      if (cugrad_error_) throw cg::ValueError("dataset: image " + std::to_string(i) + " is unreadable");
      throw std::runtime_error("disk on fire at image " + std::to_string(i));
    }
    std::fill(out, out + 16, static_cast<std::uint8_t>(i));
  }

 private:
  std::int64_t n_, bad_;
  bool cugrad_error_;
};

// A dataset that counts the images read (so tests can see the worker stop).
class CountingDataset : public data::Dataset {
 public:
  explicit CountingDataset(std::int64_t n) : n_(n) {}
  std::int64_t size() const override { return n_; }
  cg::Shape image_shape() const override { return {28, 28}; }
  std::int64_t label(std::int64_t i) const override { return i % 10; }
  void read_image(std::int64_t i, std::uint8_t* out) const override {
    reads.fetch_add(1);
    std::fill(out, out + 28 * 28, static_cast<std::uint8_t>(i));
  }
  mutable std::atomic<std::int64_t> reads{0};

 private:
  std::int64_t n_;
};

}  // namespace

// ---- order, batches, epochs ----

TEST(DataLoader, UnshuffledBatchesInOrderWithShapes) {
  const Synthetic s = synthetic(23, 5, 6);
  data::DataLoader loader(s.images, s.labels, {.batch_size = 10});
  EXPECT_EQ(loader.size(), 23);
  EXPECT_EQ(loader.num_batches(), 3);
  const auto batches = all_batches(loader);
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0].x.shape(), (cg::Shape{10, 1, 5, 6}));
  EXPECT_EQ(batches[0].x.dtype(), cg::DType::float32);
  EXPECT_EQ(batches[0].y.shape(), (cg::Shape{10}));
  EXPECT_EQ(batches[0].y.dtype(), cg::DType::int64);
  EXPECT_EQ(batches[2].x.shape(), (cg::Shape{3, 1, 5, 6}));
  std::vector<std::int64_t> expect(23);
  for (std::int64_t i = 0; i < 23; ++i) expect[static_cast<std::size_t>(i)] = i;
  EXPECT_EQ(labels_of(batches), expect);
  // The pass has ended: next() keeps returning nothing until a new pass.
  EXPECT_FALSE(loader.next().has_value());
  EXPECT_FALSE(loader.next().has_value());
}

TEST(DataLoader, SameSeedSameBatchesOtherSeedsDiffer) {
  const Synthetic s = synthetic(97, 8, 7);
  const data::DataLoaderOptions o{.batch_size = 16,
                                  .shuffle = true,
                                  .seed = 1234,
                                  .random_crop_padding = 2,
                                  .random_horizontal_flip = true,
                                  .mean = {0.3},
                                  .stddev = {0.2}};
  data::DataLoader a(s.images, s.labels, o), b(s.images, s.labels, o);
  data::DataLoaderOptions other = o;
  other.seed = 1235;
  data::DataLoader c(s.images, s.labels, other);
  for (int epoch = 0; epoch < 3; ++epoch) {
    const auto ba = all_batches(a), bb = all_batches(b), bc = all_batches(c);
    EXPECT_TRUE(same_batches(ba, bb)) << "epoch " << epoch;
    EXPECT_NE(labels_of(ba), labels_of(bc)) << "epoch " << epoch;
    a.epoch(epoch + 1);
    b.epoch(epoch + 1);
    c.epoch(epoch + 1);
  }
  // The prefetch depth changes nothing.
  data::DataLoaderOptions deep = o;
  deep.prefetch = 8;
  data::DataLoaderOptions shallow = o;
  shallow.prefetch = 1;
  data::DataLoader d(s.images, s.labels, deep), e(s.images, s.labels, shallow);
  EXPECT_TRUE(same_batches(all_batches(d), all_batches(e)));
}

TEST(DataLoader, EveryIndexOncePerEpochAndEpochsDiffer) {
  const Synthetic s = synthetic(103, 3, 3);
  data::DataLoader loader(s.images, s.labels, {.batch_size = 10, .shuffle = true, .seed = 7});
  std::vector<std::int64_t> expect(103);
  for (std::int64_t i = 0; i < 103; ++i) expect[static_cast<std::size_t>(i)] = i;
  std::vector<std::vector<std::int64_t>> seen;
  for (int epoch = 0; epoch < 4; ++epoch) {
    loader.epoch(epoch);
    const auto batches = all_batches(loader);
    ASSERT_EQ(batches.size(), 11u);
    EXPECT_EQ(batches.back().y.numel(), 3);
    auto order = labels_of(batches);
    EXPECT_EQ(order, loader.order(epoch));  // the batches follow order(epoch)
    EXPECT_NE(order, expect);               // and it is shuffled
    seen.push_back(order);
    std::sort(order.begin(), order.end());
    EXPECT_EQ(order, expect) << "epoch " << epoch;
  }
  for (std::size_t i = 1; i < seen.size(); ++i) EXPECT_NE(seen[i], seen[i - 1]);
  // The images travel with their labels: sample i's pixels are image i's.
  loader.epoch(2);
  const auto b = loader.next();
  ASSERT_TRUE(b.has_value());
  const auto x = b->x.to_vector<float>();
  const auto y = b->y.to_vector<std::int64_t>();
  for (std::size_t k = 0; k < y.size(); ++k)
    for (std::size_t p = 0; p < 9; ++p)
      ASSERT_EQ(x[k * 9 + p], s.pixels[static_cast<std::size_t>(y[k]) * 9 + p] / 255.f);
}

TEST(DataLoader, ShuffleIsTheDocumentedPhiloxFisherYates) {
  // Written from the documentation, with cugrad's Philox: key = Philox(seed, counter epoch*4+1)
  // words 0,1; step i (n-1 down to 1) swaps i with floor(bits * (i+1) / 2^64), bits = words 0,1
  // of Philox(key, i). Pins the order every machine must produce for a seed.
  const Synthetic s = synthetic(50, 2, 2);
  const std::uint64_t seed = 0xC0FFEE;
  data::DataLoader loader(s.images, s.labels, {.batch_size = 50, .shuffle = true, .seed = seed});
  for (std::int64_t epoch : {0, 1, 17}) {
    const cg::philox::U32x4 k = cg::philox::philox4x32_10(seed, static_cast<std::uint64_t>(epoch) * 4 + 1);
    const std::uint64_t key = (std::uint64_t{k.v[0]} << 32) | k.v[1];
    std::vector<std::int64_t> order(50);
    for (std::int64_t i = 0; i < 50; ++i) order[static_cast<std::size_t>(i)] = i;
    for (std::uint64_t i = 49; i >= 1; --i) {
      const cg::philox::U32x4 r = cg::philox::philox4x32_10(key, i);
      const std::uint64_t bits = (std::uint64_t{r.v[0]} << 32) | r.v[1];
      const auto j = static_cast<std::size_t>((static_cast<unsigned __int128>(bits) * (i + 1)) >> 64);
      std::swap(order[i], order[j]);
    }
    EXPECT_EQ(loader.order(epoch), order) << "epoch " << epoch;
  }
}

TEST(DataLoader, DropLastCounts) {
  const Synthetic s = synthetic(103, 2, 2);
  for (bool drop : {false, true}) {
    data::DataLoader loader(s.images, s.labels, {.batch_size = 10, .shuffle = true, .drop_last = drop});
    EXPECT_EQ(loader.num_batches(), drop ? 10 : 11);
    const auto batches = all_batches(loader);
    ASSERT_EQ(static_cast<std::int64_t>(batches.size()), loader.num_batches());
    for (const auto& b : batches) EXPECT_EQ(b.y.numel(), &b == &batches.back() && !drop ? 3 : 10);
    const auto seen = labels_of(batches);
    EXPECT_EQ(std::set<std::int64_t>(seen.begin(), seen.end()).size(), seen.size());
  }
  const Synthetic even = synthetic(100, 2, 2);
  EXPECT_EQ(data::DataLoader(even.images, even.labels, {.batch_size = 10, .drop_last = true}).num_batches(),
            10);
  EXPECT_EQ(data::DataLoader(even.images, even.labels, {.batch_size = 10}).num_batches(), 10);
  // Fewer samples than a batch: one short batch, or none with drop_last.
  data::DataLoader small(even.images, even.labels, {.batch_size = 128, .drop_last = true});
  EXPECT_EQ(small.num_batches(), 0);
  EXPECT_FALSE(small.next().has_value());
  data::DataLoader small_keep(even.images, even.labels, {.batch_size = 128});
  EXPECT_EQ(small_keep.num_batches(), 1);
  EXPECT_EQ(small_keep.next()->y.numel(), 100);
}

TEST(DataLoader, NormalizationValues) {
  const Synthetic s = synthetic(9, 16, 16);
  data::DataLoader loader(s.images, s.labels, {.batch_size = 9, .mean = {0.2860}, .stddev = {0.3530}});
  const auto x = loader.next()->x.to_vector<float>();
  ASSERT_EQ(x.size(), s.pixels.size());
  for (std::size_t i = 0; i < x.size(); ++i) ASSERT_EQ(x[i], normalized(s.pixels[i], 0.2860, 0.3530)) << i;
  EXPECT_NEAR(normalized(0, 0.2860, 0.3530), -0.2860 / 0.3530, 1e-6);
  EXPECT_NEAR(normalized(255, 0.2860, 0.3530), (1 - 0.2860) / 0.3530, 1e-6);

  // Per-channel values on [N, 3, H, W] images.
  const Synthetic rgb = synthetic(4, 3, 5, 3);
  const std::vector<double> mean = {0.485, 0.456, 0.406}, stddev = {0.229, 0.224, 0.225};
  data::DataLoader loader3(rgb.images, rgb.labels, {.batch_size = 4, .mean = mean, .stddev = stddev});
  const auto b = loader3.next();
  EXPECT_EQ(b->x.shape(), (cg::Shape{4, 3, 3, 5}));
  const auto x3 = b->x.to_vector<float>();
  for (std::size_t i = 0; i < x3.size(); ++i) {
    const std::size_t c = (i / 15) % 3;
    ASSERT_EQ(x3[i], normalized(rgb.pixels[i], mean[c], stddev[c])) << i;
  }
}

namespace {
// A hand-made 5x6 image with distinct non-zero values 1..30 (so zero padding is visible).
std::vector<std::uint8_t> hand_image() {
  std::vector<std::uint8_t> v(30);
  for (int i = 0; i < 30; ++i) v[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i + 1);
  return v;
}

// The image shifted by (di, dj) with zeros outside, optionally mirrored after the shift:
// out(r, c) = padded(r + di, c' + dj) with c' = W-1-c when flipped (crop, then flip).
std::vector<std::uint8_t> shifted(const std::vector<std::uint8_t>& img, int h, int w, int di, int dj,
                                  bool flip) {
  std::vector<std::uint8_t> out(img.size(), 0);
  for (int r = 0; r < h; ++r)
    for (int c = 0; c < w; ++c) {
      const int sr = r + di, sc = (flip ? w - 1 - c : c) + dj;
      if (sr >= 0 && sr < h && sc >= 0 && sc < w)
        out[static_cast<std::size_t>(r * w + c)] = img[static_cast<std::size_t>(sr * w + sc)];
    }
  return out;
}

std::vector<std::uint8_t> as_pixels(const std::vector<float>& x) {
  std::vector<std::uint8_t> out;
  for (float v : x) out.push_back(static_cast<std::uint8_t>(std::lround(v * 255.f)));
  return out;
}
}  // namespace

TEST(DataLoader, RandomFlipOnAHandMadeImage) {
  const auto img = hand_image();
  data::DataLoader loader(cg::from_vector(img, {1, 5, 6}), cg::from_vector(std::vector<std::int64_t>{0}, {1}),
                          {.random_horizontal_flip = true});
  const auto mirrored = shifted(img, 5, 6, 0, 0, true);
  int flips = 0;
  const int epochs = 400;
  for (int e = 0; e < epochs; ++e) {
    loader.epoch(e);
    const auto px = as_pixels(loader.next()->x.to_vector<float>());
    ASSERT_TRUE(px == img || px == mirrored) << "epoch " << e;
    flips += px == mirrored;
  }
  // Probability 0.5: 400 draws land within 5 standard deviations of 200.
  EXPECT_GT(flips, 150);
  EXPECT_LT(flips, 250);
}

TEST(DataLoader, RandomCropWithPaddingOnAHandMadeImage) {
  const auto img = hand_image();
  const cg::Tensor images = cg::from_vector(img, {1, 5, 6});
  const cg::Tensor labels = cg::from_vector(std::vector<std::int64_t>{0}, {1});
  for (bool flip : {false, true}) {
    data::DataLoader loader(
        images, labels,
        {.random_crop_padding = 2, .random_horizontal_flip = flip, .mean = {0.5}, .stddev = {0.5}});
    std::set<std::tuple<int, int, bool>> hits;
    for (int e = 0; e < 600; ++e) {
      loader.epoch(e);
      const auto x = loader.next()->x.to_vector<float>();
      // Padding is zero before normalization: (0 - 0.5) / 0.5 = -1.
      std::vector<std::uint8_t> px;
      for (float v : x) px.push_back(static_cast<std::uint8_t>(std::lround((v * 0.5f + 0.5f) * 255.f)));
      int found = 0;
      for (int di = -2; di <= 2; ++di)
        for (int dj = -2; dj <= 2; ++dj)
          for (bool f : {false, true}) {
            if ((f && !flip) || px != shifted(img, 5, 6, di, dj, f)) continue;
            ++found;
            hits.insert({di, dj, f});
          }
      ASSERT_EQ(found, 1) << "epoch " << e << ": the output is not exactly one crop of the padded image";
      for (std::size_t i = 0; i < x.size(); ++i)
        if (px[i] == 0) {
          ASSERT_EQ(x[i], -1.f);
        }
    }
    // Every offset in [-2, 2]^2 (and both flips) occurs: offsets are uniform over the 2p+1 values.
    EXPECT_EQ(hits.size(), flip ? 50u : 25u);
  }
}

TEST(DataLoader, AugmentationDoesNotChangeTheShuffle) {
  const Synthetic s = synthetic(40, 6, 6);
  data::DataLoader plain(s.images, s.labels, {.batch_size = 8, .shuffle = true, .seed = 3});
  data::DataLoader augmented(s.images, s.labels,
                             {.batch_size = 8,
                              .shuffle = true,
                              .seed = 3,
                              .random_crop_padding = 1,
                              .random_horizontal_flip = true});
  EXPECT_EQ(labels_of(all_batches(plain)), labels_of(all_batches(augmented)));
}

TEST(DataLoader, SelectionByIndicesClassesAndCount) {
  // Labels i % 10 (a TensorDataset of int32 labels, converted to int64).
  const std::int64_t n = 200;
  std::vector<std::uint8_t> px(static_cast<std::size_t>(n * 4));
  for (std::size_t i = 0; i < px.size(); ++i) px[i] = static_cast<std::uint8_t>(i / 4);
  std::vector<std::int32_t> lab(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) lab[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i % 10);
  auto ds = std::make_shared<data::TensorDataset>(cg::from_vector(px, {n, 2, 2}), cg::from_vector(lab, {n}));

  data::DataLoader first(ds, {.batch_size = 64, .max_samples = 50});
  EXPECT_EQ(first.size(), 50);
  std::vector<std::int64_t> expect(50);
  for (std::int64_t i = 0; i < 50; ++i) expect[static_cast<std::size_t>(i)] = i;
  EXPECT_EQ(first.samples(), expect);
  EXPECT_EQ(labels_of(all_batches(first)).size(), 50u);

  data::DataLoader half(ds, {.batch_size = 7, .shuffle = true, .classes = {0, 1, 2, 3, 4}});
  EXPECT_EQ(half.size(), 100);
  std::set<std::int64_t> seen_images;
  for (auto& [x, y] : half) {
    for (std::int64_t l : y.to_vector<std::int64_t>()) EXPECT_LT(l, 5);
    const auto xv = x.to_vector<float>();
    for (std::size_t k = 0; k < xv.size(); k += 4) seen_images.insert(std::lround(xv[k] * 255.f));
  }
  EXPECT_EQ(seen_images.size(), 100u);
  for (std::int64_t i : seen_images) EXPECT_LT(i % 10, 5);

  data::DataLoader both(
      ds, {.batch_size = 4, .indices = {13, 5, 5, 199, 40, 21}, .classes = {3, 5, 9}, .max_samples = 3});
  EXPECT_EQ(both.samples(), (std::vector<std::int64_t>{13, 5, 5}));
  const auto b = both.next();
  EXPECT_EQ(b->y.to_vector<std::int64_t>(), (std::vector<std::int64_t>{3, 5, 5}));
  EXPECT_EQ(as_pixels(b->x.to_vector<float>()),
            (std::vector<std::uint8_t>{13, 13, 13, 13, 5, 5, 5, 5, 5, 5, 5, 5}));

  EXPECT_NE(message_of([&] { data::DataLoader(ds, {.classes = {11}}); }).find("no samples selected"),
            std::string::npos);
  EXPECT_NE(message_of([&] {
              data::DataLoader(ds, {.indices = {3, 200}});
            }).find("index 200"),
            std::string::npos);
  EXPECT_NE(message_of([&] { data::DataLoader(ds, {.max_samples = 0}); }).find("no samples selected"),
            std::string::npos);
}

TEST(DataLoader, RangeForEpochsResetAndEpochSelection) {
  const Synthetic s = synthetic(30, 2, 2);
  data::DataLoader loader(s.images, s.labels, {.batch_size = 8, .shuffle = true, .seed = 11});
  for (int pass = 0; pass < 3; ++pass) {
    std::vector<std::int64_t> seen;
    std::int64_t count = 0;
    for (auto& [x, y] : loader) {
      EXPECT_EQ(x.size(0), y.size(0));
      const auto v = y.to_vector<std::int64_t>();
      seen.insert(seen.end(), v.begin(), v.end());
      ++count;
    }
    EXPECT_EQ(loader.epoch(), pass);
    EXPECT_EQ(count, loader.num_batches());
    EXPECT_EQ(seen, loader.order(pass));
  }
  // epoch(k) then a loop: epoch k itself.
  loader.epoch(9);
  std::vector<std::int64_t> seen;
  for (auto& b : loader) {
    const auto v = b.y.to_vector<std::int64_t>();
    seen.insert(seen.end(), v.begin(), v.end());
  }
  EXPECT_EQ(loader.epoch(), 9);
  EXPECT_EQ(seen, loader.order(9));
  // reset() mid-epoch restarts the same epoch; a loop after a partial pass moves on.
  loader.epoch(4);
  const auto first = loader.next()->y.to_vector<std::int64_t>();
  (void)loader.next();
  loader.reset();
  EXPECT_EQ(loader.epoch(), 4);
  EXPECT_EQ(loader.next()->y.to_vector<std::int64_t>(), first);
  std::int64_t batches = 0;
  for (auto it = loader.begin(); it != loader.end(); ++it) ++batches;
  EXPECT_EQ(loader.epoch(), 5);
  EXPECT_EQ(batches, loader.num_batches());
  EXPECT_NE(message_of([&] { loader.epoch(-1); }).find("epoch"), std::string::npos);
}

TEST(DataLoader, MovedLoaderKeepsIterating) {
  const Synthetic s = synthetic(30, 2, 2);
  data::DataLoader a(s.images, s.labels, {.batch_size = 8});
  (void)a.next();
  data::DataLoader b = std::move(a);
  EXPECT_EQ(b.next()->y.to_vector<std::int64_t>(), (std::vector<std::int64_t>{8, 9, 10, 11, 12, 13, 14, 15}));
  EXPECT_NE(message_of([&] { (void)a.next(); }).find("moved from"), std::string::npos);
}

TEST(DataLoader, InvalidOptions) {
  const Synthetic s = synthetic(10, 3, 3);
  auto msg = [&](const data::DataLoaderOptions& o) {
    return message_of([&] { data::DataLoader(s.images, s.labels, o); });
  };
  EXPECT_NE(msg({.batch_size = 0}).find("batch_size"), std::string::npos);
  EXPECT_NE(msg({.prefetch = 0}).find("prefetch"), std::string::npos);
  EXPECT_NE(msg({.random_crop_padding = -1}).find("random_crop_padding"), std::string::npos);
  EXPECT_NE(msg({.stddev = {0.0}}).find("stddev"), std::string::npos);
  EXPECT_NE(
      msg({.mean = {0.1, 0.2}}).find("mean needs one value or one per channel (1 for images [3, 3]), got 2"),
      std::string::npos);
  EXPECT_NE(msg({.max_samples = -2}).find("max_samples"), std::string::npos);
  EXPECT_NE(message_of([&] { data::DataLoader(s.images.to(cg::DType::float32), s.labels); }).find("uint8"),
            std::string::npos);
  EXPECT_NE(message_of([&] {
              data::DataLoader(s.images, s.labels.narrow(0, 0, 5));
            }).find("5 labels for 10 images"),
            std::string::npos);
  EXPECT_NE(
      message_of([&] { data::DataLoader(std::shared_ptr<const data::Dataset>()); }).find("null dataset"),
      std::string::npos);
}

// ---- the worker thread ----

TEST(DataLoader, WorkerExceptionReachesTheConsumer) {
  for (bool cugrad_error : {false, true}) {
    auto ds = std::make_shared<ThrowingDataset>(100, 37, cugrad_error);
    data::DataLoader loader(ds, {.batch_size = 10, .prefetch = 3});
    for (int b = 0; b < 3; ++b) {
      const auto batch = loader.next();
      ASSERT_TRUE(batch.has_value());
      EXPECT_EQ(batch->y.numel(), 10);
    }
    if (cugrad_error) {
      EXPECT_THROW(
          {
            try {
              (void)loader.next();
            } catch (const cg::ValueError& e) {
              EXPECT_NE(std::string(e.what()).find("image 37 is unreadable"), std::string::npos);
              throw;
            }
          },
          cg::ValueError);
    } else {
      EXPECT_THROW(
          {
            try {
              (void)loader.next();
            } catch (const std::runtime_error& e) {
              EXPECT_EQ(std::string(e.what()), "disk on fire at image 37");
              throw;
            }
          },
          std::runtime_error);
    }
    // The pass ended with the error; a restart meets it again at the same batch.
    EXPECT_FALSE(loader.next().has_value());
    loader.reset();
    for (int b = 0; b < 3; ++b) ASSERT_TRUE(loader.next().has_value());
    EXPECT_ANY_THROW((void)loader.next());
  }
}

TEST(DataLoader, DestructionMidEpochStopsTheWorker) {
  using clock = std::chrono::steady_clock;
  // Destroyed right away, with the worker busy.
  for (int i = 0; i < 20; ++i) {
    auto ds = std::make_shared<CountingDataset>(50000);
    data::DataLoader loader(ds, {.batch_size = 256, .prefetch = 4});
  }
  // Destroyed mid-epoch, with the queue full (the worker blocked waiting for room).
  auto ds = std::make_shared<CountingDataset>(50000);
  const auto start = clock::now();
  {
    data::DataLoader loader(ds, {.batch_size = 256,
                                 .shuffle = true,
                                 .prefetch = 2,
                                 .random_crop_padding = 2,
                                 .random_horizontal_flip = true});
    ASSERT_TRUE(loader.next().has_value());
    ASSERT_TRUE(loader.next().has_value());
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    // The bounded queue: at most 2 batches ahead of the 2 taken, plus one in preparation.
    EXPECT_LE(ds->reads.load(), 256 * 5);
  }
  const std::int64_t after = ds->reads.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(ds->reads.load(), after) << "the worker kept running after the loader was destroyed";
  EXPECT_LT(std::chrono::duration<double>(clock::now() - start).count(), 5.0);
  // Restarting (epoch/reset) mid-epoch also stops the old worker.
  data::DataLoader loader(ds, {.batch_size = 256, .prefetch = 2});
  (void)loader.next();
  for (int k = 0; k < 10; ++k) loader.epoch(k);
  EXPECT_EQ(loader.next()->y.numel(), 256);
}

TEST(DataLoader, PreparesBatchesAheadOfTheConsumer) {
  // The background thread fills the queue while the consumer does not ask: after one batch is
  // taken, `prefetch` more are read without any further next() (a synchronous loader would stay
  // at one batch), and no more than the bound (plus the one in preparation).
  using clock = std::chrono::steady_clock;
  auto ds = std::make_shared<CountingDataset>(1000);
  data::DataLoader loader(ds, {.batch_size = 10, .prefetch = 3});
  ASSERT_TRUE(loader.next().has_value());
  const auto deadline = clock::now() + std::chrono::seconds(10);
  while (ds->reads.load() < 10 * (1 + 3) && clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_GE(ds->reads.load(), 10 * (1 + 3));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_LE(ds->reads.load(), 10 * (1 + 3 + 1));
  // The prepared batches are the next ones in order.
  for (int b = 1; b <= 3; ++b) {  // image i is filled with the value i
    const auto batch = loader.next();
    ASSERT_TRUE(batch.has_value());
    EXPECT_EQ(batch->x.to_vector<float>()[0], normalized(static_cast<std::uint8_t>(10 * b), 0.0, 1.0)) << b;
  }
}

// ---- Fashion-MNIST ----

TEST(DataLoader, FashionMnistBatches) {
  if (!data::FashionMnist::available())
    GTEST_SKIP() << "Fashion-MNIST is not installed in " << data::FashionMnist::kDefaultRoot
                 << " (apt-get install dataset-fashion-mnist)";
  auto train = std::make_shared<data::FashionMnist>();
  data::DataLoader loader(train,
                          {.batch_size = 256, .mean = {0.2860}, .stddev = {0.3530}, .max_samples = 1000});
  EXPECT_EQ(loader.num_batches(), 4);
  const auto batches = all_batches(loader);
  ASSERT_EQ(batches.size(), 4u);
  EXPECT_EQ(batches[0].x.shape(), (cg::Shape{256, 1, 28, 28}));
  EXPECT_EQ(batches[3].x.shape(), (cg::Shape{232, 1, 28, 28}));
  const auto y = batches[0].y.to_vector<std::int64_t>();
  EXPECT_EQ(std::vector<std::int64_t>(y.begin(), y.begin() + 10),
            (std::vector<std::int64_t>{9, 0, 0, 3, 0, 2, 7, 2, 5, 5}));
  const auto x = batches[0].x.to_vector<float>();
  const auto pixels = train->images().narrow(0, 0, 1).to_vector<std::uint8_t>();
  for (std::size_t i = 0; i < 784; ++i) ASSERT_EQ(x[i], normalized(pixels[i], 0.2860, 0.3530));

  data::DataLoader half(train,
                        {.batch_size = 256, .shuffle = true, .drop_last = true, .classes = {0, 1, 2, 3, 4}});
  EXPECT_EQ(half.size(), 30000);
  EXPECT_EQ(half.num_batches(), 30000 / 256);
}

// ---- CUDA ----

TEST(DataLoaderGPU, CudaBatchesEqualCpuBatches) {
  CUGRAD_REQUIRE_GPU();
  cg::testing::PoisonGuard poison;
  const Synthetic s = synthetic(1003, 28, 28);
  data::DataLoaderOptions o{.batch_size = 64,
                            .shuffle = true,
                            .seed = 99,
                            .random_crop_padding = 2,
                            .random_horizontal_flip = true,
                            .mean = {0.2860},
                            .stddev = {0.3530}};
  data::DataLoader cpu(s.images, s.labels, o);
  o.device = cg::Device::cuda(0);
  data::DataLoader gpu(s.images, s.labels, o);
  for (int epoch = 0; epoch < 2; ++epoch) {
    const auto bc = all_batches(cpu), bg = all_batches(gpu);
    ASSERT_EQ(bg.size(), bc.size());
    for (const auto& b : bg) {
      EXPECT_TRUE(b.x.is_cuda());
      EXPECT_TRUE(b.y.is_cuda());
      EXPECT_EQ(b.x.device(), cg::Device::cuda(0));
    }
    EXPECT_TRUE(same_batches(bg, bc)) << "epoch " << epoch;
    cpu.epoch(epoch + 1);
    gpu.epoch(epoch + 1);
  }
}

TEST(DataLoaderGPU, ConsumerOnAnotherStreamWaitsForTheCopy) {
  CUGRAD_REQUIRE_GPU();
  cg::testing::PoisonGuard poison;  // a read before the copy lands would see NaN
  const Synthetic s = synthetic(8192, 28, 28);
  data::DataLoader cpu(s.images, s.labels, {.batch_size = 4096, .shuffle = true, .seed = 5});
  data::DataLoader gpu(
      s.images, s.labels,
      {.batch_size = 4096, .shuffle = true, .seed = 5, .prefetch = 2, .device = cg::Device::cuda(0)});
  const cg::Stream side = cg::Stream::create(cg::Device::cuda(0));
  cg::StreamGuard on(side);
  for (int i = 0; i < 2; ++i) {
    const auto g = gpu.next();
    const auto c = cpu.next();
    ASSERT_TRUE(g && c);
    // Consumed at once on `side`: a sum and an elementwise op must see the copied values.
    const double gsum = g->x.sum().item<double>(), csum = c->x.sum().item<double>();
    EXPECT_FALSE(std::isnan(gsum));
    EXPECT_NEAR(gsum, csum, 1e-3 * std::abs(csum) + 1e-3);
    EXPECT_TRUE(cg::testing::all_equal((g->x * 2.f).cpu(), c->x * 2.f));
    EXPECT_TRUE(cg::testing::all_equal(g->y.cpu(), c->y));
  }
}

TEST(DataLoaderGPU, DestructionMidEpochAndWorkerErrors) {
  CUGRAD_REQUIRE_GPU();
  const Synthetic s = synthetic(5000, 28, 28);
  const std::size_t before = cg::memory_stats(cg::Device::cuda(0)).bytes_in_use;
  {
    data::DataLoader gpu(s.images, s.labels,
                         {.batch_size = 256, .prefetch = 4, .device = cg::Device::cuda(0)});
    ASSERT_TRUE(gpu.next().has_value());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  cg::synchronize(cg::Device::cuda(0));
  EXPECT_EQ(cg::memory_stats(cg::Device::cuda(0)).bytes_in_use, before)
      << "queued device batches were not freed";
  auto ds = std::make_shared<ThrowingDataset>(100, 55, true);
  data::DataLoader bad(ds, {.batch_size = 10, .device = cg::Device::cuda(0)});
  for (int b = 0; b < 5; ++b) ASSERT_TRUE(bad.next()->x.is_cuda());
  EXPECT_THROW((void)bad.next(), cg::ValueError);
}
