// Data: the IDX reader and writer (raw or gzip), Fashion-MNIST, and the DataLoader, which
// selects, shuffles, augments and normalizes batches on a background thread and copies them
// to the device on its own stream while the model computes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cugrad/device.h"
#include "cugrad/tensor.h"

namespace cugrad::data {

// ---------------------------------------------------------------------------------------------
// IDX (http://yann.lecun.com/exdb/mnist/): bytes 0 0 TYPE NDIMS, NDIMS big-endian uint32 sizes,
// then the elements, big-endian, row-major.
//
// Element types and the dtype they load as: 0x08 unsigned byte -> uint8, 0x09 signed byte ->
// int32, 0x0B int16 -> int32, 0x0C int32 -> int32, 0x0D float32 -> float32, 0x0E float64 ->
// float64 (cugrad has no int8/int16 dtypes, so those widen).
//
// The reader trusts nothing: the magic's two zero bytes, the type code, 1 to 8 dimensions, the
// element count and byte size (overflow-checked), and the payload length must all be right.
// The payload must end exactly where the header says; extra bytes after it are an error, as in
// torchvision's reader (a file with trailing bytes is not the file its header describes).
// gzip input is recognised by its magic (1f 8b) and inflated with zlib; concatenated gzip
// members are accepted (as gzip -d does), anything else after the stream is an error. A header
// that declares more data than the compressed stream could possibly hold (deflate expands at
// most 1032:1) is rejected before anything is allocated, so a lying header never causes a huge
// allocation. Every problem is a cugrad::Error naming the file and what is wrong.
// ---------------------------------------------------------------------------------------------

/// Parses an IDX file held in memory (gzip-compressed or raw). `name` names the source in error
/// messages. Returns a CPU tensor of the header's shape (see the dtype mapping above).
Tensor parse_idx(const void* data, std::size_t size, const std::string& name = "<memory>");
/// Reads and parses an IDX file (gzip-compressed or raw, whatever its name).
Tensor read_idx(const std::string& path);
/// Writes `tensor` (any device; uint8, int32, float32 or float64; 1 to 8 dimensions, each below
/// 2^32) as IDX, gzip-compressed when `gzip` is true. int32 is written as type 0x0C, so int8/int16
/// files do not round-trip to their original type code. Written atomically (temporary + rename).
void write_idx(const Tensor& tensor, const std::string& path, bool gzip = false);

// ---------------------------------------------------------------------------------------------
// Datasets
// ---------------------------------------------------------------------------------------------

/// What a DataLoader reads: `size()` images of uint8 pixels, each of shape image_shape()
/// ([H, W] for one channel, or [C, H, W]), with an integer label. read_image() is called from the
/// loaders' worker threads (concurrently when several loaders share a dataset), so it must be
/// safe to call concurrently; label() is called on the thread that constructs a loader.
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual std::int64_t size() const = 0;
  virtual Shape image_shape() const = 0;
  virtual std::int64_t label(std::int64_t index) const = 0;
  /// Writes image `index` (row-major, numel(image_shape()) bytes) to `out`.
  virtual void read_image(std::int64_t index, std::uint8_t* out) const = 0;
};

/// A dataset over two tensors: images uint8 [N, H, W] or [N, C, H, W] and labels of any integer
/// dtype [N] (kept as int64). Tensors on a device are copied to the CPU once.
class TensorDataset : public Dataset {
 public:
  TensorDataset(const Tensor& images, const Tensor& labels);
  std::int64_t size() const override { return images_.size(0); }
  Shape image_shape() const override;
  std::int64_t label(std::int64_t index) const override;
  void read_image(std::int64_t index, std::uint8_t* out) const override;
  const Tensor& images() const { return images_; }
  const Tensor& labels() const { return labels_; }

 private:
  Tensor images_;  // uint8, CPU
  Tensor labels_;  // int64, CPU
};

enum class Split { train, test };

/// Fashion-MNIST (Zalando, 28x28 grey images of 10 clothing classes): train 60000 images,
/// test 10000. Reads `<root>/train-images-idx3-ubyte.gz` and `<root>/train-labels-idx1-ubyte.gz`
/// (test: t10k-...), or the same names without .gz. Images are uint8 [N, 28, 28] and labels int64
/// [N] in 0..9, both on the CPU, in the files' order (the order torchvision gives).
/// The default root is where Debian's `dataset-fashion-mnist` package installs the files; a
/// missing folder or file is a cugrad::Error that names the package and the --data option.
class FashionMnist : public TensorDataset {
 public:
  static constexpr const char* kDefaultRoot = "/usr/share/datasets/fashion-mnist";

  explicit FashionMnist(const std::string& root = kDefaultRoot, Split split = Split::train);
  explicit FashionMnist(Split split) : FashionMnist(kDefaultRoot, split) {}

  Split split() const { return split_; }
  const std::string& root() const { return root_; }
  /// "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
  /// "Ankle boot" (torchvision's names), indexed by label.
  static const std::vector<std::string>& class_names();
  /// True when `root` holds both files of `split` (gzip or raw).
  static bool available(const std::string& root = kDefaultRoot, Split split = Split::train);

 private:
  FashionMnist(std::pair<Tensor, Tensor> loaded, std::string root, Split split);
  std::string root_;
  Split split_;
};

// ---------------------------------------------------------------------------------------------
// DataLoader
// ---------------------------------------------------------------------------------------------

/// One batch: x float32 [n, C, H, W] (normalized) and y int64 [n], on the loader's device.
struct Batch {
  Tensor x;
  Tensor y;
};

