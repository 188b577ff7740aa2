// The one Python module of the extension, pykernels._C.
#include "bindings/bindings.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pykernels CUDA C++ kernels (csrc/)";
  pykernels::register_attention(m);
  pykernels::register_rope(m);
}
