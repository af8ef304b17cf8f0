// safetensors: round trips, PyTorch-written golden files, and malformed files (each a clear
// cugrad::Error, never a crash).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "cugrad/cugrad.h"
#include "tests/support/parity.h"

namespace cg = cugrad;

namespace {
std::string tmp_path(const std::string& name) { return std::string(CUGRAD_TEST_TMP_DIR) + "/" + name; }

// Writes a file made of a header length, a header and `data_bytes` zero bytes.
std::string write_raw(const std::string& name, const std::string& header, std::size_t data_bytes,
                      std::uint64_t header_len_override = 0) {
  const std::string path = tmp_path(name);
  std::ofstream out(path, std::ios::binary);
  std::uint64_t n = header_len_override ? header_len_override : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
  out << header;
  out << std::string(data_bytes, '\0');
  return path;
}

std::string error_of(const std::string& path) {
  try {
    cg::io::read_safetensors(path);
  } catch (const cg::Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Safetensors, RoundTripsEveryDtype) {
  cg::StateDict sd;
  sd["f32"] = cg::randn({3, 4});
  sd["f64"] = cg::randn({2}, cg::Device::cpu(), cg::DType::float64);
  sd["i64"] = cg::randint(-5, 5, {7});
  sd["i32"] = cg::randint(-5, 5, {1, 2, 3}, cg::Device::cpu(), cg::DType::int32);
  sd["u8"] = cg::randint(0, 256, {5}, cg::Device::cpu(), cg::DType::uint8);
  sd["scalar"] = cg::full({}, 2.5);
  sd["empty"] = cg::zeros({0, 3});
  const auto path = tmp_path("roundtrip.safetensors");
  cg::io::save_safetensors(sd, path, {{"format", "pt"}});
  const auto file = cg::io::read_safetensors(path);
  EXPECT_EQ(file.metadata.at("format"), "pt");
  ASSERT_EQ(file.tensors.size(), sd.size());
  for (const auto& [name, t] : sd) {
    const auto& r = file.tensors.at(name);
    EXPECT_EQ(r.dtype(), t.dtype()) << name;
    EXPECT_TRUE(cg::testing::all_equal(r, t)) << name;
  }
  // The temporary file is gone after the rename.
  EXPECT_FALSE(std::ifstream(path + ".tmp").good());
}

TEST(Safetensors, ReadsPyTorchGoldenFiles) {
  const auto f = cg::io::read_safetensors(std::string(CUGRAD_GOLDEN_DIR) + "/bn2d.safetensors");
  EXPECT_EQ(f.metadata.at("momentum"), "0.1");
  EXPECT_EQ(f.tensors.at("x_0").shape(), (cg::Shape{4, 3, 5, 7}));
  EXPECT_EQ(f.tensors.at("x_0").dtype(), cg::DType::float32);
  EXPECT_EQ(f.tensors.at("y_0").dtype(), cg::DType::float64);
  const auto ce = cg::io::read_safetensors(std::string(CUGRAD_GOLDEN_DIR) + "/cross_entropy.safetensors");
  EXPECT_EQ(ce.tensors.at("target").dtype(), cg::DType::int64);
  EXPECT_EQ(ce.tensors.at("loss_mean").dim(), 0);
}

TEST(Safetensors, MalformedFilesAreClearErrors) {
  EXPECT_NE(error_of(tmp_path("does-not-exist.safetensors")).find("cannot open"), std::string::npos);
  {
    const std::string p = tmp_path("short.safetensors");
    std::ofstream(p, std::ios::binary) << "abc";
    EXPECT_NE(error_of(p).find("too short"), std::string::npos);
  }
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_EQ(error_of(write_raw("ok.safetensors", ok, 8)), "");
  EXPECT_NE(error_of(write_raw("truncated.safetensors", ok, 4)).find("out of range"), std::string::npos);
  EXPECT_NE(error_of(write_raw("trailing.safetensors", ok, 12)).find("cover"), std::string::npos);
  EXPECT_NE(error_of(write_raw("bomb.safetensors", ok, 8, 1ull << 40)).find("limit"), std::string::npos);
  // The limit is the reference implementation's, 100,000,000 bytes: one more is refused before
  // anything is read (the file holds only the 8-byte length and a short header).
  EXPECT_NE(
      error_of(write_raw("limit.safetensors", ok, 8, 100'000'001)).find("exceeds the 100000000 byte limit"),
      std::string::npos);
  {
    const std::string dir = tmp_path("a_folder.safetensors");
    std::filesystem::create_directories(dir);
    const std::string m = error_of(dir);
    EXPECT_NE(m.find("a_folder.safetensors"), std::string::npos) << m;
    EXPECT_NE(m.find("not a regular file"), std::string::npos) << m;
  }
  EXPECT_NE(error_of(write_raw("pastend.safetensors", ok, 8, 1000)).find("past the end"), std::string::npos);
  EXPECT_NE(error_of(write_raw("json.safetensors", "{not json", 0)).find("JSON"), std::string::npos);
  EXPECT_NE(error_of(write_raw("array.safetensors", "[1,2]", 0)).find("object"), std::string::npos);
  EXPECT_NE(error_of(write_raw("dtype.safetensors", R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})", 4))
                .find("unsupported dtype"),
            std::string::npos);
  EXPECT_NE(error_of(write_raw("size.safetensors", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8))
                .find("needs 12"),
            std::string::npos);
  EXPECT_NE(error_of(write_raw("huge.safetensors",
                               R"({"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8))
                .find("overflow"),
            std::string::npos);
  EXPECT_NE(error_of(write_raw("neg.safetensors", R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4))
                .find("non-negative"),
            std::string::npos);
  const std::string overlap =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  EXPECT_NE(error_of(write_raw("overlap.safetensors", overlap, 12)).find("overlap"), std::string::npos);
  const std::string gap =
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  EXPECT_NE(error_of(write_raw("gap.safetensors", gap, 12)).find("gap"), std::string::npos);
  EXPECT_NE(error_of(write_raw("missing.safetensors", R"({"a":{"dtype":"F32","shape":[1]}})", 4)).find("data_offsets"),
            std::string::npos);
  EXPECT_NE(error_of(write_raw("meta.safetensors", R"({"__metadata__":{"k":1}})", 0)).find("not a string"),
            std::string::npos);
}

TEST(Safetensors, ParsesBytesInMemoryLikeAFile) {
  cg::StateDict sd;
  sd["w"] = cg::from_vector(std::vector<float>{1.5f, -2.0f, 3.25f}, {3});
  sd["step"] = cg::from_vector(std::vector<std::int64_t>{7}, {});
  const std::string path = tmp_path("memory.safetensors");
  cg::io::save_safetensors(sd, path, {{"k", "v"}});
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const cg::io::SafetensorsFile f = cg::io::parse_safetensors(bytes.data(), bytes.size());
  EXPECT_EQ(f.metadata.at("k"), "v");
  EXPECT_TRUE(cg::testing::all_equal(f.tensors.at("w"), sd["w"]));
  EXPECT_EQ(f.tensors.at("step").item<std::int64_t>(), 7);
  // A malformed buffer is the same clear error, naming the source given.
  try {
    cg::io::parse_safetensors(bytes.data(), bytes.size() - 1, "checkpoint bytes");
    ADD_FAILURE() << "a truncated buffer parsed";
  } catch (const cg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint bytes"), std::string::npos) << e.what();
  }
  try {
    cg::io::parse_safetensors(bytes.data(), 5);
    ADD_FAILURE() << "a 5-byte buffer parsed";
  } catch (const cg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("<memory>"), std::string::npos) << e.what();
  }
}
