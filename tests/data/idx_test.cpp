// IDX reading and writing: round trips of every dtype (raw and gzip), the exact bytes of the
// format, gzip written by Python (one member and two), every malformed input a clear
// cugrad::Error naming the file, and Fashion-MNIST against the installed Debian files (checked
// against values read with Python from the same .gz files) or a fake folder written here.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "cugrad/cugrad.h"
#include "cugrad/data.h"
#include "tests/support/parity.h"

namespace cg = cugrad;
namespace data = cugrad::data;
namespace fs = std::filesystem;

namespace {

using Bytes = std::vector<std::uint8_t>;

// A fresh folder under the build tree for one test.
std::string temp_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const fs::path p =
      fs::path(CUGRAD_TEST_TMP_DIR) / "idx_test_tmp" /
      (std::string(info->test_suite_name()) + "." + info->name() + "." + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

Bytes read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const Bytes& b) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// The message of the cugrad::Error that `f` throws; a test failure when it throws nothing or
// something else.
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const cg::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-cugrad exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "did not throw";
  return "";
}

::testing::AssertionResult mentions(const std::string& message, std::initializer_list<const char*> parts) {
  for (const char* p : parts)
    if (message.find(p) == std::string::npos)
      return ::testing::AssertionFailure()
             << "message \"" << message << "\" does not mention \"" << p << "\"";
  return ::testing::AssertionSuccess();
}

std::string parse_error(const Bytes& b, const std::string& name = "buffer.idx") {
  return error_of([&] { data::parse_idx(b.data(), b.size(), name); });
}

void put_be32(Bytes& b, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<std::uint8_t>(v >> s));
}

// A raw IDX header.
Bytes header(std::uint8_t type, std::initializer_list<std::uint32_t> dims) {
  Bytes b{0, 0, type, static_cast<std::uint8_t>(dims.size())};
  for (auto d : dims) put_be32(b, d);
  return b;
}

// Python's gzip.compress(mtime=0) of the raw IDX int16 [2, 3] = {1, -1, -32768, 32767, 0, 1234}.
const Bytes kPythonGzipInt16 = {0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x63,
                                0x60, 0xe0, 0x66, 0x62, 0x60, 0x60, 0x00, 0x61, 0x66, 0x06, 0xc6,
                                0xff, 0xff, 0x1b, 0x18, 0xea, 0xff, 0x33, 0x30, 0xb0, 0x5c, 0x02,
                                0x00, 0x35, 0x33, 0xd4, 0xa8, 0x18, 0x00, 0x00, 0x00};
// Two concatenated gzip members (Python) whose inflated bytes are the raw IDX uint8 [4, 5] with
// values 0, 10, ..., 190; the first member ends after 9 bytes, in the middle of the header.
const Bytes kPythonGzipTwoMembers = {0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x63, 0x60,
                                     0xe0, 0x60, 0x62, 0x60, 0x60, 0x60, 0x61, 0x00, 0x00, 0xc6, 0x3e, 0x42,
                                     0xfc, 0x09, 0x00, 0x00, 0x00, 0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00,
                                     0x00, 0x02, 0x03, 0x63, 0x60, 0x60, 0x65, 0xe0, 0x12, 0x91, 0xd3, 0x30,
                                     0xb2, 0x71, 0x0b, 0x88, 0x4a, 0xc9, 0xab, 0x68, 0xea, 0x99, 0xb6, 0x60,
                                     0xd5, 0x96, 0x7d, 0x00, 0x84, 0x5f, 0x95, 0xe5, 0x17, 0x00, 0x00, 0x00};

}  // namespace

// ---- round trips ----

