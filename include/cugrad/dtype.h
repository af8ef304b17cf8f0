// Element types. All dtype dispatch goes through dispatch_dtype() (host/tensor/dispatch.h)
// so that adding bfloat16/float16 later touches one place.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string_view>

namespace cugrad {

enum class DType : std::uint8_t { float32, float64, int64, int32, uint8 };

constexpr std::size_t element_size(DType t) {
  switch (t) {
    case DType::float32: return 4;
    case DType::float64: return 8;
    case DType::int64: return 8;
    case DType::int32: return 4;
    case DType::uint8: return 1;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::float32: return "float32";
    case DType::float64: return "float64";
    case DType::int64: return "int64";
    case DType::int32: return "int32";
    case DType::uint8: return "uint8";
  }
  return "?";
}

constexpr bool is_floating(DType t) { return t == DType::float32 || t == DType::float64; }

inline std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

/// Maps a C++ type to its DType: dtype_of<float> == DType::float32.
template <typename T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::float32; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::float64; };
template <> struct DTypeOf<std::int64_t> { static constexpr DType value = DType::int64; };
template <> struct DTypeOf<std::int32_t> { static constexpr DType value = DType::int32; };
template <> struct DTypeOf<std::uint8_t> { static constexpr DType value = DType::uint8; };
template <typename T> inline constexpr DType dtype_of = DTypeOf<T>::value;

}  // namespace cugrad
