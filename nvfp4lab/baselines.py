"""Reference recipes the NVFP4 modes are compared with, on the same ``x (T, G, K)`` and
``W (G, K, N)``; each returns ``z (T, G, N)`` float64 (rounded to bf16 like a GEMM's output).

* ``bf16``: no quantization (bf16 operands, exact accumulation, bf16 output);
* ``fp8``: what serving stacks run for ``wo_a`` today (NVFP4.md §5): activations E4M3 with
  one power-of-two scale per token per 128 channels (``2^ceil(log2(amax/448))``), weights
  E4M3 in 128×128 blocks with float32 scales ``amax/448``;
* ``w4a16``: NVFP4 weights (per-group dynamic global scale), bf16 activations;
* ``nvfp4``: W4A4 given the activations' global scales (the modes and recipes).
"""

from __future__ import annotations

import torch

from nvfp4lab.formats import E4M3_MAX
from nvfp4lab.quantize import dequantize_nvfp4, dynamic_global_scale, quantize_nvfp4, true_divide

FP8_BLOCK = 128


def e4m3_saturated(values: torch.Tensor) -> torch.Tensor:
    """``values`` clamped to ±448 and rounded to float8_e4m3fn (the FP8 recipe's element cast)."""
    return values.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


def fp8_activation_scale(amax: torch.Tensor) -> torch.Tensor:
    """The FP8 recipe's decode scale of a 1×128 activation block: ``2^ceil(log2(amax/448))``,
    1 for an all-zero block."""
    return torch.where(amax > 0, torch.exp2(torch.ceil(torch.log2(amax / E4M3_MAX))), torch.ones_like(amax))


def fp8_weight_scale(amax: torch.Tensor) -> torch.Tensor:
    """The FP8 recipe's decode scale of a 128×128 weight block: ``amax/448``, 1 for an all-zero block."""
    return torch.where(amax > 0, true_divide(amax, E4M3_MAX), torch.ones_like(amax))


def _e4m3_roundtrip(values: torch.Tensor) -> torch.Tensor:
    return e4m3_saturated(values).to(torch.float64)


def fp8_activations(x: torch.Tensor) -> torch.Tensor:
    """Dequantized FP8 activations: per (token, group, 128 channels) power-of-two scales."""
    t, g, k = x.shape
    if k % FP8_BLOCK:
        raise ValueError(f"the FP8 recipe needs K % {FP8_BLOCK} == 0; got K={k}")
    blocks = x.to(torch.float32).reshape(t, g, k // FP8_BLOCK, FP8_BLOCK)
    scale = fp8_activation_scale(blocks.abs().amax(dim=-1, keepdim=True))
    return (_e4m3_roundtrip(blocks / scale) * scale.double()).reshape(t, g, k)


def fp8_weights(w: torch.Tensor) -> torch.Tensor:
    """Dequantized FP8 weights ``(G, K, N)``: 128×128 blocks, float32 scales ``amax/448``."""
    g, k, n = w.shape
    if k % FP8_BLOCK or n % FP8_BLOCK:
        raise ValueError(f"the FP8 recipe needs K and N multiples of {FP8_BLOCK}; got {k}, {n}")
    blocks = w.to(torch.float32).reshape(g, k // FP8_BLOCK, FP8_BLOCK, n // FP8_BLOCK, FP8_BLOCK)
    scale = fp8_weight_scale(blocks.abs().amax(dim=(2, 4), keepdim=True))
    return (_e4m3_roundtrip(true_divide(blocks, scale)) * scale.double()).reshape(g, k, n)


def nvfp4_weights(w: torch.Tensor) -> torch.Tensor:
    """Dequantized NVFP4 weights ``(G, K, N)`` float64, one dynamic global scale per group
    (as ``Nvfp4GroupedLinear.finalize_weights``)."""
    w_nk = w.transpose(1, 2).contiguous()
    gs = dynamic_global_scale(w_nk, per_group=True, group_dim=0)
    return dequantize_nvfp4(quantize_nvfp4(w_nk, gs, group_dim=0, check_finite=False)).double().transpose(1, 2)


def grouped_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``einsum("tgk,gkn->tgn")`` in float64, output rounded to bf16 (as the GEMMs write it)."""
    return torch.einsum("tgk,gkn->tgn", x.double(), w.double()).to(torch.bfloat16).double()


def reference_output(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The unquantized layer in float64: what every recipe is measured against."""
    return torch.einsum("tgk,gkn->tgn", x.double(), w.double())


def bf16_output(x, w):
    return grouped_matmul(x.to(torch.bfloat16), w.to(torch.bfloat16))


def fp8_output(x, w):
    return grouped_matmul(fp8_activations(x), fp8_weights(w))


def w4a16_output(x, w, w_dequantized=None):
    return grouped_matmul(x.to(torch.bfloat16), nvfp4_weights(w) if w_dequantized is None else w_dequantized)


def nvfp4_output(x, w, activation_scale: torch.Tensor, w_dequantized=None, block_rule: str = "max6"):
    """W4A4 with the given ``(G,)`` activation global scales; also returns the quantized
    activations (for clipping statistics)."""
    xq = quantize_nvfp4(x, activation_scale, block_rule=block_rule, check_finite=False)
    w_hat = nvfp4_weights(w) if w_dequantized is None else w_dequantized
    return grouped_matmul(dequantize_nvfp4(xq), w_hat), xq
