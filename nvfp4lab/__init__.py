"""nvfp4lab: exact NVFP4 numerics for grouped linear layers (DeepSeek V4's ``wo_a``).

Public API:
    quantize_nvfp4, dequantize_nvfp4, NVFP4Tensor   the reference quantizer
    layouts                                          swizzled scales, grouped operands
    gemm.run_nvfp4_grouped_gemm                      the grouped GEMM (reference / GPU)
    Nvfp4GroupedLinear                               the ``wo_a`` layer
    metrics                                          SQNR, relative error, counts
"""

from nvfp4lab import formats, layouts, metrics
from nvfp4lab.gemm import run_nvfp4_grouped_gemm
from nvfp4lab.linear import Nvfp4GroupedLinear
from nvfp4lab.quantize import (
    NVFP4Tensor,
    dequantize_nvfp4,
    dynamic_global_scale,
    global_scale_from_amax,
    quantize_nvfp4,
)

__all__ = [
    "NVFP4Tensor",
    "Nvfp4GroupedLinear",
    "dequantize_nvfp4",
    "dynamic_global_scale",
    "formats",
    "global_scale_from_amax",
    "layouts",
    "metrics",
    "quantize_nvfp4",
    "run_nvfp4_grouped_gemm",
]
__version__ = "0.1.0"
