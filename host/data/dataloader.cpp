// DataLoader: sample selection, the Philox-seeded shuffle and augmentations, the background
// worker that builds batches into pinned memory and queues their copies on a copy stream, and
// the bounded queue through which batches and the worker's exceptions reach the consumer.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "cugrad/data.h"
#include "host/ops/op_util.h"
#include "host/runtime/allocator.h"
#include "host/runtime/cuda_context.h"
#include "host/runtime/philox.h"
#include "host/tensor/tensor_impl.h"

namespace cugrad::data {

namespace {

constexpr int kMaxPrefetch = 64;
constexpr std::int64_t kMaxPadding = 1 << 16;
// Separate Philox streams for the two uses of randomness, so that turning an augmentation on
// or off never changes the shuffle.
constexpr std::uint64_t kShuffleStream = 1;
constexpr std::uint64_t kAugmentStream = 2;

// A Philox key for (seed, epoch, purpose): itself a Philox output, so nearby seeds and epochs
// give unrelated streams. Draw i of the stream is philox4x32_10(key, i).
std::uint64_t stream_key(std::uint64_t seed, std::int64_t epoch, std::uint64_t purpose) {
  const philox::U32x4 r = philox::philox4x32_10(seed, static_cast<std::uint64_t>(epoch) * 4 + purpose);
  return (std::uint64_t{r.v[0]} << 32) | r.v[1];
}

// floor(bits * range / 2^64): uniform in [0, range) up to a bias of range / 2^64.
std::uint64_t scale64(std::uint64_t bits, std::uint64_t range) {
  return static_cast<std::uint64_t>((static_cast<unsigned __int128>(bits) * range) >> 64);
}
std::uint32_t scale32(std::uint32_t bits, std::uint32_t range) {
  return static_cast<std::uint32_t>((std::uint64_t{bits} * range) >> 32);
}

struct Item {
  std::optional<Batch> batch;
  std::exception_ptr error;
};

// What the consumer and one pass's worker share.
struct Pass {
  std::mutex mutex;
  std::condition_variable ready;  // the consumer waits for a batch
  std::condition_variable space;  // the worker waits for room in the queue
  std::deque<Item> queue;
  bool done = false;  // the worker has pushed its last item
  std::atomic<bool> stop{false};
};

}  // namespace

struct DataLoader::Impl {
  std::shared_ptr<const Dataset> dataset;
  DataLoaderOptions opt;
  std::int64_t channels = 1, height = 0, width = 0;
  std::vector<std::int64_t> labels;   // every dataset label, read once
  std::vector<std::int64_t> samples;  // the selection
  std::vector<float> lut;             // [channel][pixel value] -> normalized float
  Stream copy_stream;                 // CUDA only

  std::int64_t epoch = 0;
  bool started = false;   // a batch of this pass has been requested
  bool finished = false;  // this pass has ended (all batches taken, or an error)
  std::shared_ptr<Pass> pass;
  std::thread worker;

  std::int64_t num_batches() const {
    const auto n = static_cast<std::int64_t>(samples.size());
    return opt.drop_last ? n / opt.batch_size : (n + opt.batch_size - 1) / opt.batch_size;
  }

  std::vector<std::int64_t> order(std::int64_t k) const {
    std::vector<std::int64_t> o = samples;
    if (!opt.shuffle) return o;
    // Fisher-Yates, one Philox block per step.
    const std::uint64_t key = stream_key(opt.seed, k, kShuffleStream);
    for (std::size_t i = o.size(); i-- > 1;) {
      const philox::U32x4 r = philox::philox4x32_10(key, i);
      const std::uint64_t bits = (std::uint64_t{r.v[0]} << 32) | r.v[1];
      std::swap(o[i], o[static_cast<std::size_t>(scale64(bits, i + 1))]);
    }
    return o;
  }

