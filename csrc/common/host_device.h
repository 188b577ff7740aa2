// PK_HOST_DEVICE: for small constexpr helpers that both sides call.
//
// A header like attention/flash_bwd.h is read by g++ (the torch bindings),
// nvcc (the kernels and their host launchers) and NVRTC (the CuPy backend).
// NVRTC treats an unannotated function as host code and refuses it, while
// g++ does not know __host__ __device__; this macro gives each what it needs.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define PK_HOST_DEVICE __host__ __device__
#else
#define PK_HOST_DEVICE
#endif
