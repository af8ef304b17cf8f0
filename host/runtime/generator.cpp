// Global generator state (seed, offset), guarded by a mutex.
#include "host/runtime/generator.h"

#include <mutex>

namespace cugrad {

namespace {
std::mutex g_mutex;
GeneratorState g_state{0x2545F4914F6CDD1Dull, 0};
}  // namespace

void manual_seed(std::uint64_t seed) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_state = GeneratorState{seed, 0};
}

GeneratorState get_rng_state() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_state;
}

void set_rng_state(const GeneratorState& state) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_state = state;
}

namespace runtime {
GeneratorState reserve_random(std::uint64_t blocks) {
  std::lock_guard<std::mutex> lock(g_mutex);
  GeneratorState s = g_state;
  g_state.offset += blocks;
  return s;
}
}  // namespace runtime
}  // namespace cugrad
