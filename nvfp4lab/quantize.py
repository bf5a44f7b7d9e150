"""The reference NVFP4 quantizer: the definition every other path must reproduce.

Definition (docs/numerics.md states it in full; every step is IEEE float32, round to
nearest even):

    gs      = max(amax(|x|) / 2688, 2^-126)          dynamic global scale (dequant form)
    amax_b  = max_{i in block} |x_i|                  16 consecutive elements along K
    s_b     = e4m3( min((amax_b / 6) / gs, 448) )     block scale, RNE, subnormals kept
    m_b     = min((1 / gs) / s_b, FLT_MAX)  if s_b > 0 else 0
    q_i     = e2m1( clamp(x_i · m_b, -6, 6) )         RNE, ties to even, sign kept
    x̂_i     = (e2m1(q_i) · s_b) · gs                  dequantized value

The operation order is torchao's ``nvfp4_quantize`` (two-level branch); the differences
from torchao are that block scales are not clamped up to 2^-6 (subnormal and zero block
scales are allowed), zero block scales give zero elements, and the multiplier is capped
at FLT_MAX.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nvfp4lab import validation as v
from nvfp4lab.formats import (
    E2M1_MAX,
    GLOBAL_SCALE_DIVISOR,
    e2m1_code_from_float,
    e2m1_float_from_code,
    e4m3_from_float,
    pack_e2m1,
    unpack_e2m1,
)

BLOCK = v.BLOCK_SIZE
FLT_MAX = torch.finfo(torch.float32).max
MIN_GLOBAL_SCALE = 2.0**-126


@dataclass(frozen=True)
class NVFP4Tensor:
    """A tensor quantized to NVFP4.

    Attributes:
        data: ``(..., K/2)`` ``torch.float4_e2m1fn_x2``, two E2M1 codes per byte.
        scales: ``(..., K/16)`` ``torch.float8_e4m3fn``, plain row-major block scales.
        global_scale: float32, shape ``()`` (one for the tensor) or ``(G,)`` (one per
            group along ``group_dim``); dequant form ``amax / 2688``.
        shape: the original shape ``(..., K)``.
        dtype: the original dtype.
        group_dim: the dimension a ``(G,)`` global scale runs along (not the last one).
    """

    data: torch.Tensor
    scales: torch.Tensor
    global_scale: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype
    group_dim: int = -2

    @property
    def per_group(self) -> bool:
        return self.global_scale.dim() == 1

    def global_scale_per_block(self) -> torch.Tensor:
        """The global scale broadcast to ``scales``' shape (float32)."""
        return _broadcast_global_scale(self.global_scale, self.scales.shape, self.group_dim)


def _broadcast_global_scale(global_scale: torch.Tensor, block_shape: torch.Size, group_dim: int) -> torch.Tensor:
    if global_scale.dim() == 0:
        return global_scale.expand(block_shape)
    view = [1] * len(block_shape)
    view[group_dim] = global_scale.shape[0]
    return global_scale.reshape(view).expand(block_shape)


def true_divide(numerator, denominator: float | torch.Tensor) -> torch.Tensor:
    """IEEE float32 division on every device.

    PyTorch's CUDA kernels divide by a Python scalar as a multiplication by its rounded
    reciprocal (``x / 6`` becomes ``x * 0.16666667``), which rounds differently; a 0-d
    tensor divisor on the same device takes the true-division path. Use this for every
    division the numerics define."""
    tensors = [t for t in (denominator, numerator) if isinstance(t, torch.Tensor)]
    device = tensors[0].device if tensors else torch.device("cpu")
    if not isinstance(numerator, torch.Tensor):
        numerator = torch.tensor(float(numerator), dtype=torch.float32, device=device)
    if not isinstance(denominator, torch.Tensor):
        denominator = torch.tensor(float(denominator), dtype=torch.float32, device=device)
    return torch.div(numerator, denominator)


def global_scale_from_amax(amax: torch.Tensor, divisor: float = GLOBAL_SCALE_DIVISOR) -> torch.Tensor:
    """Dequant-form global scale ``max(amax / divisor, 2^-126)`` (float32, same shape).

    ``divisor`` is 6·448 = 2688 (the top of E2M1 times the top of E4M3), or 6·256 = 1536
    for four-over-six block scales. The floor keeps ``1 / gs`` finite; a tensor whose
    amax is 0 gets ``gs = 2^-126`` and quantizes to zeros. NaN stays NaN.
    """
    gs = true_divide(amax.to(torch.float32), divisor)
    return torch.where(gs < MIN_GLOBAL_SCALE, torch.full_like(gs, MIN_GLOBAL_SCALE), gs)