  // One image: random crop (zero padding), then random flip, then the normalization table.
  void transform(const std::uint8_t* img, float* out, std::uint64_t aug_key, std::int64_t position) const {
    const std::int64_t pad = opt.random_crop_padding;
    bool flip = false;
    std::int64_t di = 0, dj = 0;  // source row/column = output row/column + d
    if (opt.random_horizontal_flip || pad > 0) {
      const philox::U32x4 r = philox::philox4x32_10(aug_key, static_cast<std::uint64_t>(position));
      flip = opt.random_horizontal_flip && r.v[0] < 0x80000000u;
      if (pad > 0) {
        const auto range = static_cast<std::uint32_t>(2 * pad + 1);
        di = static_cast<std::int64_t>(scale32(r.v[1], range)) - pad;
        dj = static_cast<std::int64_t>(scale32(r.v[2], range)) - pad;
      }
    }
    const std::int64_t plane = height * width;
    for (std::int64_t c = 0; c < channels; ++c) {
      const float* table = lut.data() + 256 * c;
      const std::uint8_t* src = img + c * plane;
      float* dst = out + c * plane;
      if (!flip && di == 0 && dj == 0) {
        for (std::int64_t k = 0; k < plane; ++k) dst[k] = table[src[k]];
        continue;
      }
      for (std::int64_t r = 0; r < height; ++r) {
        float* row = dst + r * width;
        const std::int64_t sr = r + di;
        if (sr < 0 || sr >= height) {
          std::fill(row, row + width, table[0]);
          continue;
        }
        const std::uint8_t* srow = src + sr * width;
        for (std::int64_t col = 0; col < width; ++col) {
          const std::int64_t sc = (flip ? width - 1 - col : col) + dj;
          row[col] = sc >= 0 && sc < width ? table[srow[sc]] : table[0];
        }
      }
    }
  }

  // Batch b of an epoch's order; an empty optional when asked to stop midway.
  std::optional<Batch> make_batch(const std::vector<std::int64_t>& ord, std::int64_t b, std::int64_t ep,
                                  const std::atomic<bool>& stop) const {
    const auto total = static_cast<std::int64_t>(ord.size());
    const std::int64_t start = b * opt.batch_size;
    const std::int64_t n = std::min(opt.batch_size, total - start);
    const std::int64_t per = channels * height * width;
    const Shape xs{n, channels, height, width}, ys{n};
    const std::size_t x_bytes = static_cast<std::size_t>(n * per) * sizeof(float);
    const std::size_t y_offset = (x_bytes + 63) / 64 * 64;
    const std::size_t y_bytes = static_cast<std::size_t>(n) * sizeof(std::int64_t);
    const bool to_cuda = opt.device.is_cuda();

    Batch batch;
    runtime::PinnedBlock staging;
    float* xd = nullptr;
    std::int64_t* yd = nullptr;
    if (to_cuda) {
      staging = runtime::pinned_allocate(y_offset + y_bytes);
      xd = static_cast<float*>(staging.data());
      yd = reinterpret_cast<std::int64_t*>(static_cast<char*>(staging.data()) + y_offset);
    } else {
      batch.x = empty(xs, Device::cpu(), DType::float32);
      batch.y = empty(ys, Device::cpu(), DType::int64);
      xd = batch.x.data_ptr<float>();
      yd = batch.y.data_ptr<std::int64_t>();
    }
    const std::uint64_t aug_key = stream_key(opt.seed, ep, kAugmentStream);
    std::vector<std::uint8_t> img(static_cast<std::size_t>(per));
    for (std::int64_t s = 0; s < n; ++s) {
      if (stop.load(std::memory_order_relaxed)) return std::nullopt;
      const std::int64_t idx = ord[static_cast<std::size_t>(start + s)];
      dataset->read_image(idx, img.data());
      yd[s] = labels[static_cast<std::size_t>(idx)];
      transform(img.data(), xd + s * per, aug_key, start + s);
    }
    if (to_cuda) {
      // Allocated and written on the copy stream: the storages record it as their writer, so
      // a consumer on another stream waits for the copy on the device (Storage::prepare_read).
      StreamGuard on_copy(copy_stream);
      batch.x = empty(xs, opt.device, DType::float32);
      batch.y = empty(ys, opt.device, DType::int64);
      OpScope scope("DataLoader", opt.device);
      scope.writes(batch.x);
      scope.writes(batch.y);
      auto stream = static_cast<cudaStream_t>(scope.stream());
      CUGRAD_CUDA_CHECK(cudaMemcpyAsync(batch.x.raw_data(), xd, x_bytes, cudaMemcpyHostToDevice, stream));
      CUGRAD_CUDA_CHECK(cudaMemcpyAsync(batch.y.raw_data(), yd, y_bytes, cudaMemcpyHostToDevice, stream));
      // The staging block goes back to the pinned cache now but is reused only after the copies.
      staging.release_after(copy_stream);
    }
    return batch;
  }

