// Backward kernels for head dim 64, fp16.
#include "attention/flash_bwd_launch.cuh"

template cudaError_t pykernels::attention::run_flash_bwd_<64, false>(const pykernels::attention::FlashBwdParams&,
                                                                    cudaStream_t);