TEST(Idx, RoundTripEveryDtypeRawAndGzip) {
  const std::string dir = temp_dir();
  std::vector<std::uint8_t> u8(2 * 3 * 5);
  for (std::size_t i = 0; i < u8.size(); ++i) u8[i] = static_cast<std::uint8_t>(i * 37 + 1);
  const std::vector<std::int32_t> i32 = {0,
                                         1,
                                         -1,
                                         std::numeric_limits<std::int32_t>::min(),
                                         std::numeric_limits<std::int32_t>::max(),
                                         16909060,
                                         -123456789};
  const std::vector<float> f32 = {0.f,        -0.f,    1.5f,
                                  -3.25e-30f, 6.5e30f, std::numeric_limits<float>::infinity()};
  const std::vector<double> f64 = {1.0 / 3.0, -2.5e-300, 4.9e-324, 1e308, -0.0, 42.0, 7.0, -8.5};
  const cg::TensorList tensors = {cg::from_vector(u8, {2, 3, 5}), cg::from_vector(i32, {7}),
                                  cg::from_vector(f32, {3, 2}), cg::from_vector(f64, {2, 1, 2, 2})};
  for (bool gz : {false, true}) {
    for (std::size_t k = 0; k < tensors.size(); ++k) {
      const cg::Tensor& t = tensors[k];
      const std::string path = dir + "/t" + std::to_string(k) + (gz ? ".idx.gz" : ".idx");
      data::write_idx(t, path, gz);
      const Bytes b = read_bytes(path);
      ASSERT_GE(b.size(), 2u);
      EXPECT_EQ(gz, b[0] == 0x1f && b[1] == 0x8b) << path;
      const cg::Tensor r = data::read_idx(path);
      EXPECT_EQ(r.dtype(), t.dtype()) << path;
      EXPECT_EQ(r.shape(), t.shape()) << path;
      EXPECT_FALSE(r.is_cuda());
      ASSERT_EQ(r.nbytes(), t.nbytes());
      // Bitwise: -0.0, denormals and infinities must survive.
      EXPECT_EQ(0, std::memcmp(r.raw_data(), t.raw_data(), t.nbytes())) << path;
      EXPECT_FALSE(fs::exists(path + ".tmp"));
    }
  }
}

TEST(Idx, WriterProducesTheExactBigEndianBytes) {
  const std::string dir = temp_dir();
  data::write_idx(cg::from_vector(std::vector<std::uint8_t>{1, 2, 3, 4, 5, 6}, {2, 3}), dir + "/u8.idx");
  EXPECT_EQ(read_bytes(dir + "/u8.idx"), (Bytes{0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6}));
  data::write_idx(cg::from_vector(std::vector<std::int32_t>{0x01020304, -2}, {2}), dir + "/i32.idx");
  EXPECT_EQ(read_bytes(dir + "/i32.idx"),
            (Bytes{0, 0, 0x0C, 1, 0, 0, 0, 2, 0x01, 0x02, 0x03, 0x04, 0xFF, 0xFF, 0xFF, 0xFE}));
  data::write_idx(cg::from_vector(std::vector<float>{1.0f}, {1}), dir + "/f32.idx");
  EXPECT_EQ(read_bytes(dir + "/f32.idx"), (Bytes{0, 0, 0x0D, 1, 0, 0, 0, 1, 0x3F, 0x80, 0, 0}));
  data::write_idx(cg::from_vector(std::vector<double>{2.0}, {1}), dir + "/f64.idx");
  EXPECT_EQ(read_bytes(dir + "/f64.idx"), (Bytes{0, 0, 0x0E, 1, 0, 0, 0, 1, 0x40, 0, 0, 0, 0, 0, 0, 0}));
}