  void produce(std::shared_ptr<Pass> ps, std::vector<std::int64_t> ord, std::int64_t ep) const {
    try {
      const std::int64_t nb = num_batches();
      for (std::int64_t b = 0; b < nb; ++b) {
        {
          std::unique_lock<std::mutex> lock(ps->mutex);
          ps->space.wait(
              lock, [&] { return ps->stop.load() || static_cast<int>(ps->queue.size()) < opt.prefetch; });
          if (ps->stop.load()) return;
        }
        std::optional<Batch> batch = make_batch(ord, b, ep, ps->stop);
        if (!batch) return;  // stopped midway
        {
          std::lock_guard<std::mutex> lock(ps->mutex);
          if (ps->stop.load()) return;
          ps->queue.push_back(Item{std::move(batch), nullptr});
        }
        ps->ready.notify_one();
      }
      std::lock_guard<std::mutex> lock(ps->mutex);
      ps->done = true;
    } catch (...) {
      std::lock_guard<std::mutex> lock(ps->mutex);
      ps->queue.push_back(Item{std::nullopt, std::current_exception()});
      ps->done = true;
    }
    ps->ready.notify_one();
  }

  void stop_worker() noexcept {
    if (pass) {
      {
        std::lock_guard<std::mutex> lock(pass->mutex);
        pass->stop.store(true);
      }
      pass->space.notify_all();
      pass->ready.notify_all();
    }
    if (worker.joinable()) worker.join();
    pass.reset();  // drops the batches prepared so far
  }

  void start_pass() {
    stop_worker();
    started = false;
    finished = false;
    auto fresh = std::make_shared<Pass>();
    worker = std::thread(&Impl::produce, this, fresh, order(epoch), epoch);  // may throw: no pass then
    pass = std::move(fresh);
  }

  std::optional<Batch> next() {
    if (finished) return std::nullopt;
    if (!pass) start_pass();
    started = true;
    Item item;
    {
      std::unique_lock<std::mutex> lock(pass->mutex);
      pass->ready.wait(lock, [&] { return !pass->queue.empty() || pass->done; });
      if (pass->queue.empty()) {
        finished = true;
        return std::nullopt;
      }
      item = std::move(pass->queue.front());
      pass->queue.pop_front();
    }
    pass->space.notify_one();
    if (item.error) {
      finished = true;
      stop_worker();
      std::rethrow_exception(item.error);
    }
    Batch& b = *item.batch;
    if (b.x.is_cuda()) {
      // Order the caller's current stream after the copy now (a device-side event wait), before
      // the worker queues later copies that this batch does not need.
      OpScope scope("DataLoader::next", b.x.device());
      scope.reads(b.x);
      scope.reads(b.y);
    }
    return std::move(item.batch);
  }
};

DataLoader::DataLoader(const Tensor& images, const Tensor& labels, DataLoaderOptions options)
    : DataLoader(std::make_shared<TensorDataset>(images, labels), std::move(options)) {}

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions options)
    : impl_(std::make_unique<Impl>()) {
  Impl& im = *impl_;
  CUGRAD_CHECK(dataset != nullptr, "DataLoader: null dataset");
  const DataLoaderOptions& o = options;
  CUGRAD_CHECK(o.batch_size >= 1, "DataLoader: batch_size must be at least 1, got ", o.batch_size);
  CUGRAD_CHECK(o.prefetch >= 1 && o.prefetch <= kMaxPrefetch, "DataLoader: prefetch must be in 1..",
               kMaxPrefetch, ", got ", o.prefetch);
  CUGRAD_CHECK(o.random_crop_padding >= 0 && o.random_crop_padding <= kMaxPadding,
               "DataLoader: random_crop_padding must be in 0..", kMaxPadding, ", got ",
               o.random_crop_padding);
  CUGRAD_CHECK(o.max_samples >= -1, "DataLoader: max_samples must be -1 (all) or a count, got ",
               o.max_samples);
  check_device_available(o.device, "DataLoader");

  const Shape shape = dataset->image_shape();
  CUGRAD_CHECK(shape.size() == 2 || shape.size() == 3, "DataLoader: images must be [H, W] or [C, H, W], got ",
               shape_str(shape));
  for (std::int64_t s : shape)
    CUGRAD_CHECK(s > 0, "DataLoader: image shape ", shape_str(shape), " has an empty dimension");
  im.channels = shape.size() == 3 ? shape[0] : 1;
  im.height = shape[shape.size() - 2];
  im.width = shape[shape.size() - 1];

  const auto nch = static_cast<std::size_t>(im.channels);
  CUGRAD_CHECK(o.mean.size() == 1 || o.mean.size() == nch,
               "DataLoader: mean needs one value or one per channel (", nch, " for images ", shape_str(shape),
               "), got ", o.mean.size());
  CUGRAD_CHECK(o.stddev.size() == 1 || o.stddev.size() == nch,
               "DataLoader: stddev needs one value or one per channel (", nch, " for images ",
               shape_str(shape), "), got ", o.stddev.size());
  im.lut.resize(256 * nch);
  for (std::size_t c = 0; c < nch; ++c) {
    const double m = o.mean[o.mean.size() == 1 ? 0 : c], s = o.stddev[o.stddev.size() == 1 ? 0 : c];
    CUGRAD_CHECK(std::isfinite(m) && std::isfinite(s) && s > 0, "DataLoader: normalization of channel ", c,
                 " needs a finite mean and a positive stddev, got mean ", m, ", stddev ", s);
    // torchvision: ToTensor (v / 255 in float32), then Normalize ((x - mean) / std in float32).
    const float mf = static_cast<float>(m), sf = static_cast<float>(s);
    for (int v = 0; v < 256; ++v)
      im.lut[256 * c + static_cast<std::size_t>(v)] = (static_cast<float>(v) / 255.f - mf) / sf;
  }

  const std::int64_t n = dataset->size();
  CUGRAD_CHECK(n >= 0, "DataLoader: dataset size ", n);
  im.labels.resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) im.labels[static_cast<std::size_t>(i)] = dataset->label(i);

  std::vector<std::int64_t> sel;
  if (o.indices.empty()) {
    sel.resize(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) sel[static_cast<std::size_t>(i)] = i;
  } else {
    for (std::int64_t i : o.indices)
      CUGRAD_CHECK(i >= 0 && i < n, "DataLoader: index ", i, " in indices is out of range for a dataset of ",
                   n);
    sel = o.indices;
  }
  if (!o.classes.empty()) {
    const std::unordered_set<std::int64_t> keep(o.classes.begin(), o.classes.end());
    std::erase_if(sel, [&](std::int64_t i) { return !keep.count(im.labels[static_cast<std::size_t>(i)]); });
  }
  if (o.max_samples >= 0 && static_cast<std::int64_t>(sel.size()) > o.max_samples)
    sel.resize(static_cast<std::size_t>(o.max_samples));
  CUGRAD_CHECK(!sel.empty(), "DataLoader: no samples selected from a dataset of ", n, " (", o.indices.size(),
               " indices given, ", o.classes.size(), " classes given, max_samples ", o.max_samples, ")");
  im.samples = std::move(sel);

  im.dataset = std::move(dataset);
  im.opt = std::move(options);
  if (im.opt.device.is_cuda()) im.copy_stream = Stream::create(im.opt.device);
  im.start_pass();  // prefetch the first epoch right away
}

