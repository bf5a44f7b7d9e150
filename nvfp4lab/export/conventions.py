"""What both serving formats share: one NVFP4 ``nn.Linear`` weight as nvfp4lab quantizes it.

A serving stack's NVFP4 linear layer ``y = x Wᵀ`` holds, for ``W (N, K)`` (``nn.Linear``
layout: N outputs, K inputs, blocks of 16 along K):

* the E2M1 codes, ``(N, K/2)`` uint8, element ``2i`` in the low nibble of byte ``i`` —
  nvfp4lab's packing (:func:`nvfp4lab.formats.pack_e2m1`), unchanged;
* the E4M3 block scales, ``(N, K/16)`` float8_e4m3fn, row-major (linear, not the
  swizzled 128×4 layout of :mod:`nvfp4lab.layouts`) — nvfp4lab's ``NVFP4Tensor.scales``;
* ONE float32 weight global scale and ONE float32 activation (input) global scale per
  module. nvfp4lab's form is the dequant form ``gs = amax / 2688`` (a multiplier); the
  formats store it as a multiplier (ModelOpt) or as its reciprocal, a divisor
  (compressed-tensors): see those modules.

The codes and scale bytes are produced by :func:`nvfp4lab.quantize.quantize_nvfp4` (this
package never re-implements quantization), so the exported bytes are nvfp4lab's.

Weight global scale rules (:data:`WEIGHT_GLOBAL_SCALES`):

* ``"amax"``: ``max(amax(|W|) / 2688, 2^-126)`` — nvfp4lab's dynamic weight scale, the one
  every recipe in the lab was evaluated with (``amax / 1536`` for four-over-six blocks);
* ``"pow2"``: that value rounded **up** to a power of two, ``2^ceil(log2(gs))``. The block
  scales then top out in (224, 448] instead of at 448 (E4M3 keeps its relative precision;
  only the bottom binade of block-scale range is given up) and every product
  ``code · scale · gs`` is exact in float32 *and* bf16, so every library's dequantization
  order gives nvfp4lab's bits (with ``"amax"`` the libraries' order ``code · (scale · gs)``
  can differ from nvfp4lab's ``(code · scale) · gs`` by one float32 ulp).
"""

from __future__ import annotations

import torch

from nvfp4lab import validation as v
from nvfp4lab.formats import GLOBAL_SCALE_DIVISOR
from nvfp4lab.quantize import (
    BLOCK_RULES,
    FOUR_OVER_SIX_DIVISOR,
    MIN_GLOBAL_SCALE,
    NVFP4Tensor,
    dynamic_global_scale,
    quantize_nvfp4,
)

WEIGHT_GLOBAL_SCALES = ("amax", "pow2")
FORMATS = ("compressed-tensors", "modelopt")


def check_weight(w: torch.Tensor, name: str = "weight") -> torch.Tensor:
    """``w`` must be a 2-D float ``(N, K)`` tensor (``nn.Linear`` layout) with K a multiple of 16."""
    v.check_tensor(w, name)
    v.check_dtype(w, name, v.FLOAT_INPUT_DTYPES)
    v.check_ndim(w, name, 2, "(N outputs, K inputs), nn.Linear layout")
    v.check_block_multiple(w.shape[1], f"{name} {tuple(w.shape)}")
    return w


