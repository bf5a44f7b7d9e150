"""CuTeDSL kernels for Hopper (sm_90a): the GPU path of nvfp4lab.

* ``quantize_activations``: ``o (T, H, D)`` bf16 -> the grouped GEMM's A operand, all
  groups in one launch (``amax`` computes dynamic global scales first);
* ``grouped_gemm``: the NVFP4 grouped GEMM, FP4 decoded in the kernel, bf16 MMA.

Numerics are defined by the CPU reference (docs/numerics.md); these kernels reproduce
its bytes (quantizer) and its values up to fp32 summation order (GEMM). Importing this
package needs ``nvidia-cutlass-dsl``; compiling needs no GPU (``CUTE_DSL_ARCH=sm_90a``).
"""

from __future__ import annotations

import functools
import os
import tempfile

import torch

# CuTeDSL writes kept artifacts (``KeepPTX``) into ``CUTE_DSL_DUMP_DIR``, read once when
# it is imported; by default that is the current directory, i.e. the repository. Point it
# at a temporary folder before anything imports ``cutlass``.
DUMP_DIR = os.environ.setdefault("CUTE_DSL_DUMP_DIR", os.path.join(tempfile.gettempdir(), "nvfp4lab-cutedsl"))
os.makedirs(DUMP_DIR, exist_ok=True)  # the compiler writes no file into a missing folder


@functools.cache
def cutedsl_importable() -> bool:
    try:
        import cutlass.cute  # noqa: F401
    except Exception:  # not installed, or its native libraries failed to load
        return False
    return True


def gpu_supported(device: torch.device) -> bool:
    """True when ``device`` is a CUDA GPU of compute capability 9.0 or newer and
    CuTeDSL imports: the kernels can run there."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= (9, 0) and cutedsl_importable()
