"""torch.library registrations of every pykernels op, one file per op.

Each op is a ``torch.library.custom_op`` under the ``pykernels`` namespace
with a fake (meta) implementation for tracing and, where differentiable, a
registered autograd formula. The CPU and CUDA kernels both go through the
backend registry, so the CPU registration is the torch backend.
"""
from . import attention  # noqa: F401
from . import rope  # noqa: F401
