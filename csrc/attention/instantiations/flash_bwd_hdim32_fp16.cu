// Backward kernels for head dim 32, fp16.
#include "attention/flash_bwd_launch.cuh"

template cudaError_t pykernels::attention::run_flash_bwd_<32, false>(const pykernels::attention::FlashBwdParams&,
                                                                    cudaStream_t);
