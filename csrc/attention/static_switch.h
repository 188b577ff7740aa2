// Runtime values -> template arguments, in one place.
//
//     BOOL_SWITCH(params.alibi_slopes != nullptr, kHasAlibi, [&] { launch<kHasAlibi>(); });
//
// Each switch instantiates its body once per case, so every case listed here
// is a kernel the build compiles: keep them few and deliberate.
#pragma once

#define BOOL_SWITCH(COND, CONST_NAME, ...)      \
  [&] {                                         \
    if (COND) {                                 \
      constexpr static bool CONST_NAME = true;  \
      return __VA_ARGS__();                     \
    } else {                                    \
      constexpr static bool CONST_NAME = false; \
      return __VA_ARGS__();                     \
    }                                           \
  }()

// The head dims with a tile shape in kernel_traits.cuh; others return `FALLBACK`.
#define HEADDIM_SWITCH(HEADDIM, CONST_NAME, FALLBACK, ...) \
  [&] {                                                    \
    switch (HEADDIM) {                                     \
      case 32: {                                           \
        constexpr static int CONST_NAME = 32;              \
        return __VA_ARGS__();                              \
      }                                                    \
      case 64: {                                           \
        constexpr static int CONST_NAME = 64;              \
        return __VA_ARGS__();                              \
      }                                                    \
      case 96: {                                           \
        constexpr static int CONST_NAME = 96;              \
        return __VA_ARGS__();                              \
      }                                                    \
      case 128: {                                          \
        constexpr static int CONST_NAME = 128;             \
        return __VA_ARGS__();                              \
      }                                                    \
      case 256: {                                          \
        constexpr static int CONST_NAME = 256;             \
        return __VA_ARGS__();                              \
      }                                                    \
      default:                                             \
        return FALLBACK;                                   \
    }                                                      \
  }()
