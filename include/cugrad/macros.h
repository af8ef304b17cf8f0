// Portability macros shared by host and device code; usable from a plain C++ compiler.
#pragma once

#if defined(__CUDACC__)
#define CUGRAD_HOST_DEVICE __host__ __device__
#define CUGRAD_DEVICE __device__
#define CUGRAD_INLINE __forceinline__
#else
#define CUGRAD_HOST_DEVICE
#define CUGRAD_DEVICE
#define CUGRAD_INLINE inline
#endif
