// Backward kernels for head dim 128, fp16.
#include "attention/flash_bwd_launch.cuh"

template cudaError_t pykernels::attention::run_flash_bwd_<128, false>(const pykernels::attention::FlashBwdParams&,
                                                                    cudaStream_t);
