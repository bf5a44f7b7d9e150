"""Error metrics and quantization statistics.

All error metrics compute in float64 and compare a ``test`` tensor with a ``reference``
of the same shape:

* ``sqnr_db = 10·log10(Σ ref² / Σ (ref − test)²)`` (``inf`` when equal),
* ``relative_frobenius_error = ‖ref − test‖_F / ‖ref‖_F``,
* per-group versions reduce over every dimension but ``group_dim`` and return ``(G,)``.
"""

from __future__ import annotations

import math

import torch

from nvfp4lab import validation as v
from nvfp4lab.formats import E2M1_MAX
from nvfp4lab.quantize import BLOCK, FLT_MAX, NVFP4Tensor, true_divide

#: Block scales at or above this round past E4M3's 448 (RNE between 448 and 480).
E4M3_OVERFLOW = 464.0


def _pair(reference: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    v.check_tensor(reference, "reference")
    v.check_tensor(test, "test")
    if reference.shape != test.shape:
        raise ValueError(f"reference {tuple(reference.shape)} and test {tuple(test.shape)} differ in shape")
    return reference.detach().to(torch.float64), test.detach().to(torch.float64).to(reference.device)


def _energies(reference, test, dims) -> tuple[torch.Tensor, torch.Tensor]:
    ref, tst = _pair(reference, test)
    signal = ref.square().sum(dim=dims)
    noise = (ref - tst).square().sum(dim=dims)
    return signal, noise


def _sqnr_from(signal: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return 10.0 * torch.log10(signal / noise)


def sqnr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (float; ``inf`` for identical tensors)."""
    signal, noise = _energies(reference, test, None)
    return float(_sqnr_from(signal, noise)) if float(noise) > 0 else math.inf


def relative_frobenius_error(reference: torch.Tensor, test: torch.Tensor) -> float:
    """``‖reference − test‖_F / ‖reference‖_F`` (float)."""
    signal, noise = _energies(reference, test, None)
    return float((noise / signal).sqrt())


def _other_dims(x: torch.Tensor, group_dim: int) -> list[int]:
    group_dim = group_dim % x.dim()
    return [d for d in range(x.dim()) if d != group_dim]


def sqnr_db_per_group(reference: torch.Tensor, test: torch.Tensor, group_dim: int = -2) -> torch.Tensor:
    """SQNR (dB) of each group: ``(G,)`` float64, groups along ``group_dim``."""
    signal, noise = _energies(reference, test, _other_dims(reference, group_dim))
    return _sqnr_from(signal, noise)


def relative_frobenius_error_per_group(reference: torch.Tensor, test: torch.Tensor, group_dim: int = -2) -> torch.Tensor:
    """Relative Frobenius error of each group: ``(G,)`` float64."""
    signal, noise = _energies(reference, test, _other_dims(reference, group_dim))
    return (noise / signal).sqrt()


def _block_masks(x: torch.Tensor, q: NVFP4Tensor):
    """Per-element ``saturated`` and per-block ``clipped``, ``zero_scale`` masks and the
    block amaxes, recomputed exactly as the quantizer computes them."""
    if tuple(x.shape) != tuple(q.shape):
        raise ValueError(f"x {tuple(x.shape)} does not match the quantized shape {tuple(q.shape)}")
    blocks = x.detach().to(torch.float32).reshape(*q.scales.shape, BLOCK)
    gs = q.global_scale_per_block()
    multiplier = true_divide(true_divide(1.0, gs), q.scales.to(torch.float32)).clamp(max=FLT_MAX)
    saturated = (blocks * multiplier[..., None]).abs() > E2M1_MAX  # exactly the quantizer's clamp
    zero_scale = q.scales.view(torch.uint8) == 0
    block_amax = blocks.abs().amax(dim=-1)
    clipped_block = true_divide(true_divide(block_amax, E2M1_MAX), gs) >= E4M3_OVERFLOW
    return saturated & ~zero_scale[..., None], clipped_block, zero_scale, block_amax


def clipped_fraction_per_group(x: torch.Tensor, q: NVFP4Tensor, group_dim: int = -2) -> torch.Tensor:
    """``(G,)`` float64 fraction of each group's elements that were clipped (see
    :func:`quantization_stats`), groups along ``group_dim`` of ``x``."""
    saturated, clipped_block, _, _ = _block_masks(x, q)
    clipped = (saturated & clipped_block[..., None]).reshape(x.shape).double()
    return clipped.mean(dim=_other_dims(x, group_dim))


def quantization_stats(x: torch.Tensor, q: NVFP4Tensor) -> dict[str, int]:
    """Counts describing how ``x`` was quantized into ``q``.

    * ``elements``, ``blocks``: totals;
    * ``saturated_elements``: elements whose scaled value ``|x·m_b|`` exceeded 6 and were
      clamped. Most are harmless: when a block scale rounds *down* to E4M3 the block's
      largest element lands up to 6·17/16 and saturates by at most 1/16 of its value;
    * ``clipped_elements``: saturated elements of blocks whose scale overflowed E4M3
      (``(amax_b/6)/gs >= 464``, which rounds past 448: the scale saturated rather than
      rounded): the global scale is too small for the data and the error is unbounded.
      This is the count calibration must keep at 0;
    * ``clipped_blocks``: blocks whose scale overflowed;
    * ``zero_scale_blocks``: blocks whose scale byte is 0 (all-zero blocks and blocks that
      underflowed E4M3: their elements all dequantize to 0);
    * ``underflowed_blocks``: zero-scale blocks that were not all zero (information lost);
    * ``subnormal_scale_blocks``: blocks whose scale is an E4M3 subnormal (< 2^-6, fewer
      than 4 significant bits).
    """
    saturated, clipped_block, zero_scale, block_amax = _block_masks(x, q)
    scale_bytes = q.scales.view(torch.uint8)
    exponent_bits = (scale_bytes >> 3) & 0xF
    return {
        "elements": x.numel(),
        "blocks": q.scales.numel(),
        "saturated_elements": int(saturated.sum()),
        "clipped_elements": int((saturated & clipped_block[..., None]).sum()),
        "clipped_blocks": int(clipped_block.sum()),
        "zero_scale_blocks": int(zero_scale.sum()),
        "underflowed_blocks": int((zero_scale & (block_amax > 0)).sum()),
        "subnormal_scale_blocks": int(((exponent_bits == 0) & ~zero_scale).sum()),
    }
