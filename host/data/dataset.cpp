// TensorDataset (images and labels held in two CPU tensors) and Fashion-MNIST loading with the
// checks that make a wrong or missing file a clear error.
#include <sys/stat.h>

#include <cstring>
#include <string>
#include <vector>

#include "cugrad/data.h"
#include "host/ops/op_util.h"

namespace cugrad::data {

// ---- TensorDataset ----

namespace {
Tensor checked_images(const Tensor& images) {
  check_defined("TensorDataset", images, "images");
  CUGRAD_CHECK(images.dtype() == DType::uint8 && (images.dim() == 3 || images.dim() == 4),
               "TensorDataset: images must be uint8 [N, H, W] or [N, C, H, W], got ", describe(images));
  for (std::int64_t d = 1; d < images.dim(); ++d)
    CUGRAD_CHECK(images.size(d) > 0, "TensorDataset: images have an empty dimension: ", describe(images));
  return images.cpu();
}

Tensor checked_labels(const Tensor& labels, const Tensor& images) {
  check_defined("TensorDataset", labels, "labels");
  CUGRAD_CHECK(!is_floating(labels.dtype()) && labels.dim() == 1,
               "TensorDataset: labels must be a 1-D integer tensor, got ", describe(labels));
  CUGRAD_CHECK(labels.size(0) == images.size(0), "TensorDataset: ", labels.size(0), " labels for ",
               images.size(0), " images (", describe(labels), " and ", describe(images), ")");
  return labels.cpu().to(DType::int64);
}
}  // namespace

TensorDataset::TensorDataset(const Tensor& images, const Tensor& labels)
    : images_(checked_images(images)), labels_(checked_labels(labels, images)) {}

Shape TensorDataset::image_shape() const {
  const Shape& s = images_.shape();
  return Shape(s.begin() + 1, s.end());
}

std::int64_t TensorDataset::label(std::int64_t index) const {
  CUGRAD_CHECK(index >= 0 && index < size(), "TensorDataset::label: index ", index, " out of range [0, ",
               size(), ")");
  return labels_.data_ptr<std::int64_t>()[index];
}

void TensorDataset::read_image(std::int64_t index, std::uint8_t* out) const {
  CUGRAD_CHECK(index >= 0 && index < size(), "TensorDataset::read_image: index ", index, " out of range [0, ",
               size(), ")");
  const std::int64_t bytes = images_.numel() / images_.size(0);
  std::memcpy(out, images_.data_ptr<std::uint8_t>() + index * bytes, static_cast<std::size_t>(bytes));
}

// ---- Fashion-MNIST ----

namespace {

constexpr std::int64_t kSide = 28;
constexpr std::int64_t kClasses = 10;

const char* prefix(Split split) { return split == Split::train ? "train" : "t10k"; }

bool is_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool is_dir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// The .gz file if present, else the uncompressed one; "" when neither exists.
std::string find_file(const std::string& root, const std::string& base) {
  const std::string p = root + "/" + base;
  if (is_file(p + ".gz")) return p + ".gz";
  if (is_file(p)) return p;
  return "";
}

[[noreturn]] void missing(const std::string& what) {
  throw Error(detail::cat(
      "FashionMnist: ", what,
      ". Install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist, "
      "files in ",
      FashionMnist::kDefaultRoot, ") or pass the folder that holds the *-ubyte(.gz) files with --data"));
}

std::pair<Tensor, Tensor> load(const std::string& root, Split split) {
  if (!is_dir(root)) missing(detail::cat("the folder ", root, " does not exist"));
  const std::string images_base = detail::cat(prefix(split), "-images-idx3-ubyte");
  const std::string labels_base = detail::cat(prefix(split), "-labels-idx1-ubyte");
  const std::string images_path = find_file(root, images_base);
  const std::string labels_path = find_file(root, labels_base);
  if (images_path.empty()) missing(detail::cat(root, " has no ", images_base, ".gz (or ", images_base, ")"));
  if (labels_path.empty()) missing(detail::cat(root, " has no ", labels_base, ".gz (or ", labels_base, ")"));

  Tensor images = read_idx(images_path);
  Tensor labels = read_idx(labels_path);
  const std::int64_t expected = split == Split::train ? 60000 : 10000;
  if (images.dtype() != DType::uint8 || images.dim() != 3 || images.size(1) != kSide ||
      images.size(2) != kSide)
    throw Error(detail::cat("FashionMnist: ", images_path, ": expected uint8 images [N, 28, 28], got ",
                            describe(images)));
  if (labels.dtype() != DType::uint8 || labels.dim() != 1)
    throw Error(
        detail::cat("FashionMnist: ", labels_path, ": expected uint8 labels [N], got ", describe(labels)));
  if (images.size(0) != labels.size(0))
    throw Error(detail::cat("FashionMnist: ", images.size(0), " images in ", images_path, " but ",
                            labels.size(0), " labels in ", labels_path));
  if (images.size(0) != expected)
    throw Error(detail::cat("FashionMnist: ", images_path, " holds ", images.size(0), " images; the ",
                            split == Split::train ? "train" : "test", " split has ", expected));
  const auto* l = labels.data_ptr<std::uint8_t>();
  for (std::int64_t i = 0; i < labels.numel(); ++i)
    if (l[i] >= kClasses)
      throw Error(detail::cat("FashionMnist: ", labels_path, ": label ", int{l[i]}, " at index ", i,
                              " is outside 0..9"));
  return {std::move(images), labels.to(DType::int64)};
}

}  // namespace

FashionMnist::FashionMnist(const std::string& root, Split split)
    : FashionMnist(load(root, split), root, split) {}

FashionMnist::FashionMnist(std::pair<Tensor, Tensor> loaded, std::string root, Split split)
    : TensorDataset(loaded.first, loaded.second), root_(std::move(root)), split_(split) {}

const std::vector<std::string>& FashionMnist::class_names() {
  static const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                 "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

bool FashionMnist::available(const std::string& root, Split split) {
  return !find_file(root, detail::cat(prefix(split), "-images-idx3-ubyte")).empty() &&
         !find_file(root, detail::cat(prefix(split), "-labels-idx1-ubyte")).empty();
}

}  // namespace cugrad::data
