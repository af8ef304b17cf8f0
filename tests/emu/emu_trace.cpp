// cugrad CUDA emulator: API call and kernel launch counts (emu_trace.h).
#include "tests/emu/emu_trace.h"

#include <cxxabi.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>

namespace cugrad_emu::trace {
namespace {

struct Registry {
  std::mutex mu;
  std::map<std::string, std::uint64_t> calls;
  std::map<const void*, std::uint64_t> kernels;
};

Registry& reg() {
  static Registry r;
  return r;
}

}  // namespace

std::string function_name(const void* address) {
  Dl_info info{};
  if (dladdr(address, &info) != 0) {
    if (info.dli_sname != nullptr) {
      int status = 0;
      char* d = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
      std::string name = status == 0 && d != nullptr ? d : info.dli_sname;
      std::free(d);
      return name;
    }
    if (info.dli_fname != nullptr && info.dli_fname[0] != '\0') {
      const auto offset = reinterpret_cast<std::uintptr_t>(address) - reinterpret_cast<std::uintptr_t>(info.dli_fbase);
      const std::string command = "addr2line -f -C -e '" + std::string(info.dli_fname) + "' 0x" + [&] {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%zx", static_cast<std::size_t>(offset));
        return std::string(buf);
      }() + " 2>/dev/null";
      if (FILE* pipe = popen(command.c_str(), "r")) {
        char line[4096];
        std::string name;
        if (std::fgets(line, sizeof line, pipe) != nullptr) name = line;
        pclose(pipe);
        while (!name.empty() && (name.back() == '\n' || name.back() == '\r')) name.pop_back();
        if (!name.empty() && name != "??") return name;
      }
    }
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", address);
  return buf;
}

void count(const char* what) {
  Registry& r = reg();
  std::lock_guard lock(r.mu);
  ++r.calls[what];
}

void count_kernel(const void* kernel) {
  Registry& r = reg();
  std::lock_guard lock(r.mu);
  ++r.kernels[kernel];
}

void reset() {
  Registry& r = reg();
  std::lock_guard lock(r.mu);
  r.calls.clear();
  r.kernels.clear();
}

Counts calls() {
  Registry& r = reg();
  std::lock_guard lock(r.mu);
  return Counts(r.calls.begin(), r.calls.end());
}

Counts kernels() {
  std::map<const void*, std::uint64_t> copy;
  {
    Registry& r = reg();
    std::lock_guard lock(r.mu);
    copy = r.kernels;
  }
  std::map<std::string, std::uint64_t> named;
  for (const auto& [k, n] : copy) named[function_name(k)] += n;
  return Counts(named.begin(), named.end());
}

std::uint64_t count_of(const Counts& counts, const std::string& name) {
  for (const auto& [n, c] : counts)
    if (n == name) return c;
  return 0;
}

}  // namespace cugrad_emu::trace
