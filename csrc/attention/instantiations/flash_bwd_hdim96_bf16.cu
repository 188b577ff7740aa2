// Backward kernels for head dim 96, bf16.
#include "attention/flash_bwd_launch.cuh"

template cudaError_t pykernels::attention::run_flash_bwd_<96, true>(const pykernels::attention::FlashBwdParams&,
                                                                    cudaStream_t);