def _check_group_dim(x: torch.Tensor, group_dim: int) -> int:
    if x.dim() < 2 or not -x.dim() <= group_dim < x.dim() or group_dim % x.dim() == x.dim() - 1:
        raise ValueError(f"group_dim={group_dim} must name a dimension of {tuple(x.shape)} other than K")
    return group_dim % x.dim()


def tensor_amax(x: torch.Tensor, *, per_group: bool = False, group_dim: int = -2) -> torch.Tensor:
    """``max |x|`` as float32: a scalar, or ``(G,)``, one per index of ``group_dim``."""
    magnitude = x.detach().abs().to(torch.float32)
    if per_group:
        group_dim = _check_group_dim(x, group_dim)
        magnitude = magnitude.transpose(group_dim, 0).reshape(x.shape[group_dim], -1)
        if magnitude.shape[1] == 0:  # no tokens: amax 0
            return magnitude.new_zeros(magnitude.shape[0])
        return magnitude.amax(dim=1)
    return magnitude.amax() if magnitude.numel() else magnitude.new_zeros(())


def dynamic_global_scale(
    x: torch.Tensor, *, per_group: bool = False, group_dim: int = -2, divisor: float = GLOBAL_SCALE_DIVISOR
) -> torch.Tensor:
    """The global scale computed from ``x`` itself: shared ``()`` or per group ``(G,)``."""
    return global_scale_from_amax(tensor_amax(x, per_group=per_group, group_dim=group_dim), divisor)


def _as_global_scale(global_scale, x: torch.Tensor, group_dim: int, divisor: float) -> torch.Tensor:
    if global_scale is None:
        return dynamic_global_scale(x, divisor=divisor)
    if not isinstance(global_scale, torch.Tensor):
        global_scale = torch.tensor(float(global_scale), dtype=torch.float32)
    global_scale = global_scale.to(x.device)
    if global_scale.dim() == 1:
        if x.dim() < 2 or x.shape[_check_group_dim(x, group_dim)] != global_scale.shape[0]:
            raise ValueError(
                f"a per-group global_scale of shape {tuple(global_scale.shape)} needs x with"
                f" G={global_scale.shape[0]} along group_dim={group_dim}; got {tuple(x.shape)}"
            )
    elif global_scale.dim() != 0:
        raise ValueError(f"global_scale must be a scalar or (G,); got shape {tuple(global_scale.shape)}")
    v.check_global_scale(global_scale, "global_scale")
    return global_scale


def block_scales_and_multipliers(
    block_amax: torch.Tensor, global_scale_per_block: torch.Tensor, block_max: float = E2M1_MAX
) -> tuple[torch.Tensor, torch.Tensor]:
    """From block amaxes and their global scales (float32, same shape) compute the E4M3
    block scales ``e4m3((amax_b / block_max) / gs)`` and the float32 multipliers that
    map elements onto the E2M1 grid (``block_max`` 6, or 4 for four-over-six)."""
    scales = e4m3_from_float(true_divide(true_divide(block_amax, block_max), global_scale_per_block))
    scale_value = scales.to(torch.float32)
    multiplier = true_divide(true_divide(1.0, global_scale_per_block), scale_value).clamp(max=FLT_MAX)
    multiplier = torch.where(scale_value > 0, multiplier, torch.zeros_like(multiplier))
    return scales, multiplier


BLOCK_RULES = ("max6", "four_over_six")
#: Four-over-six keeps block scales <= 256·6/4 = 384 < 448, so gs = amax / (6·256).
FOUR_OVER_SIX_DIVISOR = E2M1_MAX * 256.0
#: A max-6 global scale (amax / 2688) times this is four-over-six's (amax / 1536): 1.75, exact.
FOUR_OVER_SIX_SCALE_FACTOR = GLOBAL_SCALE_DIVISOR / FOUR_OVER_SIX_DIVISOR


def _encode_blocks(blocks: torch.Tensor, gs_per_block: torch.Tensor, block_max: float):
    """E4M3 scales ``(..., Kb)`` and E2M1 codes ``(..., Kb, 16)`` of float32 blocks."""
    block_amax = blocks.abs().amax(dim=-1)
    scales, multiplier = block_scales_and_multipliers(block_amax, gs_per_block, block_max)
    scaled = (blocks * multiplier[..., None]).clamp(-E2M1_MAX, E2M1_MAX)
    return scales, e2m1_code_from_float(scaled)