TEST(Idx, DecodesEveryTypeCodeFromHandWrittenBytes) {
  Bytes s8 = header(0x09, {4});
  for (std::uint8_t v : {0x00, 0x7F, 0x80, 0xFF}) s8.push_back(v);
  const cg::Tensor a = data::parse_idx(s8.data(), s8.size());
  EXPECT_EQ(a.dtype(), cg::DType::int32);
  EXPECT_EQ(a.to_vector<std::int32_t>(), (std::vector<std::int32_t>{0, 127, -128, -1}));

  Bytes s16 = header(0x0B, {3});
  for (std::uint8_t v : {0x00, 0x01, 0xFF, 0xFF, 0x80, 0x00}) s16.push_back(v);
  const cg::Tensor b = data::parse_idx(s16.data(), s16.size());
  EXPECT_EQ(b.dtype(), cg::DType::int32);
  EXPECT_EQ(b.to_vector<std::int32_t>(), (std::vector<std::int32_t>{1, -1, -32768}));

  Bytes f = header(0x0D, {1, 2});
  for (std::uint8_t v : {0xC0, 0x49, 0x0F, 0xDB, 0x00, 0x00, 0x00, 0x01}) f.push_back(v);
  const cg::Tensor c = data::parse_idx(f.data(), f.size());
  EXPECT_EQ(c.dtype(), cg::DType::float32);
  EXPECT_EQ(c.shape(), (cg::Shape{1, 2}));
  const auto cv = c.to_vector<float>();
  EXPECT_EQ(cv[0], -3.14159274f);
  EXPECT_EQ(cv[1], std::numeric_limits<float>::denorm_min());

  // Zero-size dimensions are valid: an empty tensor.
  const Bytes empty = header(0x08, {0, 28});
  const cg::Tensor e = data::parse_idx(empty.data(), empty.size());
  EXPECT_EQ(e.shape(), (cg::Shape{0, 28}));
  EXPECT_EQ(e.numel(), 0);
}

TEST(Idx, ReadsGzipWrittenByPython) {
  const cg::Tensor t = data::parse_idx(kPythonGzipInt16.data(), kPythonGzipInt16.size(), "python.gz");
  EXPECT_EQ(t.dtype(), cg::DType::int32);
  EXPECT_EQ(t.shape(), (cg::Shape{2, 3}));
  EXPECT_EQ(t.to_vector<std::int32_t>(), (std::vector<std::int32_t>{1, -1, -32768, 32767, 0, 1234}));
}

