// Dev-only module: just the attention binding, so the kernel can be built with
// torch.utils.cpp_extension.load while other ops are being edited.
#include "bindings/bindings.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { pykernels::register_attention(m); }
