// libFuzzer target for the safetensors validator: any input must either yield a layout whose
// entries lie inside the data section, are contiguous and match their shape x dtype, or throw
// cugrad::Error; never crash, overrun or allocate from a lying header.
#include <cstdint>
#include <cstdlib>

#include "cugrad/error.h"
#include "host/io/safetensors_parse.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto layout = cugrad::io::detail::parse_safetensors_layout(data, size, "fuzz");
    if (layout.data_offset + layout.data_size != size) std::abort();
    std::uint64_t pos = 0;
    for (const auto& e : layout.entries) {
      if (e.begin != pos || e.end < e.begin || e.end > layout.data_size) std::abort();
      std::uint64_t bytes = cugrad::element_size(e.dtype);
      for (std::int64_t s : e.shape) bytes *= static_cast<std::uint64_t>(s);
      if (bytes != e.end - e.begin) std::abort();
      pos = e.end;
    }
    if (pos != layout.data_size) std::abort();
  } catch (const cugrad::Error&) {
    // A clear error is the expected outcome for malformed input.
  }
  return 0;
}
