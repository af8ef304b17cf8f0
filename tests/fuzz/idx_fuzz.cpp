// libFuzzer target for the IDX parser core: any input must either parse into a buffer of exactly
// the size its header declares or throw cugrad::Error; never crash, overrun or allocate more
// than the input can justify (deflate expands at most 1032:1).
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "cugrad/error.h"
#include "host/data/idx_parse.h"

namespace {
std::size_t dtype_bytes(cugrad::DType t) { return cugrad::element_size(t); }
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::uint8_t> out;
  try {
    const cugrad::data::idx::Header h =
        cugrad::data::idx::parse(data, size, "fuzz", [&](const cugrad::data::idx::Header& hd) -> void* {
          const std::uint64_t bytes = hd.numel * dtype_bytes(hd.dtype);
          // The parser's bound: raw data is in the input; gzip data is at most 1032x the input.
          if (bytes > static_cast<std::uint64_t>(size) * 1032 * 4 + 64) std::abort();
          out.resize(static_cast<std::size_t>(bytes));
          return out.data();
        });
    std::uint64_t numel = 1;
    for (std::int64_t s : h.shape) numel *= static_cast<std::uint64_t>(s);
    if (numel != h.numel || out.size() != h.numel * dtype_bytes(h.dtype)) std::abort();
  } catch (const cugrad::Error&) {
    // A clear error is the expected outcome for malformed input.
  }
  return 0;
}
