// Forward kernels for head dim 128, bf16 (with and without ALiBi).
#include "attention/flash_fwd_launch.cuh"

template cudaError_t pykernels::attention::run_flash_fwd_<128, true>(const pykernels::attention::FlashFwdParams&,
                                                                        cudaStream_t);
