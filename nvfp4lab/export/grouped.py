"""A user's grouped layer (``nvfp4lab calibrate``'s tensors) in a serving format.

The layer is ``z (T, G, N) = einsum("tgk,gkn->tgn", x, W)`` with ``W (G, K, N)``; its summed
output ``Σ_g z_g`` is one linear layer over the concatenated input ``x (T, G·K)``. Two layouts:

* ``"per_group"``: G modules ``{prefix}.{g}``, module g holding ``W_gᵀ (N, K)`` with its own
  weight global scale (nvfp4lab's grouped weights, bit for bit: ``baselines.nvfp4_weights``)
  and its own input global scale — or the shared one (``activation_scale="shared"``). This
  is how a serving stack holds per-expert / per-group GEMMs (one module per group).
* ``"single"``: one module ``{prefix}`` holding ``[W_0ᵀ | … | W_{G-1}ᵀ]`` ``(N, G·K)`` with ONE
  weight global scale (amax over all groups) and ONE input global scale: the max over groups
  (``activation_scale="shared"``; ``"per_group"`` cannot be expressed and is refused). Its
  weight scale differs from nvfp4lab's per-group weight scales, so its codes may too.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nvfp4lab import validation as v
from nvfp4lab.export import compressed_tensors, modelopt
from nvfp4lab.export.conventions import (
    FORMATS,
    WEIGHT_GLOBAL_SCALES,
    activation_global_scale,
    check_choice,
    quantize_weight,
    shared_activation_scale,
    weight_global_scale,
)
from nvfp4lab.quantize import BLOCK_RULES

LAYOUTS = ("per_group", "single")
SHARINGS = ("shared", "per_group")


def format_module(fmt: str):
    """The format's module (:mod:`.compressed_tensors` or :mod:`.modelopt`)."""
    check_choice(fmt, FORMATS, "format")
    return compressed_tensors if fmt == "compressed-tensors" else modelopt


def grouped_layer_tensors(weights: torch.Tensor, activation_scales, fmt: str, *, layout: str = "per_group",
                          activation_scale: str = "per_group", prefix: str = "wo_a",
                          weight_scale_rule: str = "amax", weight_block_rule: str = "max6") -> dict[str, torch.Tensor]:
    """The tensors of a grouped layer in ``fmt`` (``"compressed-tensors"`` or ``"modelopt"``).

    Args:
        weights: ``(G, K, N)`` float (bf16, fp16, fp32); K a multiple of 16.
        activation_scales: the static activation global scales, ``(G,)`` (or a scalar), dequant
            form (``amax / 2688``), e.g. a static recipe's calibrated scales.
        layout: ``"per_group"`` (G modules ``{prefix}.{g}``) or ``"single"`` (one module ``{prefix}``).
        activation_scale: ``"per_group"`` (module g gets scale g) or ``"shared"`` (every module
            gets the max over groups).
        weight_scale_rule: ``"amax"`` or ``"pow2"`` (:mod:`.conventions`).
        weight_block_rule: ``"max6"`` or ``"four_over_six"``.

    Returns:
        ``{"{module}.{tensor}": tensor}`` in the format's names, dtypes and shapes.
    """
    v.check_tensor(weights, "weights")
    v.check_dtype(weights, "weights", v.FLOAT_INPUT_DTYPES)
    v.check_ndim(weights, "weights", 3, "(G, K, N)")
    groups = weights.shape[0]
    v.check_block_multiple(weights.shape[1], f"weights {tuple(weights.shape)}")
    check_choice(layout, LAYOUTS, "layout")
    check_choice(activation_scale, SHARINGS, "activation scale")
    check_choice(weight_scale_rule, WEIGHT_GLOBAL_SCALES, "weight global scale rule")
    check_choice(weight_block_rule, BLOCK_RULES, "weight block rule")
    module = format_module(fmt)
    scales = torch.as_tensor(activation_scales, dtype=torch.float32).detach().cpu()
    scales = scales.expand(groups).contiguous() if scales.dim() == 0 else scales
    v.check_shape(scales, "activation_scales", (groups,))
    if layout == "single" and activation_scale == "per_group":
        raise ValueError("one module has one input global scale: a single-module export needs activation_scale "
                         "'shared' (the max over groups, as serving stacks run one scale per GEMM); per-group "
                         "scales need layout 'per_group' (one module per group)")
    shared = shared_activation_scale(scales)
    out: dict[str, torch.Tensor] = {}
    if layout == "single":
        w = weights.transpose(1, 2).permute(1, 0, 2).reshape(weights.shape[2], -1)  # (N, G·K): [W_0ᵀ | W_1ᵀ | …]
        parts = [(prefix, w, shared)]
    else:
        parts = [(f"{prefix}.{g}", weights[g].T, shared if activation_scale == "shared" else scales[g])
                 for g in range(groups)]
    for name, w, act in parts:
        gs = weight_global_scale(w, rule=weight_scale_rule, block_rule=weight_block_rule)
        tensors = module.module_tensors(quantize_weight(w, gs, block_rule=weight_block_rule),
                                        activation_global_scale(act))
        out.update({f"{name}.{key}": value for key, value in tensors.items()})
    return out


def module_names(groups: int, layout: str, prefix: str = "wo_a") -> list[str]:
    """The module names :func:`grouped_layer_tensors` writes."""
    return [prefix] if layout == "single" else [f"{prefix}.{g}" for g in range(groups)]


def export_grouped_layer(out_dir: str | Path, weights: torch.Tensor, activation_scales, fmt: str, **options) -> Path:
    """Write :func:`grouped_layer_tensors` to ``out_dir/layer.safetensors`` and the format's
    quantization config for those modules to ``out_dir/quantization_config.json``
    (compressed-tensors: the config group with the modules as targets; ModelOpt: the
    ``hf_quant_config.json`` content). ``out_dir`` must not exist or be empty. Returns the folder."""
    import json

    from nvfp4lab import __version__
    from nvfp4lab.export.writer import checked_out_dir, safetensors_bytes
    from nvfp4lab.output_folder import OutputFolder

    path = checked_out_dir(out_dir)
    tensors = grouped_layer_tensors(weights, activation_scales, fmt, **options)  # all checks before writing
    names = module_names(weights.shape[0], options.get("layout", "per_group"), options.get("prefix", "wo_a"))
    if fmt == "compressed-tensors":
        config = compressed_tensors.quantization_config(ignore=[])
        config["config_groups"]["group_0"]["targets"] = names
    else:
        config = modelopt.hf_quant_config([], __version__)
    with OutputFolder(path) as folder:
        folder.write("layer.safetensors", safetensors_bytes(tensors))
        folder.write("quantization_config.json", json.dumps(config, indent=1))
    return path
