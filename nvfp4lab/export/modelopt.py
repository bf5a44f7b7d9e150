"""NVIDIA ModelOpt's Hugging Face export, NVFP4 (TensorRT-LLM, vLLM ``modelopt_fp4``, SGLang load it).

Per quantized ``nn.Linear`` with weight ``(N, K)``:

| tensor | dtype, shape | value |
|---|---|---|
| ``weight`` | uint8 ``(N, K/2)`` | E2M1 codes, element ``2i`` in the low nibble of byte ``i`` |
| ``weight_scale`` | float8_e4m3fn ``(N, K/16)`` | block scales, row-major (linear layout) |
| ``weight_scale_2`` | float32 ``()`` | ``gs_w``: a **multiplier**, ``amax / 2688`` — nvfp4lab's global scale as it is |
| ``input_scale`` | float32 ``()`` | ``gs_a``: the static activation global scale, ``act amax / 2688``, a multiplier |

The format's dequantization (``NVFP4QTensor.dequantize``): ``ŵ = dtype(code · fl32(s · gs_w))``;
nvfp4lab's is ``(code · s) · gs_w``: equal to within a float32 ulp, exactly for a power-of-two
``gs_w``. Four-over-six weights need nothing new: their ``gs_w = amax / 1536`` (= ModelOpt's
own ``amax / (6·256)``) and their block scales are ordinary E4M3 bytes.

``hf_quant_config.json``: ``{"producer": {"name", "version"}, "quantization": {"quant_algo":
"NVFP4", "kv_cache_quant_algo": null, "group_size": 16, "exclude_modules": [...]}}``; newer
exports also put :func:`config_json_quantization_config` (``quant_method: modelopt``) into
config.json. Loaders key on ``quant_algo``; the producer names who wrote the file (nvfp4lab).
"""

from __future__ import annotations

import torch

from nvfp4lab.export.conventions import activation_global_scale, block_scales, check_module_tensor, packed_codes
from nvfp4lab.formats import e2m1_float_from_code, unpack_e2m1
from nvfp4lab.quantize import BLOCK, NVFP4Tensor

QUANT_ALGO = "NVFP4"
QUANT_METHOD = "modelopt"
SUFFIXES = ("weight", "weight_scale", "weight_scale_2", "input_scale")


def module_tensors(t: NVFP4Tensor, activation_scale: torch.Tensor | float | None) -> dict[str, torch.Tensor]:
    """The four tensors of one module (names without the module prefix) from nvfp4lab's
    quantized weight ``t`` (``(N, K)``, one global scale) and the static activation global
    scale ``gs_a`` (dequant form); ``None`` leaves out ``input_scale`` (weight-only)."""
    check_module_tensor(t)
    out = {
        "weight": packed_codes(t),
        "weight_scale": block_scales(t),
        "weight_scale_2": t.global_scale.to(torch.float32).reshape(()).clone(),
    }
    if activation_scale is not None:
        out["input_scale"] = activation_global_scale(activation_scale).clone()
    return out


def dequantize(tensors: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The weight ``(N, K)`` the format defines: ``dtype(code · fl32(s · gs_w))``. Written from
    the format's definition, pinned against ModelOpt's ``NVFP4QTensor`` by the tests."""
    packed, scales = tensors["weight"], tensors["weight_scale"]
    if packed.dtype != torch.uint8 or scales.dtype != torch.float8_e4m3fn:
        raise ValueError(f"weight must be uint8 and weight_scale float8_e4m3fn; got {packed.dtype}, {scales.dtype}")
    n, half_k = packed.shape
    if tuple(scales.shape) != (n, 2 * half_k // BLOCK):
        raise ValueError(f"weight_scale {tuple(scales.shape)} does not fit weight {tuple(packed.shape)}")
    codes = e2m1_float_from_code(unpack_e2m1(packed)).reshape(n, -1, BLOCK)
    effective = scales.to(torch.float32) * tensors["weight_scale_2"].to(torch.float32).reshape(())
    return (codes * effective[..., None]).reshape(n, 2 * half_k).to(dtype)


def to_nvfp4(tensors: dict[str, torch.Tensor], dtype: torch.dtype = torch.bfloat16) -> NVFP4Tensor:
    """Back to an :class:`NVFP4Tensor`: every byte and the global scale exactly as exported."""
    packed = tensors["weight"]
    shape = torch.Size((packed.shape[0], 2 * packed.shape[1]))
    return NVFP4Tensor(packed.contiguous().view(torch.float4_e2m1fn_x2), tensors["weight_scale"],
                       tensors["weight_scale_2"].to(torch.float32).reshape(()), shape, dtype)


def hf_quant_config(exclude_modules: list[str], producer_version: str, activations: bool = True) -> dict:
    """``hf_quant_config.json``: NVFP4 (``W4A16_NVFP4`` when ``activations`` is False) with
    blocks of 16; ``exclude_modules`` are the modules left dense (full names)."""
    return {
        "producer": {"name": "nvfp4lab", "version": producer_version},
        "quantization": {
            "quant_algo": QUANT_ALGO if activations else "W4A16_NVFP4",
            "kv_cache_quant_algo": None,
            "group_size": BLOCK,
            "exclude_modules": sorted(exclude_modules),
        },
    }


def config_json_quantization_config(hf_config: dict) -> dict:
    """config.json's ``quantization_config`` for an ``hf_quant_config`` dict, in the form
    ModelOpt writes it (``quant_method: modelopt``, compressed-tensors-style config group)."""
    details = hf_config["quantization"]
    group_size = details["group_size"]
    group = {"weights": {"dynamic": False, "num_bits": 4, "type": "float", "group_size": group_size},
             "targets": ["Linear"]}
    if details["quant_algo"] == QUANT_ALGO:
        group = {"input_activations": {"dynamic": False, "num_bits": 4, "type": "float", "group_size": group_size},
                 **group}
    return {
        "config_groups": {"group_0": group},
        "ignore": list(details["exclude_modules"]),
        "quant_algo": details["quant_algo"],
        "producer": dict(hf_config["producer"]),
        "quant_method": QUANT_METHOD,
    }
