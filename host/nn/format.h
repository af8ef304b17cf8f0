// Formatting helpers for module printouts (extra_repr) in PyTorch's style.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace cugrad::nn {

/// Python's repr of a float: the shortest digits that round-trip, ".0" on integral values,
/// two-digit exponents ("1e-05"), as PyTorch prints eps and momentum.
inline std::string py_float(double v) {
  if (v != v) return "nan";
  if (v == v * 2 && v != 0) return v > 0 ? "inf" : "-inf";
  char buf[64];
  int digits = 17;
  for (int p = 1; p <= 17; ++p) {
    std::snprintf(buf, sizeof(buf), "%.*e", p - 1, v);
    if (std::strtod(buf, nullptr) == v) {
      digits = p;
      break;
    }
  }
  std::snprintf(buf, sizeof(buf), "%.*e", digits - 1, v);
  const int exponent = std::atoi(std::strchr(buf, 'e') + 1);
  if (exponent < -4 || exponent >= 16) return buf;  // scientific, as Python's repr
  const int decimals = digits - 1 - exponent > 0 ? digits - 1 - exponent : 0;
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  std::string s = buf;
  if (s.find('.') == std::string::npos) s += ".0";
  return s;
}

/// Python's repr of a bool.
inline const char* py_bool(bool b) { return b ? "True" : "False"; }

}  // namespace cugrad::nn
