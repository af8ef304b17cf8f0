// Checkpoints: safetensors save/load of named tensors (F32, F64, I64, I32, U8).
#pragma once

#include <cstddef>
#include <map>
#include <string>

#include "cugrad/tensor.h"

namespace cugrad {

/// Named tensors (parameters, buffers, optimizer state), sorted by name.
using StateDict = std::map<std::string, Tensor>;

namespace io {

struct SafetensorsFile {
  StateDict tensors;                             // on the CPU
  std::map<std::string, std::string> metadata;  // the header's __metadata__ (string values)
};

/// Reads a safetensors file, validating it fully: header size (at most 100,000,000 bytes, as the reference
/// implementation) and JSON, dtypes, shapes (size = shape x dtype, with overflow checks), data offsets in
/// range, contiguous and non-overlapping, covering the data section exactly to the end of the file. Any
/// violation is a cugrad::Error naming the file and the problem.
SafetensorsFile read_safetensors(const std::string& path);
/// The same validation and result for a whole file's bytes already in memory; `name` is what
/// error messages call it.
SafetensorsFile parse_safetensors(const void* data, std::size_t size, const std::string& name = "<memory>");
/// The tensors of read_safetensors(path), moved to `device`.
StateDict load_safetensors(const std::string& path, Device device = Device::cpu());
/// Writes tensors (any device; copied to the host) and optional metadata atomically: a
/// temporary file in the same folder, then a rename.
void save_safetensors(const StateDict& tensors, const std::string& path,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace io
}  // namespace cugrad
