"""Transforms that make a grouped layer ``z = einsum("tgk,gkn->tgn", x, W)`` easier to
quantize to NVFP4, each exact in real numbers before quantization or a weight-only
quantizer:

* :mod:`.hadamard`: block-diagonal Hadamard rotations ``x R``, ``Rᵀ W`` (fast butterfly
  and reference matrix), and their folds into a decoder's value and output projections;
* :mod:`.smoothing`: SmoothQuant per-channel scales ``x diag(s)⁻¹``, ``diag(s) W`` and the
  α search on the W4A4 output error;
* :mod:`.weights`: weight recipes: global-scale MSE search, per-block scale candidates
  (four-over-six on weights), 16×16 2-D scales; :class:`~.weights.QuantizedWeights`;
* :mod:`.gptq`: GPTQ with NVFP4 block scales (reference and blocked).
"""

from nvfp4lab.transforms.gptq import gptq_quantize, gptq_reference, hessian, output_error, rtn_weights
from nvfp4lab.transforms.hadamard import (
    block_hadamard_matrix,
    fast_hadamard_transform,
    fold_into_output_projection,
    fold_into_value_projection,
    fold_into_weights,
    hadamard_matrix,
    rotate_activations,
)
from nvfp4lab.transforms.smoothing import (
    AlphaSearch,
    fold_scales_into_output_projection,
    fold_scales_into_value_projection,
    search_alpha,
    smooth,
    smoothing_scales,
    tie_shared_kv_heads,
)
from nvfp4lab.transforms.weights import (
    GlobalScaleSearch,
    QuantizedWeights,
    four_over_six_weights,
    mse_global_scale,
    quantize_weights,
    quantize_weights_2d,
)

__all__ = [
    "AlphaSearch",
    "GlobalScaleSearch",
    "QuantizedWeights",
    "block_hadamard_matrix",
    "fast_hadamard_transform",
    "fold_into_output_projection",
    "fold_scales_into_output_projection",
    "fold_scales_into_value_projection",
    "fold_into_value_projection",
    "fold_into_weights",
    "four_over_six_weights",
    "gptq_quantize",
    "gptq_reference",
    "hadamard_matrix",
    "hessian",
    "mse_global_scale",
    "output_error",
    "quantize_weights",
    "quantize_weights_2d",
    "rotate_activations",
    "rtn_weights",
    "search_alpha",
    "smooth",
    "smoothing_scales",
    "tie_shared_kv_heads",
]
