// Forward kernels for head dim 256, fp16 (with and without ALiBi).
#include "attention/flash_fwd_launch.cuh"

template cudaError_t pykernels::attention::run_flash_fwd_<256, false>(const pykernels::attention::FlashFwdParams&,
                                                                        cudaStream_t);
