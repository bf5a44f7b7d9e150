"""compressed-tensors ``nvfp4-pack-quantized`` (llm-compressor's format; vLLM and transformers load it).

Per quantized ``nn.Linear`` with weight ``(N, K)``:

| tensor | dtype, shape | value |
|---|---|---|
| ``weight_packed`` | uint8 ``(N, K/2)`` | E2M1 codes, element ``2i`` in the low nibble of byte ``i`` |
| ``weight_scale`` | float8_e4m3fn ``(N, K/16)`` | block scales, row-major (linear layout) |
| ``weight_global_scale`` | float32 ``(1,)`` | ``D_w = 1 / gs_w``: a **divisor** (≈ ``2688 / amax``) |
| ``input_global_scale`` | float32 ``(1,)`` | ``D_a = 1 / gs_a``: the static activation global scale, also a divisor |

The format's dequantization (compressed-tensors' ``NVFP4PackedCompressor.decompress``):
``ŵ = dtype( code · (s / D_w) )``, each step float32 (``s / D_w`` rounds once, the product
once), ``dtype`` bf16 in the package. nvfp4lab's is ``(code · s) · gs_w``. With
``D_w = fl32(1 / gs_w)`` the two agree to within a float32 ulp or two, and exactly when
``gs_w`` is a power of two (:data:`nvfp4lab.export.conventions.WEIGHT_GLOBAL_SCALES`).

``quantization_config`` (config.json): ``quant_method: compressed-tensors``, ``format:
nvfp4-pack-quantized``, one config group (weights: float, 4 bits, ``tensor_group``, group
size 16, static; input activations: the same with ``dynamic: "local"`` — block scales at run
time, the global scale static from the checkpoint), ``targets: ["Linear"]``, and ``ignore``:
every other Linear module, which stays dense (vLLM refuses a Linear matched by neither).
"""

from __future__ import annotations

import torch

from nvfp4lab.export.conventions import activation_global_scale, block_scales, check_module_tensor, packed_codes
from nvfp4lab.formats import e2m1_float_from_code, unpack_e2m1
from nvfp4lab.quantize import BLOCK, NVFP4Tensor, true_divide

FORMAT = "nvfp4-pack-quantized"
QUANT_METHOD = "compressed-tensors"
SUFFIXES = ("weight_packed", "weight_scale", "weight_global_scale", "input_global_scale")


def divisor(global_scale: torch.Tensor) -> torch.Tensor:
    """``(1,)`` float32 ``1 / gs`` (one IEEE division): the stored form of a dequant-form scale."""
    return true_divide(1.0, torch.as_tensor(global_scale, dtype=torch.float32).reshape(())).reshape(1)


def module_tensors(t: NVFP4Tensor, activation_scale: torch.Tensor | float | None) -> dict[str, torch.Tensor]:
    """The four tensors of one module (names without the module prefix) from nvfp4lab's
    quantized weight ``t`` (``(N, K)``, one global scale) and the static activation global
    scale ``gs_a`` (dequant form, ``()``); ``None`` writes a weight-only module (no
    ``input_global_scale``, for the ``nvfp4a16`` scheme)."""
    check_module_tensor(t)
    out = {
        "weight_packed": packed_codes(t),
        "weight_scale": block_scales(t),
        "weight_global_scale": divisor(t.global_scale),
    }
    if activation_scale is not None:
        out["input_global_scale"] = divisor(activation_global_scale(activation_scale))
    return out


def dequantize(tensors: dict[str, torch.Tensor], dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The weight ``(N, K)`` the format defines: ``dtype(code · fl32(s / D_w))`` (float32
    steps, then one cast; compressed-tensors decompresses to bf16). Written from the format's
    definition, pinned against the package by ``tests/test_export_conventions.py``."""
    packed, scales, d = tensors["weight_packed"], tensors["weight_scale"], tensors["weight_global_scale"]
    if packed.dtype != torch.uint8 or scales.dtype != torch.float8_e4m3fn:
        raise ValueError(f"weight_packed must be uint8 and weight_scale float8_e4m3fn; "
                         f"got {packed.dtype}, {scales.dtype}")
    n, half_k = packed.shape
    if tuple(scales.shape) != (n, 2 * half_k // BLOCK):
        raise ValueError(f"weight_scale {tuple(scales.shape)} does not fit weight_packed {tuple(packed.shape)}")
    codes = e2m1_float_from_code(unpack_e2m1(packed)).reshape(n, -1, BLOCK)
    effective = true_divide(scales.to(torch.float32), d.to(torch.float32).reshape(()))
    return (codes * effective[..., None]).reshape(n, 2 * half_k).to(dtype)


def to_nvfp4(tensors: dict[str, torch.Tensor], dtype: torch.dtype = torch.bfloat16) -> NVFP4Tensor:
    """Back to an :class:`NVFP4Tensor` (``gs = fl32(1 / D_w)``; for a power-of-two scale the
    original exactly, otherwise possibly one ulp off it)."""
    packed = tensors["weight_packed"]
    gs = true_divide(1.0, tensors["weight_global_scale"].to(torch.float32).reshape(()))
    shape = torch.Size((packed.shape[0], 2 * packed.shape[1]))
    return NVFP4Tensor(packed.contiguous().view(torch.float4_e2m1fn_x2), tensors["weight_scale"], gs, shape, dtype)


def scheme(activations: bool = True) -> dict:
    """One config group's quantization arguments (without ``targets``)."""
    weights = {"num_bits": 4, "type": "float", "symmetric": True, "group_size": 16, "strategy": "tensor_group",
               "dynamic": False, "scale_dtype": "float8_e4m3fn"}
    inputs = dict(weights, dynamic="local", observer="static_minmax") if activations else None
    return {"weights": weights, "input_activations": inputs, "output_activations": None, "format": FORMAT}


def quantization_config(ignore: list[str], activations: bool = True) -> dict:
    """config.json's ``quantization_config``: every ``Linear`` is NVFP4 except those in
    ``ignore`` (full module names). ``activations=False`` describes weight-only modules."""
    return {
        "quant_method": QUANT_METHOD,
        "format": FORMAT,
        "quantization_status": "compressed",
        "config_groups": {"group_0": dict(scheme(activations), targets=["Linear"])},
        "ignore": sorted(ignore),
        "kv_cache_scheme": None,
    }
