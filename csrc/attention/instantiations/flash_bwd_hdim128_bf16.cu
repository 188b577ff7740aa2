// Backward kernels for head dim 128, bf16.
#include "attention/flash_bwd_launch.cuh"

template cudaError_t pykernels::attention::run_flash_bwd_<128, true>(const pykernels::attention::FlashBwdParams&,
                                                                    cudaStream_t);
