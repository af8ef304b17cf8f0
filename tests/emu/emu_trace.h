// cugrad CUDA emulator: counts of the API calls and kernel launches a program makes, for
// profiling what one training step asks of the GPU (tests/emu/step_profile_test.cpp): launches
// per kernel, cuBLAS and cuDNN calls, copies, allocations, events, and host synchronizations.
// Counting is always on (an atomic add or a locked map update per call); reset() starts over.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace cugrad_emu::trace {

// Counts one call of the API function `what` (its name, as __func__ gives it).
void count(const char* what);
// The function at `address`, demangled: from the dynamic symbol table, or for local symbols
// (kernels in anonymous namespaces) from addr2line; the address itself when neither knows it.
std::string function_name(const void* address);
// Counts one launch of `kernel`.
void count_kernel(const void* kernel);
void reset();

using Counts = std::vector<std::pair<std::string, std::uint64_t>>;
// The API calls counted since the last reset, by name.
Counts calls();
// The kernel launches since the last reset, by kernel (demangled names, resolved through the
// dynamic symbol table or, for kernels in anonymous namespaces, addr2line).
Counts kernels();
// The count of `name` in `counts` (0 when absent).
std::uint64_t count_of(const Counts& counts, const std::string& name);

}  // namespace cugrad_emu::trace