def _four_over_six(blocks: torch.Tensor, gs_per_block: torch.Tensor):
    """Per block, the better of scaling its amax to 6 or to 4 (lower squared error of
    the dequantized block against the input; ties keep 6). After "Four Over Six"
    (arXiv 2512.02010): the 4 choice gives the block's large values finer steps."""
    candidates = [_encode_blocks(blocks, gs_per_block, block_max) for block_max in (E2M1_MAX, 4.0)]
    errors = []
    for scales, codes in candidates:
        values = e2m1_float_from_code(codes) * (scales.to(torch.float32) * gs_per_block)[..., None]
        errors.append((values.double() - blocks.double()).square().sum(dim=-1))
    use_four = errors[1] < errors[0]
    scales = torch.where(use_four, candidates[1][0].view(torch.uint8), candidates[0][0].view(torch.uint8))
    codes = torch.where(use_four[..., None], candidates[1][1], candidates[0][1])
    return scales.view(torch.float8_e4m3fn), codes


def quantize_nvfp4(
    x: torch.Tensor,
    global_scale=None,
    *,
    group_dim: int = -2,
    block_rule: str = "max6",
    check_finite: bool = True,
) -> NVFP4Tensor:
    """Quantize ``x`` ``(..., K)`` (bf16, fp16 or fp32; K a multiple of 16) to NVFP4.

    Args:
        x: the tensor; blocks are 16 consecutive elements of the last dimension.
        global_scale: ``None`` for a dynamic scale from ``x``'s amax; a float or a 0-d
            float32 tensor (static, shared); or a ``(G,)`` float32 tensor, one per group
            along ``group_dim`` (default -2: ``x`` is ``(..., G, K)``). Each must be
            finite and >= 2^-126.
        group_dim: where the groups of a ``(G,)`` global scale lie (e.g. 0 for ``(G, N, K)``
            weights).
        block_rule: ``"max6"`` (the definition: each block's amax maps to 6) or
            ``"four_over_six"`` (each block keeps the better of 6 and 4; the dynamic
            global scale becomes amax / 1536). Reference only: the GPU kernels
            implement ``"max6"``.
        check_finite: raise on NaN/Inf in ``x`` (a device sync on CUDA). When off, a NaN
            makes its block scale NaN (0x7F), so the whole block dequantizes to NaN.

    Returns:
        An :class:`NVFP4Tensor` on ``x``'s device.
    """
    v.check_tensor(x, "x")
    v.check_dtype(x, "x", v.FLOAT_INPUT_DTYPES)
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension (the K axis)")
    v.check_block_multiple(x.shape[-1], "x")
    if check_finite and v.finite_check_allowed(x):
        v.check_finite(x, "x")
    if block_rule not in BLOCK_RULES:
        raise ValueError(f"block_rule must be one of {BLOCK_RULES}; got {block_rule!r}")
    divisor = FOUR_OVER_SIX_DIVISOR if block_rule == "four_over_six" else GLOBAL_SCALE_DIVISOR
    gs = _as_global_scale(global_scale, x, group_dim, divisor)

    blocks = x.to(torch.float32).reshape(*x.shape[:-1], x.shape[-1] // BLOCK, BLOCK)
    gs_per_block = _broadcast_global_scale(gs, blocks.shape[:-1], group_dim)
    if block_rule == "four_over_six":
        scales, codes = _four_over_six(blocks, gs_per_block)
    else:
        scales, codes = _encode_blocks(blocks, gs_per_block, E2M1_MAX)
    codes = codes.reshape(x.shape)
    return NVFP4Tensor(pack_e2m1(codes), scales, gs, x.shape, x.dtype, group_dim % x.dim() - x.dim())


def dequantize_nvfp4(t: NVFP4Tensor, *, apply_global_scale: bool = True) -> torch.Tensor:
    """Dequantize to float32 of ``t.shape``: ``(e2m1(q) · s_b) · gs`` (both products exact
    up to the last one, which rounds once). ``apply_global_scale=False`` leaves out ``gs``."""
    codes = unpack_e2m1(t.data)
    values = e2m1_float_from_code(codes).reshape(*t.scales.shape, BLOCK)
    block_scale = t.scales.to(torch.float32)
    if apply_global_scale:
        block_scale_values = values * block_scale[..., None]
        return (block_scale_values * t.global_scale_per_block()[..., None]).reshape(t.shape)
    return (values * block_scale[..., None]).reshape(t.shape)
