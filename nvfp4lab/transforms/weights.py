"""Weight-side NVFP4 recipes for grouped weights ``W (G, K, N)`` (blocks of 16 along K).

Every recipe returns :class:`QuantizedWeights`: the dequantized float32 weights
``(G, K, N)`` (what the GEMM computes with) and the bytes in nvfp4lab's weight layout, an
:class:`~nvfp4lab.quantize.NVFP4Tensor` of shape ``(G, N, K)`` with per-group global scales
(``group_dim=0``, as ``Nvfp4GroupedLinear.finalize_weights`` and
``baselines.nvfp4_weights`` hold them), so ``dequantize_nvfp4(q.tensor).transpose(1, 2)``
equals ``q.dequantized`` exactly. Elements and scales follow docs/numerics.md §2 (float32,
round to nearest even); only the choice of global and block scales differs:

* **block-scale candidates** (:func:`quantize_weights`, ``block_maxima``): each block b
  tries ``s_b(M) = e4m3((amax_b / M) / gs)`` for every candidate maximum M (its amax maps
  to M on the E2M1 grid) and keeps the M with the lowest (optionally importance-weighted)
  squared error ``Σ_i ω_i (w_i − ŵ_i(M))²``, ties to the earlier candidate. ``(6,)`` is the
  definition; ``(6, 4)`` is four-over-six (:func:`four_over_six_weights`, bit-identical to
  ``quantize_nvfp4(..., block_rule="four_over_six")``). With any M < 6 (all M must lie in
  [4, 6]) the default global scale is ``amax / 1536`` (block scales ≤ 1536/M ≤ 384 < 448).
* **global-scale MSE search** (:func:`mse_global_scale`): per group g, candidates
  ``gs_g(f) = f · gs_g`` for ``f`` in ``factors`` around the max-calibrated ``gs_g``; the
  lowest weight error ``Σ ω_k (W − Ŵ)²`` wins (ties to the earlier factor). ``f < 1`` clips
  the largest blocks; ``f > 1`` pushes small blocks into subnormal scales; in between it
  moves where each block scale falls on the 3-bit E4M3 mantissa.
* **16×16 2-D scales** (:func:`quantize_weights_2d`): one E4M3 scale per 16×16 tile of W,
  ``s_t = e4m3((amax_t / 6) / gs)``, shared by the tile's 16 rows and 16 columns, so W and
  Wᵀ quantize to the same values (transposed) with the same scales; stored expanded it is
  an ordinary NVFP4 tensor any NVFP4 kernel reads.

The importance ``ω`` ``(G, K)`` (e.g. the calibration activations' ``E[x_k²]``, the
diagonal of GPTQ's Hessian) turns weight error into an estimate of output error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nvfp4lab import validation as v
from nvfp4lab.formats import E2M1_MAX, GLOBAL_SCALE_DIVISOR, e2m1_code_from_float, e2m1_float_from_code, pack_e2m1
from nvfp4lab.quantize import (
    BLOCK,
    FOUR_OVER_SIX_DIVISOR,
    NVFP4Tensor,
    block_scales_and_multipliers,
    dequantize_nvfp4,
    global_scale_from_amax,
    tensor_amax,
)
from nvfp4lab.transforms import _checks as c

MAX6 = (E2M1_MAX,)
FOUR_OVER_SIX = (E2M1_MAX, 4.0)
#: Default global-scale factors: 2^(j/16), j = -4 … 16 (0.84 … 2), 21 candidates.
DEFAULT_FACTORS = tuple(2.0 ** (j / 16) for j in range(-4, 17))
TILE = 16


@dataclass(frozen=True)
class QuantizedWeights:
    """NVFP4 weights of a grouped layer.

    Attributes:
        dequantized: ``(G, K, N)`` float32, ``(e2m1 · s_b) · gs_g``.
        tensor: the bytes, ``(G, N, K)`` (K-major, blocks of 16 along K), per-group
            ``global_scale (G,)``, ``group_dim=0``; ``scales`` ``(G, N, K/16)`` E4M3.
        tile_scales: for 2-D scales, ``(G, K/16, N/16)`` E4M3 (``tensor.scales`` is it
            repeated over the 16 rows of each tile); ``None`` otherwise.
    """

    dequantized: torch.Tensor
    tensor: NVFP4Tensor
    tile_scales: torch.Tensor | None = None

    @property
    def data_bytes(self) -> int:
        """E2M1 elements: ``G·N·K/2``."""
        return self.tensor.data.numel()

    @property
    def scale_bytes(self) -> int:
        """E4M3 block scales: ``G·N·K/16`` (1-D) or ``G·N·K/256`` (16×16 tiles)."""
        return (self.tile_scales if self.tile_scales is not None else self.tensor.scales).numel()

    @property
    def nbytes(self) -> int:
        """Everything stored: elements, block scales and the float32 global scales."""
        return self.data_bytes + self.scale_bytes + 4 * self.tensor.global_scale.numel()


def check_weights(w: object, name: str = "w") -> torch.Tensor:
    """``w`` ``(G, K, N)`` float, finite, K a multiple of 16."""
    c.float_tensor(w, name, 3, "(G, K, N)")
    c.block_multiple_of_16(w.shape[1], name)
    return w


def check_block_maxima(block_maxima) -> tuple[float, ...]:
    maxima = tuple(float(m) for m in block_maxima)
    if not maxima or any(not 4.0 <= m <= E2M1_MAX for m in maxima):
        raise ValueError(f"block_maxima must be a non-empty sequence of values in [4, 6]; got {block_maxima!r}")
    return maxima


def global_scale_divisor(block_maxima) -> float:
    """2688 (= 6·448) for ``(6,)``, else 1536 (= 6·256, nvfp4lab's four-over-six divisor)."""
    return GLOBAL_SCALE_DIVISOR if check_block_maxima(block_maxima) == MAX6 else FOUR_OVER_SIX_DIVISOR


def max_global_scale(w: torch.Tensor, block_maxima=MAX6) -> torch.Tensor:
    """The max-calibrated per-group global scale ``max(amax(W_g) / divisor, 2^-126)`` ``(G,)``
    float32 of ``w`` ``(G, K, N)``."""
    check_weights(w)
    return global_scale_from_amax(tensor_amax(w.to(torch.float32), per_group=True, group_dim=0),
                                  global_scale_divisor(block_maxima))


def _global_scale(w: torch.Tensor, global_scale, block_maxima) -> torch.Tensor:
    if global_scale is None:
        return max_global_scale(w, block_maxima)
    v.check_tensor(global_scale, "global_scale")
    v.check_shape(global_scale, "global_scale", (w.shape[0],))
    v.check_global_scale(global_scale, "global_scale")
    return global_scale.to(w.device)


def _importance(importance, w: torch.Tensor) -> torch.Tensor | None:
    if importance is None:
        return None
    c.float_tensor(importance, "importance", 2, "(G, K)")
    v.check_shape(importance, "importance", (w.shape[0], w.shape[1]))
    if bool((importance < 0).any()):
        raise ValueError("importance must be non-negative")
    return importance.to(w.device, torch.float64)


def encode_blocks(blocks: torch.Tensor, gs_per_block: torch.Tensor, block_maxima=MAX6,
                  importance: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """E4M3 scales ``(...,)`` and E2M1 codes ``(..., 16)`` of float32 ``blocks (..., 16)``.

    Each block keeps, among ``s(M) = e4m3((amax / M) / gs)`` for M in ``block_maxima``, the
    one with the lowest ``Σ_i ω_i (w_i − (e2m1_i · (s · gs)))²`` (float64; ``ω`` = 1 or
    ``importance`` broadcast to ``blocks``), ties to the earlier M. Elements:
    ``e2m1(clamp(w · m, −6, 6))`` with ``m = (1/gs)/s`` (numerics §2.4–2.5)."""
    amax = blocks.abs().amax(dim=-1)
    scales, codes, errors = [], [], []
    for block_max in block_maxima:  # a few candidates, each vectorised over every block
        s, m = block_scales_and_multipliers(amax, gs_per_block, block_max)
        q = e2m1_code_from_float((blocks * m[..., None]).clamp(-E2M1_MAX, E2M1_MAX))
        scales.append(s.view(torch.uint8))
        codes.append(q)
        if len(block_maxima) > 1:
            values = e2m1_float_from_code(q) * (s.to(torch.float32) * gs_per_block)[..., None]
            error = (values.double() - blocks.double()).square()
            errors.append((error if importance is None else error * importance).sum(dim=-1))
    if len(block_maxima) == 1:
        return scales[0].view(torch.float8_e4m3fn), codes[0]
    choice = torch.stack(errors).argmin(dim=0)  # first minimum: ties keep the earlier M
    scale = torch.stack(scales).gather(0, choice[None])[0]
    code = torch.stack(codes).gather(0, choice[None, ..., None].expand(1, *codes[0].shape))[0]
    return scale.view(torch.float8_e4m3fn), code


def _as_result(codes_nk: torch.Tensor, scales: torch.Tensor, gs: torch.Tensor, tile_scales=None) -> QuantizedWeights:
    """Pack codes ``(G, N, K)``, wrap with scales ``(G, N, K/16)`` and dequantize."""
    g, n, k = codes_nk.shape
    tensor = NVFP4Tensor(pack_e2m1(codes_nk), scales, gs, torch.Size((g, n, k)), torch.float32, group_dim=-3)
    return QuantizedWeights(dequantize_nvfp4(tensor).transpose(1, 2), tensor, tile_scales)


def quantize_weights(w: torch.Tensor, global_scale: torch.Tensor | None = None, *, block_maxima=MAX6,
                     importance: torch.Tensor | None = None) -> QuantizedWeights:
    """NVFP4 weights with per-block scale candidates.

    Args:
        w: ``(G, K, N)`` bf16/fp16/fp32/fp64 (converted to float32: fp64 rounds once), finite,
            K a multiple of 16.
        global_scale: ``(G,)`` float32 (finite, >= 2^-126), or ``None`` for
            :func:`max_global_scale` (``amax_g / 2688``, or ``/ 1536`` with any M < 6).
        block_maxima: candidate maxima M in [4, 6] (see the module docstring); ``(6,)``
            equals ``baselines.nvfp4_weights`` bit for bit.
        importance: ``(G, K)`` non-negative weights ω of the per-block choice, or ``None``.
    """
    check_weights(w)
    maxima = check_block_maxima(block_maxima)
    gs = _global_scale(w, global_scale, maxima)
    imp = _importance(importance, w)
    g, k, n = w.shape
    blocks = w.to(torch.float32).transpose(1, 2).reshape(g, n, k // BLOCK, BLOCK)
    gs_per_block = gs[:, None, None].expand(g, n, k // BLOCK)
    imp_blocks = None if imp is None else imp.reshape(g, 1, k // BLOCK, BLOCK)
    scales, codes = encode_blocks(blocks, gs_per_block, maxima, imp_blocks)
    return _as_result(codes.reshape(g, n, k), scales, gs)


def four_over_six_weights(w: torch.Tensor, global_scale: torch.Tensor | None = None) -> QuantizedWeights:
    """Four-over-six on the weights only: each block of 16 along K keeps the better of its
    amax mapped to 6 or to 4 (unweighted squared error, ties to 6), global scale
    ``amax_g / 1536`` by default. Bit-identical to ``quantize_nvfp4`` of ``Wᵀ (G, N, K)``
    with ``block_rule="four_over_six"`` and the same per-group global scale."""
    return quantize_weights(w, global_scale, block_maxima=FOUR_OVER_SIX)


def weight_error(w: torch.Tensor, w_hat: torch.Tensor, importance: torch.Tensor | None = None) -> torch.Tensor:
    """``(G,)`` float64 ``Σ_{k,n} ω_k (W − Ŵ)²`` of ``(G, K, N)`` tensors (ω = 1 without importance)."""
    error = (w.double() - w_hat.double()).square()
    return (error if importance is None else error * importance.double()[..., None]).sum(dim=(1, 2))


@dataclass(frozen=True)
class GlobalScaleSearch:
    """The result of :func:`mse_global_scale`: the chosen ``global_scale (G,)`` float32,
    the ``factors`` tried and their ``errors (len(factors), G)`` float64, and the chosen
    ``factor`` index per group ``(G,)``."""

    global_scale: torch.Tensor
    factors: tuple[float, ...]
    errors: torch.Tensor
    choice: torch.Tensor


def mse_global_scale(w: torch.Tensor, factors=DEFAULT_FACTORS, *, block_maxima=MAX6,
                     importance: torch.Tensor | None = None) -> GlobalScaleSearch:
    """Per group, the global scale ``f · gs_max`` (``gs_max`` = :func:`max_global_scale`)
    with the lowest weight error :func:`weight_error` after :func:`quantize_weights` with
    ``block_maxima`` (so this also searches per-block scales when several M are given).

    Args:
        w: ``(G, K, N)`` as :func:`quantize_weights`.
        factors: positive finite multipliers (include 1.0 to keep the max-calibrated scale
            as a candidate); each candidate is floored at 2^-126.
        block_maxima, importance: as :func:`quantize_weights`.

    Cost: one quantization of W per factor.
    """
    check_weights(w)
    factors = tuple(float(f) for f in factors)
    if not factors or any(not (f > 0 and f < float("inf")) for f in factors):
        raise ValueError(f"factors must be a non-empty sequence of positive finite numbers; got {factors!r}")
    maxima = check_block_maxima(block_maxima)
    base = max_global_scale(w, maxima)
    imp = _importance(importance, w)
    errors, candidates = [], []
    for f in factors:  # a small grid; each candidate one vectorised quantization of W
        gs = global_scale_from_amax(base * f, 1.0)  # × f, floored at 2^-126
        candidates.append(gs)
        errors.append(weight_error(w, quantize_weights(w, gs, block_maxima=maxima, importance=imp).dequantized, imp))
    errors = torch.stack(errors)
    choice = errors.argmin(dim=0)
    gs = torch.stack(candidates).gather(0, choice[None].to(base.device))[0]
    return GlobalScaleSearch(gs, factors, errors, choice)


def quantize_weights_2d(w: torch.Tensor, global_scale: torch.Tensor | None = None) -> QuantizedWeights:
    """NVFP4 weights with one E4M3 scale per 16×16 tile (16 along K × 16 along N).

    ``s_t = e4m3(min((amax_t / 6) / gs_g, 448))`` with ``amax_t`` the tile's max |w|; every
    element of the tile uses ``m_t = (1/gs_g)/s_t`` and dequantizes to ``(e2m1 · s_t) · gs_g``.
    As the tile is symmetric in K and N, ``quantize_weights_2d(Wᵀ)`` is the transpose of
    ``quantize_weights_2d(W)`` (W as a forward and Wᵀ as a backward GEMM operand share
    scales). ``tensor.scales`` ``(G, N, K/16)`` repeats each tile scale over its 16 rows,
    so standard NVFP4 kernels read it; ``scale_bytes`` counts the tiles only (``K·N/256``
    per group).

    Args:
        w: ``(G, K, N)``, K and N multiples of 16; as :func:`quantize_weights`.
        global_scale: ``(G,)`` or ``None`` for ``amax_g / 2688``.
    """
    check_weights(w)
    g, k, n = w.shape
    if n % TILE:
        raise ValueError(f"w: N={n} must be a multiple of {TILE} for 16x16 tile scales")
    gs = _global_scale(w, global_scale, MAX6)
    w_nk = w.to(torch.float32).transpose(1, 2)  # (G, N, K)
    tiles = w_nk.reshape(g, n // TILE, TILE, k // TILE, TILE)
    tile_amax = tiles.abs().amax(dim=(2, 4))  # (G, N/16, K/16)
    tile_scales, multiplier = block_scales_and_multipliers(tile_amax, gs[:, None, None].expand_as(tile_amax))
    scaled = (tiles * multiplier[:, :, None, :, None]).clamp(-E2M1_MAX, E2M1_MAX)
    codes = e2m1_code_from_float(scaled).reshape(g, n, k)
    scales = tile_scales.repeat_interleave(TILE, dim=1)  # (G, N, K/16): each tile scale on its 16 rows
    return _as_result(codes, scales, gs, tile_scales.transpose(1, 2).contiguous())