def check_choice(value: str, choices: tuple[str, ...], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def power_of_two_at_least(gs: torch.Tensor) -> torch.Tensor:
    """The smallest power of two ``>= gs`` (float32, any shape; ``gs > 0`` and finite)."""
    mantissa, exponent = torch.frexp(gs.to(torch.float32))  # gs = mantissa · 2^exponent, mantissa in [0.5, 1)
    exponent = torch.where(mantissa == 0.5, exponent - 1, exponent)
    return torch.ldexp(torch.ones_like(mantissa), exponent).to(torch.float32)


def weight_global_scale(w: torch.Tensor, *, rule: str = "amax", block_rule: str = "max6") -> torch.Tensor:
    """The ``()`` float32 weight global scale (dequant form) of ``w (N, K)``.

    ``rule`` ``"amax"``: ``max(amax / 2688, 2^-126)`` (``amax / 1536`` when ``block_rule``
    is ``"four_over_six"``: block scales then stay ≤ 384 whichever of 6 or 4 a block keeps);
    ``"pow2"``: the same rounded up to a power of two (see the module docstring)."""
    check_weight(w)
    check_choice(rule, WEIGHT_GLOBAL_SCALES, "weight global scale rule")
    check_choice(block_rule, BLOCK_RULES, "weight block rule")
    divisor = FOUR_OVER_SIX_DIVISOR if block_rule == "four_over_six" else GLOBAL_SCALE_DIVISOR
    gs = dynamic_global_scale(w, divisor=divisor)
    return power_of_two_at_least(gs).clamp(min=MIN_GLOBAL_SCALE) if rule == "pow2" else gs


def quantize_weight(w: torch.Tensor, global_scale: torch.Tensor, *, block_rule: str = "max6") -> NVFP4Tensor:
    """nvfp4lab's NVFP4 quantization of ``w (N, K)`` with the given ``()`` global scale:
    :func:`nvfp4lab.quantize.quantize_nvfp4` (``block_rule`` ``"max6"`` or ``"four_over_six"``)."""
    check_weight(w)
    global_scale = torch.as_tensor(global_scale, dtype=torch.float32)
    if global_scale.numel() != 1:
        raise ValueError(f"one module has one weight global scale; got shape {tuple(global_scale.shape)}")
    return quantize_nvfp4(w, global_scale.reshape(()), block_rule=block_rule)


def check_module_tensor(t: NVFP4Tensor) -> None:
    """``t`` must be one ``(N, K)`` weight with one global scale (what one module stores)."""
    if len(t.shape) != 2 or t.global_scale.dim() != 0:
        raise ValueError(f"a module stores one (N, K) weight with one global scale; got shape {tuple(t.shape)} "
                         f"and global scale of shape {tuple(t.global_scale.shape)}")


def packed_codes(t: NVFP4Tensor) -> torch.Tensor:
    """``(N, K/2)`` uint8: the E2M1 codes, element ``2i`` in the low nibble of byte ``i``."""
    check_module_tensor(t)
    return t.data.view(torch.uint8).contiguous()


def block_scales(t: NVFP4Tensor) -> torch.Tensor:
    """``(N, K/16)`` float8_e4m3fn: the block scales, row-major (block ``k/16`` of row ``n`` at ``[n, k/16]``)."""
    check_module_tensor(t)
    return t.scales.contiguous()


def activation_global_scale(scale, name: str = "activation global scale") -> torch.Tensor:
    """One activation global scale ``()`` float32 (dequant form), checked: finite and ``>= 2^-126``."""
    scale = torch.as_tensor(scale, dtype=torch.float32).detach().cpu()
    if scale.numel() != 1:
        raise ValueError(f"one module has one {name}; got shape {tuple(scale.shape)} "
                         "(take the max over groups for a shared scale: shared_activation_scale)")
    scale = scale.reshape(())
    v.check_global_scale(scale, name)
    return scale


def shared_activation_scale(scales: torch.Tensor) -> torch.Tensor:
    """``()`` float32: the max of ``(G,)`` per-group activation global scales — the one scale
    a GEMM over all groups keeps (as vLLM and ModelOpt merge input scales; a larger scale
    only adds headroom, a smaller one would clip the loudest group)."""
    scales = torch.as_tensor(scales, dtype=torch.float32).detach().cpu()
    if scales.dim() > 1 or scales.numel() == 0:
        raise ValueError(f"activation scales must be a scalar or (G,); got shape {tuple(scales.shape)}")
    return activation_global_scale(scales.max())