TEST(Idx, ReadsConcatenatedGzipMembers) {
  const cg::Tensor t = data::parse_idx(kPythonGzipTwoMembers.data(), kPythonGzipTwoMembers.size(), "two.gz");
  EXPECT_EQ(t.dtype(), cg::DType::uint8);
  EXPECT_EQ(t.shape(), (cg::Shape{4, 5}));
  std::vector<std::uint8_t> expect(20);
  for (int i = 0; i < 20; ++i) expect[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(10 * i);
  EXPECT_EQ(t.to_vector<std::uint8_t>(), expect);
}

TEST(Idx, WriteRejectsWhatIdxCannotHold) {
  const std::string dir = temp_dir();
  EXPECT_TRUE(mentions(
      error_of([&] { data::write_idx(cg::zeros({3}, cg::Device::cpu(), cg::DType::int64), dir + "/x"); }),
      {"write_idx", "int64"}));
  EXPECT_TRUE(
      mentions(error_of([&] { data::write_idx(cg::zeros({}), dir + "/x"); }), {"write_idx", "dimensions"}));
  EXPECT_TRUE(mentions(error_of([&] { data::write_idx(cg::zeros({1}), dir + "/no/such/folder/x.idx"); }),
                       {"write_idx", "no/such/folder"}));
}

// ---- malformed input: each a clear cugrad::Error naming the source and the problem ----

TEST(Idx, EmptyAndShortFiles) {
  const std::string dir = temp_dir();
  write_bytes(dir + "/empty.idx", {});
  EXPECT_TRUE(mentions(error_of([&] { data::read_idx(dir + "/empty.idx"); }), {"empty.idx", "empty"}));
  EXPECT_TRUE(mentions(parse_error({0, 0, 8}), {"buffer.idx", "truncated header", "3 bytes"}));
  EXPECT_TRUE(
      mentions(parse_error({0, 0, 8, 3, 0, 0, 0, 1, 0, 0}), {"truncated header", "3 dimensions", "16-byte"}));
  EXPECT_TRUE(
      mentions(error_of([&] { data::read_idx(dir + "/missing.idx"); }), {"missing.idx", "cannot open"}));
  // A directory is a clear error, not an allocation of its nonsensical "size".
  fs::create_directories(dir + "/a_folder.idx");
  EXPECT_TRUE(mentions(error_of([&] { data::read_idx(dir + "/a_folder.idx"); }),
                       {"a_folder.idx", "not a regular file"}));
}

TEST(Idx, WrongMagicTypeAndDimensionCount) {
  Bytes b = header(0x08, {2});
  b.push_back(1);
  b.push_back(2);
  Bytes wrong = b;
  wrong[0] = 0x01;
  EXPECT_TRUE(mentions(parse_error(wrong), {"buffer.idx", "bad magic number", "0x1000801"}));
  wrong = b;
  wrong[1] = 0x08;
  EXPECT_TRUE(mentions(parse_error(wrong), {"bad magic number"}));
  // A PNG is not an IDX file.
  EXPECT_TRUE(mentions(parse_error({0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A}), {"bad magic number"}));
  for (std::uint8_t code : {0x00, 0x07, 0x0A, 0x0F, 0xFF}) {
    wrong = b;
    wrong[2] = code;
    EXPECT_TRUE(mentions(parse_error(wrong), {"unknown element type code"})) << int{code};
  }
  EXPECT_TRUE(mentions(parse_error({0, 0, 8, 0}), {"0 dimensions"}));
  Bytes nine = header(0x08, {1, 1, 1, 1, 1, 1, 1, 1, 1});
  nine.push_back(7);
  EXPECT_TRUE(mentions(parse_error(nine), {"9 dimensions", "1 to 8"}));
}

TEST(Idx, HugeDimensionsNeverAllocate) {
  // 2^31 x 2^31 x 28 elements overflow a 64-bit byte count.
  Bytes huge = header(0x08, {0x80000000u, 0x80000000u, 28});
  EXPECT_TRUE(mentions(parse_error(huge), {"overflow", "[2147483648, 2147483648, 28]"}));
  // All dimensions at the 32-bit maximum.
  EXPECT_TRUE(mentions(parse_error(header(0x0E, {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu})),
                       {"overflow"}));
  // No overflow, but 120 GB declared in a 16-byte file: a size error, not an allocation.
  EXPECT_TRUE(mentions(parse_error(header(0x08, {65536, 65536, 28})),
                       {"truncated data", "120259084288 bytes of data", "only 0 bytes"}));
  // The same header gzip-compressed (Python: gzip.compress(header, mtime=0)): rejected by the
  // deflate bound before anything the size of the data is allocated or inflated.
  const Bytes lying = {0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x63,
                       0x60, 0xe0, 0x60, 0x66, 0x60, 0x64, 0x60, 0x00, 0x63, 0x06, 0x06,
                       0x19, 0x00, 0x96, 0xb1, 0xd0, 0x11, 0x10, 0x00, 0x00, 0x00};
  EXPECT_TRUE(mentions(parse_error(lying, "lying.gz"),
                       {"lying.gz", "120259084288 bytes of data", "deflate expands at most 1032:1"}));
}

TEST(Idx, TruncatedAndTrailingData) {
  Bytes b = header(0x0C, {2, 2});
  for (int i = 0; i < 16; ++i) b.push_back(static_cast<std::uint8_t>(i));
  ASSERT_NO_THROW(data::parse_idx(b.data(), b.size()));
  Bytes cut(b.begin(), b.end() - 1);
  EXPECT_TRUE(mentions(parse_error(cut), {"truncated data", "int32[2, 2]", "16 bytes of data", "only 15"}));
  Bytes extra = b;
  extra.push_back(0);
  extra.push_back(0);
  EXPECT_TRUE(mentions(parse_error(extra), {"2 trailing bytes after the data"}));
}

TEST(Idx, TruncatedCorruptAndGarbageGzip) {
  const std::string dir = temp_dir();
  std::vector<std::uint8_t> values(5000);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<std::uint8_t>((i * i) % 251);
  data::write_idx(cg::from_vector(values, {50, 100}), dir + "/ok.gz", true);
  const Bytes gz = read_bytes(dir + "/ok.gz");
  ASSERT_NO_THROW(data::parse_idx(gz.data(), gz.size()));

  // Cut in the middle of the deflate data, and cut only the 8-byte CRC/length trailer.
  for (std::size_t keep : {gz.size() / 2, gz.size() - 8, gz.size() - 1, std::size_t{12}}) {
    const Bytes cut(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(keep));
    write_bytes(dir + "/cut.gz", cut);
    const std::string m = error_of([&] { data::read_idx(dir + "/cut.gz"); });
    EXPECT_TRUE(mentions(m, {"cut.gz", "truncated"})) << "kept " << keep << " bytes";
  }
  // Only the gzip magic.
  EXPECT_TRUE(mentions(parse_error({0x1f, 0x8b}), {"truncated"}));
  // The gzip magic followed by garbage.
  Bytes garbage = {0x1f, 0x8b};
  for (int i = 0; i < 200; ++i) garbage.push_back(static_cast<std::uint8_t>(i * 73 + 11));
  EXPECT_TRUE(mentions(parse_error(garbage), {"corrupt gzip data"}));
  // A valid gzip header followed by garbage deflate data.
  Bytes bad_deflate(gz.begin(), gz.begin() + 10);
  for (int i = 0; i < 100; ++i) bad_deflate.push_back(0xFF);
  EXPECT_TRUE(mentions(parse_error(bad_deflate), {"corrupt gzip data"}));
  // A flipped byte in the CRC: zlib's check catches it.
  Bytes bad_crc = gz;
  bad_crc[gz.size() - 6] ^= 0x5A;
  EXPECT_TRUE(mentions(parse_error(bad_crc), {"corrupt gzip data"}));
  // Garbage after the end of the stream.
  Bytes tail = gz;
  for (std::uint8_t v : {0x00, 0x01, 0x02}) tail.push_back(v);
  EXPECT_TRUE(mentions(parse_error(tail), {"3 bytes of garbage after the end of the gzip stream"}));
  // A complete gzip stream of nothing (Python: gzip.compress(b"", mtime=0)).
  const Bytes empty_gz = {0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03,
                          0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  EXPECT_TRUE(mentions(parse_error(empty_gz, "empty.gz"), {"empty.gz", "empty"}));
}

TEST(Idx, GzipWithTrailingInflatedBytes) {
  // Two members: a complete IDX file followed by another complete IDX file inflate to one
  // file with trailing bytes after the first header's data.
  const std::string dir = temp_dir();
  data::write_idx(cg::from_vector(std::vector<std::uint8_t>{1, 2, 3}, {3}), dir + "/a.gz", true);
  Bytes two = read_bytes(dir + "/a.gz");
  const Bytes again = two;
  two.insert(two.end(), again.begin(), again.end());
  EXPECT_TRUE(mentions(parse_error(two, "two.gz"), {"two.gz", "11 trailing bytes after the data"}));
  // Truncated data inside a complete gzip stream: the file is a valid gzip of a short IDX.
  Bytes short_member(kPythonGzipTwoMembers.begin(), kPythonGzipTwoMembers.begin() + 29);  // first member only
  EXPECT_TRUE(mentions(parse_error(short_member), {"truncated header", "9 bytes"}));
}

// ---- Fashion-MNIST ----

namespace {
bool fashion_installed() { return data::FashionMnist::available(); }
}  // namespace

TEST(FashionMnist, ClassNames) {
  const auto& names = data::FashionMnist::class_names();
  ASSERT_EQ(names.size(), 10u);
  EXPECT_EQ(names[0], "T-shirt/top");
  EXPECT_EQ(names[1], "Trouser");
  EXPECT_EQ(names[5], "Sandal");
  EXPECT_EQ(names[9], "Ankle boot");
}

TEST(FashionMnist, MissingFolderNamesThePackageAndTheDataOption) {
  const std::string m = error_of([] { data::FashionMnist("/nonexistent/fashion", data::Split::train); });
  EXPECT_TRUE(mentions(m, {"/nonexistent/fashion", "dataset-fashion-mnist", "--data"}));
  const std::string dir = temp_dir();
  const std::string m2 = error_of([&] { data::FashionMnist(dir, data::Split::test); });
  EXPECT_TRUE(mentions(m2, {"t10k-images-idx3-ubyte", "dataset-fashion-mnist", "--data"}));
  EXPECT_FALSE(data::FashionMnist::available(dir, data::Split::test));
}

TEST(FashionMnist, FakeFolderWithRawFiles) {
  // The test split written here uncompressed (the reader falls back to names without .gz).
  const std::string dir = temp_dir();
  const std::int64_t n = 10000;
  std::vector<std::uint8_t> pixels(static_cast<std::size_t>(n * 28 * 28));
  for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<std::uint8_t>(i % 253);
  std::vector<std::uint8_t> labels(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<std::uint8_t>((i * 7) % 10);
  data::write_idx(cg::from_vector(pixels, {n, 28, 28}), dir + "/t10k-images-idx3-ubyte");
  data::write_idx(cg::from_vector(labels, {n}), dir + "/t10k-labels-idx1-ubyte");
  ASSERT_TRUE(data::FashionMnist::available(dir, data::Split::test));
  EXPECT_FALSE(data::FashionMnist::available(dir, data::Split::train));
  const data::FashionMnist ds(dir, data::Split::test);
  EXPECT_EQ(ds.size(), n);
  EXPECT_EQ(ds.split(), data::Split::test);
  EXPECT_EQ(ds.images().dtype(), cg::DType::uint8);
  EXPECT_EQ(ds.images().shape(), (cg::Shape{n, 28, 28}));
  EXPECT_EQ(ds.labels().dtype(), cg::DType::int64);
  EXPECT_EQ(ds.image_shape(), (cg::Shape{28, 28}));
  EXPECT_EQ(ds.images().to_vector<std::uint8_t>(), pixels);
  EXPECT_EQ(ds.label(9999), (9999 * 7) % 10);
  std::vector<std::uint8_t> img(28 * 28);
  ds.read_image(3, img.data());
  EXPECT_EQ(img[0], (3 * 784) % 253);

  // A label out of range, then images of the wrong shape: clear errors naming the file.
  labels[5] = 10;
  data::write_idx(cg::from_vector(labels, {n}), dir + "/t10k-labels-idx1-ubyte");
  EXPECT_TRUE(mentions(error_of([&] { data::FashionMnist(dir, data::Split::test); }),
                       {"t10k-labels-idx1-ubyte", "label 10", "index 5"}));
  labels[5] = 0;
  data::write_idx(cg::from_vector(labels, {n}), dir + "/t10k-labels-idx1-ubyte");
  data::write_idx(cg::from_vector(pixels, {n, 784}), dir + "/t10k-images-idx3-ubyte");
  EXPECT_TRUE(mentions(error_of([&] { data::FashionMnist(dir, data::Split::test); }),
                       {"t10k-images-idx3-ubyte", "[N, 28, 28]"}));
  // Too few images for the split.
  data::write_idx(cg::from_vector(std::vector<std::uint8_t>(28 * 28 * 10), {10, 28, 28}),
                  dir + "/t10k-images-idx3-ubyte");
  data::write_idx(cg::from_vector(std::vector<std::uint8_t>(10), {10}), dir + "/t10k-labels-idx1-ubyte");
  EXPECT_TRUE(
      mentions(error_of([&] { data::FashionMnist(dir, data::Split::test); }), {"holds 10 images", "10000"}));
}

TEST(FashionMnist, RealTrainSplit) {
  if (!fashion_installed())
    GTEST_SKIP() << "Fashion-MNIST is not installed in " << data::FashionMnist::kDefaultRoot
                 << " (apt-get install dataset-fashion-mnist)";
  const data::FashionMnist ds;  // default root, train split
  EXPECT_EQ(ds.size(), 60000);
  EXPECT_EQ(ds.images().shape(), (cg::Shape{60000, 28, 28}));
  EXPECT_EQ(ds.images().dtype(), cg::DType::uint8);
  EXPECT_EQ(ds.labels().shape(), (cg::Shape{60000}));
  EXPECT_EQ(ds.labels().dtype(), cg::DType::int64);
  // Values read with Python (gzip + numpy) from the same files; torchvision gives the same order.
  const auto labels = ds.labels().to_vector<std::int64_t>();
  const std::vector<std::int64_t> first = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9, 5, 5, 7, 9, 1, 0, 6, 4};
  EXPECT_EQ(std::vector<std::int64_t>(labels.begin(), labels.begin() + 20), first);
  std::vector<std::int64_t> count(10, 0);
  for (std::int64_t l : labels) {
    ASSERT_GE(l, 0);
    ASSERT_LT(l, 10);
    ++count[static_cast<std::size_t>(l)];
  }
  EXPECT_EQ(count, std::vector<std::int64_t>(10, 6000));
  const auto pixels = ds.images().to_vector<std::uint8_t>();
  std::uint64_t total = 0, first_image = 0;
  for (std::size_t i = 0; i < pixels.size(); ++i) {
    total += pixels[i];
    if (i < 784) first_image += pixels[i];
  }
  EXPECT_EQ(total, 3431114169u);
  EXPECT_EQ(first_image, 76247u);
  const std::vector<std::uint8_t> row10 = {0,   0,   0,   0,   0,   0,   0,   0,   0,   0,
                                           0,   0,   0,   193, 228, 218, 213, 198, 180, 212,
                                           210, 211, 213, 223, 220, 243, 202, 0};
  EXPECT_EQ(std::vector<std::uint8_t>(pixels.begin() + 280, pixels.begin() + 308), row10);
}

TEST(FashionMnist, RealTestSplit) {
  if (!fashion_installed())
    GTEST_SKIP() << "Fashion-MNIST is not installed in " << data::FashionMnist::kDefaultRoot
                 << " (apt-get install dataset-fashion-mnist)";
  const data::FashionMnist ds(data::Split::test);
  EXPECT_EQ(ds.size(), 10000);
  EXPECT_EQ(ds.images().shape(), (cg::Shape{10000, 28, 28}));
  const auto labels = ds.labels().to_vector<std::int64_t>();
  const std::vector<std::int64_t> first = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5, 7, 3, 4, 1, 2, 4, 8, 0};
  EXPECT_EQ(std::vector<std::int64_t>(labels.begin(), labels.begin() + 20), first);
  std::int64_t sum = 0;
  for (std::int64_t l : labels) sum += l;
  EXPECT_EQ(sum, 45000);
  const auto pixels = ds.images().to_vector<std::uint8_t>();
  std::uint64_t total = 0;
  for (std::uint8_t p : pixels) total += p;
  EXPECT_EQ(total, 573469082u);
  // The raw IDX reader on the same file gives the same bytes.
  const cg::Tensor raw =
      data::read_idx(std::string(data::FashionMnist::kDefaultRoot) + "/t10k-images-idx3-ubyte.gz");
  EXPECT_EQ(raw.to_vector<std::uint8_t>(), pixels);
}

// ---- CUDA ----

TEST(IdxGPU, WritesDeviceTensorsAndLoadsToTheDevice) {
  CUGRAD_REQUIRE_GPU();
  const std::string dir = temp_dir();
  std::vector<float> v(1001);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) * 0.37f - 100.f;
  const cg::Tensor t = cg::from_vector(v, {7, 11, 13}, cg::Device::cuda(0));
  data::write_idx(t, dir + "/d.idx.gz", true);
  const cg::Tensor r = data::read_idx(dir + "/d.idx.gz");
  EXPECT_FALSE(r.is_cuda());
  EXPECT_EQ(r.shape(), t.shape());
  EXPECT_EQ(r.to_vector<float>(), v);
  EXPECT_EQ(r.cuda().to_vector<float>(), v);
}