DataLoader::~DataLoader() {
  if (impl_) impl_->stop_worker();
}
DataLoader::DataLoader(DataLoader&&) noexcept = default;
DataLoader& DataLoader::operator=(DataLoader&& other) noexcept {
  if (this != &other) {
    if (impl_) impl_->stop_worker();
    impl_ = std::move(other.impl_);
  }
  return *this;
}

std::optional<Batch> DataLoader::next() {
  CUGRAD_CHECK(impl_ != nullptr, "DataLoader::next: the loader was moved from");
  return impl_->next();
}

void DataLoader::reset() {
  CUGRAD_CHECK(impl_ != nullptr, "DataLoader::reset: the loader was moved from");
  impl_->start_pass();
}

void DataLoader::epoch(std::int64_t k) {
  CUGRAD_CHECK(impl_ != nullptr, "DataLoader::epoch: the loader was moved from");
  CUGRAD_CHECK(k >= 0, "DataLoader::epoch: epoch must be >= 0, got ", k);
  impl_->epoch = k;
  impl_->start_pass();
}

std::int64_t DataLoader::epoch() const { return impl_->epoch; }
std::int64_t DataLoader::num_batches() const { return impl_->num_batches(); }
std::int64_t DataLoader::size() const { return static_cast<std::int64_t>(impl_->samples.size()); }
const std::vector<std::int64_t>& DataLoader::samples() const { return impl_->samples; }
std::vector<std::int64_t> DataLoader::order(std::int64_t k) const {
  CUGRAD_CHECK(k >= 0, "DataLoader::order: epoch must be >= 0, got ", k);
  return impl_->order(k);
}
const DataLoaderOptions& DataLoader::options() const { return impl_->opt; }
const Dataset& DataLoader::dataset() const { return *impl_->dataset; }

DataLoader::Iterator::Iterator(DataLoader* loader) : loader_(loader), current_(loader->next()) {}

DataLoader::Iterator& DataLoader::Iterator::operator++() {
  current_ = loader_->next();
  return *this;
}

DataLoader::Iterator DataLoader::begin() {
  CUGRAD_CHECK(impl_ != nullptr, "DataLoader::begin: the loader was moved from");
  if (impl_->started) epoch(impl_->epoch + 1);
  return Iterator(this);
}

}  // namespace cugrad::data
