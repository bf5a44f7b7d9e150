"""Export nvfp4lab's NVFP4 quantization in the checkpoint formats serving stacks load.

* :mod:`.conventions`: the weight's codes, block scales and global scale as nvfp4lab makes
  them (:func:`~.conventions.quantize_weight`, :func:`~.conventions.weight_global_scale`),
  one activation scale per module (:func:`~.conventions.shared_activation_scale`);
* :mod:`.compressed_tensors`: ``nvfp4-pack-quantized`` (global scales stored as divisors);
* :mod:`.modelopt`: ModelOpt's HF export (global scales stored as multipliers);
* :mod:`.recipes`: which of the lab's recipes can travel;
* :mod:`.grouped`: a user's grouped layer ``W (G, K, N)``, one module per group or one for all;
* :mod:`.hf_model`: :func:`export_decoder`, a GGUF decoder LM as a Hugging Face folder with NVFP4 ``o_proj``;
* :mod:`.command`: ``nvfp4lab export`` (calibrates on the packaged corpus, then exports).
"""

from nvfp4lab.export.conventions import FORMATS, quantize_weight, shared_activation_scale, weight_global_scale
from nvfp4lab.export.grouped import export_grouped_layer, grouped_layer_tensors
from nvfp4lab.export.hf_model import export_decoder
from nvfp4lab.export.recipes import servable_recipe

__all__ = [
    "FORMATS",
    "export_decoder",
    "export_grouped_layer",
    "grouped_layer_tensors",
    "quantize_weight",
    "servable_recipe",
    "shared_activation_scale",
    "weight_global_scale",
]
