// Torch bindings of the kernels: each op's file registers its functions here.
// The kernels themselves (csrc/attention, csrc/rope) never include torch, so
// CMake can build them standalone.
#pragma once
#include <torch/extension.h>

namespace pykernels {
void register_attention(pybind11::module_& m);  // csrc/bindings/attention.cpp
void register_rope(pybind11::module_& m);       // csrc/bindings/rope.cpp
}  // namespace pykernels