/// Fields in the order of PyTorch's DataLoader arguments (batch_size, shuffle, drop_last,
/// generator seed, prefetch), then the device, the transforms in the order they apply
/// (torchvision's RandomCrop(size, padding), RandomHorizontalFlip(), ToTensor(), Normalize(mean, std)),
/// then the selection of samples.
struct DataLoaderOptions {
  std::int64_t batch_size = 1;
  /// A new order every epoch, a function of (seed, epoch) only.
  bool shuffle = false;
  /// Drops the last batch when it would be smaller than batch_size.
  bool drop_last = false;
  /// Seeds the shuffle and the random augmentations. They use cugrad's Philox-4x32-10 with fixed
  /// integer arithmetic (no std:: distributions, whose results differ between standard
  /// libraries), so one seed gives the same batches on every machine and compiler.
  std::uint64_t seed = 0;
  /// Batches prepared ahead of the consumer (the bound of the queue), 1 to 64.
  int prefetch = 2;
  /// Where batches are delivered. CUDA batches are copied from pinned memory on the loader's
  /// own copy stream; the consumer's stream waits for the copy on the device, never the host.
  Device device = Device::cpu();
  /// > 0: pad each image with this many zero pixels on every side, then crop a random window of
  /// the original size (torchvision RandomCrop(size, padding=p); offsets uniform in [0, 2p]).
  std::int64_t random_crop_padding = 0;
  /// Mirror each image left-right with probability 0.5 (after the crop).
  bool random_horizontal_flip = false;
  /// x = (pixel / 255 - mean[c]) / stddev[c], in float32; one value for every channel or one
  /// per channel. The defaults give pixel / 255.
  std::vector<double> mean = {0.0};
  std::vector<double> stddev = {1.0};
  /// The samples to use, applied in this order: `indices` (dataset indices, empty = all, in the
  /// given order, repeats allowed), then `classes` (keep samples whose label is listed; empty =
  /// all), then `max_samples` (keep the first ones; -1 = all). E.g. the first 1000 images:
  /// max_samples = 1000; classes 0-4: classes = {0, 1, 2, 3, 4}. Selecting nothing is an error.
  std::vector<std::int64_t> indices;
  std::vector<std::int64_t> classes;
  std::int64_t max_samples = -1;
};

/// Iterates over a dataset in batches. A background thread selects, augments and normalizes
/// each batch in float32 on the host, straight into the batch tensors for the CPU, or for a CUDA
/// device into pinned host memory (from cugrad's pinned cache) whose copy it queues on the
/// loader's own stream; at most `prefetch` finished batches wait in the queue. The device
/// tensors record the copy stream as their writer, and next() makes the caller's current stream
/// wait for it with a device-side event wait (cugrad's storage protocol): the host never blocks
/// on the copy, and using a batch on any other stream is ordered the same way.
///
/// Epochs: the loader is at epoch 0 on construction. A pass over the current epoch yields
/// num_batches() batches, then next() returns std::nullopt (until a new pass starts).
/// `for (auto& [x, y] : loader)` starts a pass: the current epoch when no batch of it has been
/// taken yet, otherwise the next epoch, so consecutive range-for loops see epochs 0, 1, 2, ...
/// with a new shuffle each. epoch(k) jumps to epoch k, reset() restarts the current epoch;
/// both discard the batches prepared so far.
///
/// An exception thrown while preparing a batch (by the dataset, an allocation, a CUDA call)
/// is rethrown by the next() that would have returned that batch; that pass then ends.
/// The destructor stops and joins the thread, also mid-epoch. Not thread-safe: one consumer.
class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions options = {});
  /// Over TensorDataset(images, labels).
  DataLoader(const Tensor& images, const Tensor& labels, DataLoaderOptions options = {});
  ~DataLoader();
  DataLoader(DataLoader&&) noexcept;
  DataLoader& operator=(DataLoader&&) noexcept;
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  /// The next batch of the current pass, or std::nullopt at its end.
  std::optional<Batch> next();
  /// Restarts the current epoch from its first batch (same order and augmentations).
  void reset();
  /// Selects epoch `k` (>= 0) and restarts at its first batch.
  void epoch(std::int64_t k);
  std::int64_t epoch() const;

  /// Batches per epoch: ceil(size / batch_size), or floor with drop_last.
  std::int64_t num_batches() const;
  /// Samples per epoch after the selection (before drop_last).
  std::int64_t size() const;
  /// The selected dataset indices, in selection order (the order of an unshuffled epoch).
  const std::vector<std::int64_t>& samples() const;
  /// The dataset indices in the order epoch `k` visits them.
  std::vector<std::int64_t> order(std::int64_t k) const;
  const DataLoaderOptions& options() const;
  const Dataset& dataset() const;

  class Iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Batch;
    using difference_type = std::ptrdiff_t;
    using pointer = Batch*;
    using reference = Batch&;

    Iterator() = default;
    Batch& operator*() { return *current_; }
    Batch* operator->() { return &*current_; }
    Iterator& operator++();
    void operator++(int) { ++*this; }
    friend bool operator==(const Iterator& it, std::default_sentinel_t) { return !it.current_; }

   private:
    friend class DataLoader;
    explicit Iterator(DataLoader* loader);
    DataLoader* loader_ = nullptr;
    std::optional<Batch> current_;
  };
  /// Starts a pass (see the class comment) and returns its first batch.
  Iterator begin();
  std::default_sentinel_t end() const { return {}; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cugrad::data
