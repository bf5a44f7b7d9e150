"""SmoothQuant per-channel smoothing of a grouped layer ``z = einsum("tgk,gkn->tgn", x, W)``.

Definitions, per group g and input channel k (``x (T, G, K)``, ``W (G, K, N)``):

    a_gk = max_t |x_tgk|            activation channel amax (calibration tokens)
    w_gk = max_n |W_gkn|            weight channel amax
    s_gk = a_gk^α / w_gk^(1−α)      if a_gk > 0 and w_gk > 0, else 1        α ∈ [0, 1]
    x'   = x · diag(s)⁻¹,   W' = diag(s) · W,   so   x' W' = x W   exactly in real numbers

computed in float64 and stored as float32 (``power_of_two=True`` rounds ``log2 s`` to the
nearest integer: then ``x / s`` and ``s · W`` are exact in binary floating point, barring
overflow and underflow). A channel that is zero in either operand contributes nothing to
``z``, so it keeps ``s = 1``. α = 1 moves all of x's range into W, α = 0 normalizes W's
rows; SmoothQuant's default is 0.5. With NVFP4's 16-element block scales the outliers that
hurt are those *within* a block, so the best α is found by search
(:func:`search_alpha`) on the W4A4 output error.

Deployment in a decoder's ``o_proj`` (x = the attention output, channel c = h·D + d):
``diag(s)⁻¹`` folds into the value projection, as ``o_h = P_h V_{kv(h)}`` is linear in V's
channels: :func:`fold_scales_into_value_projection` divides row d of KV head j of ``w_v`` (and
its bias) by ``s``. Under grouped-query attention the query heads that share a KV head
must then share their scales: compute ``s`` from amaxes tied with
:func:`tie_shared_kv_heads` (the max over the heads sharing a KV head). ``diag(s) · W``
folds into ``o_proj``'s weight (:func:`smooth`, or :func:`fold_scales_into_output_projection` in
``nn.Linear`` orientation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from nvfp4lab import baselines
from nvfp4lab import validation as v
from nvfp4lab.quantize import dynamic_global_scale
from nvfp4lab.transforms import _checks as c

DEFAULT_ALPHAS = tuple(j / 10 for j in range(11))


def activation_channel_amax(x: torch.Tensor) -> torch.Tensor:
    """``a (G, K)`` float32: ``max_t |x_tgk|`` of ``x (T, G, K)`` (finite; T ≥ 1)."""
    c.float_tensor(x, "x", 3, "(T, G, K)")
    if x.shape[0] == 0:
        raise ValueError("x has no tokens: the activation channel amax needs at least one")
    return x.abs().amax(dim=0).to(torch.float32)


def weight_channel_amax(w: torch.Tensor) -> torch.Tensor:
    """``w (G, K)`` float32: ``max_n |W_gkn|`` of ``W (G, K, N)`` (finite)."""
    c.float_tensor(w, "w", 3, "(G, K, N)")
    return w.abs().amax(dim=2).to(torch.float32)


def _heads_layout(numel: int, heads: int, kv_heads: int) -> tuple[int, int]:
    c.positive_int(heads, "heads")
    c.positive_int(kv_heads, "kv_heads")
    if heads % kv_heads:
        raise ValueError(f"kv_heads={kv_heads} must divide heads={heads}")
    if numel % heads:
        raise ValueError(f"{numel} channels do not split into heads={heads} equal heads")
    return numel // heads, heads // kv_heads


def tie_shared_kv_heads(amax: torch.Tensor, heads: int, kv_heads: int) -> torch.Tensor:
    """Per-channel amaxes ``(G, K)`` (G·K = heads·D, head h at channels h·D …) with each
    channel d replaced by its max over the query heads that read the same KV head
    (heads ``j·r … (j+1)·r − 1`` read KV head j, r = heads / kv_heads, as
    ``repeat_interleave``). Scales computed from tied amaxes fold into ``w_v``."""
    c.float_tensor(amax, "amax", 2, "(G, K)")
    d, r = _heads_layout(amax.numel(), heads, kv_heads)
    tied = amax.reshape(kv_heads, r, d).amax(dim=1, keepdim=True)
    return tied.expand(kv_heads, r, d).reshape(amax.shape).clone()


def smoothing_scales(x_amax: torch.Tensor, w_amax: torch.Tensor, alpha: float, *,
                     power_of_two: bool = False) -> torch.Tensor:
    """``s = a^α / w^(1−α)`` ``(G, K)`` float32 (1 where ``a`` or ``w`` is 0); see the module
    docstring. ``x_amax``, ``w_amax``: ``(G, K)`` non-negative finite; ``alpha`` in [0, 1]."""
    c.float_tensor(x_amax, "x_amax", 2, "(G, K)")
    c.float_tensor(w_amax, "w_amax", 2, "(G, K)")
    v.check_shape(w_amax, "w_amax", tuple(x_amax.shape))
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1]; got {alpha!r}")
    if bool((x_amax < 0).any()) or bool((w_amax < 0).any()):
        raise ValueError("x_amax and w_amax must be non-negative (they are max |·|)")
    a, w = x_amax.double(), w_amax.to(x_amax.device).double()
    live = (a > 0) & (w > 0)
    s = torch.where(live, a.clamp(min=1e-300).pow(alpha) / w.clamp(min=1e-300).pow(1.0 - alpha), torch.ones_like(a))
    if power_of_two:
        s = torch.exp2(torch.round(torch.log2(s)))
    s32 = s.to(torch.float32)
    bad = ~torch.isfinite(s32) | (s32 < torch.finfo(torch.float32).tiny)
    if bool(bad.any()):
        raise ValueError(f"{int(bad.sum())} smoothing scale(s) fall outside float32's normal range; "
                         "the amaxes are too far apart for this alpha")
    return s32


def _check_scales(s: torch.Tensor, shape: tuple[int, ...]) -> None:
    c.float_tensor(s, "s", 2, "(G, K)")
    v.check_shape(s, "s", shape)
    if not bool((s > 0).all()):
        raise ValueError("s must be positive")


def smooth(x: torch.Tensor, w: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x · diag(s)⁻¹, diag(s) · W)`` per group: ``x (T, G, K)``, ``W (G, K, N)``, ``s (G, K)``
    positive. Each result is float32 (float64 where its input is float64); their product
    equals ``x W`` up to float rounding (exactly for power-of-two ``s``)."""
    c.float_tensor(x, "x", 3, "(T, G, K)")
    c.float_tensor(w, "w", 3, "(G, K, N)")
    if x.shape[1:] != w.shape[:2]:
        raise ValueError(f"x (T, G, K) = {tuple(x.shape)} and w (G, K, N) = {tuple(w.shape)} disagree on G, K")
    _check_scales(s, tuple(w.shape[:2]))
    xd, wd = c.compute_dtype(x), c.compute_dtype(w)
    return x.to(xd) / s.to(x.device, xd), w.to(wd) * s.to(w.device, wd)[..., None]


def fold_scales_into_value_projection(w_v: torch.Tensor, s: torch.Tensor, heads: int) -> torch.Tensor:
    """``w_v`` with row d of KV head j divided by ``s`` of channel (h, d) for the heads h
    reading KV head j, so the attention output comes out as ``o · diag(s)⁻¹``.

    Args:
        w_v: ``(kv_heads·D, hidden)`` (``nn.Linear`` orientation) or its bias ``(kv_heads·D,)``.
        s: ``(G, K)`` with G·K = heads·D (as :func:`smooth` takes it), equal across the
            query heads that share a KV head (use :func:`tie_shared_kv_heads`).
        heads: the number of query heads.

    Returns: the folded tensor, float32 (float64 for float64 ``w_v``).
    """
    c.float_tensor(w_v, "w_v", min_ndim=1, meaning="(kv_heads·head_dim, hidden) or a bias")
    if w_v.dim() > 2:
        raise ValueError(f"w_v must be (kv_heads·head_dim, hidden) or a bias; got {tuple(w_v.shape)}")
    c.float_tensor(s, "s", 2, "(G, K)")
    d, _ = _heads_layout(s.numel(), heads, 1)
    if w_v.shape[0] % d:
        raise ValueError(f"w_v's first dimension {w_v.shape[0]} is not a multiple of head_dim={d}")
    kv_heads = w_v.shape[0] // d
    d, r = _heads_layout(s.numel(), heads, kv_heads)
    per_kv = s.reshape(kv_heads, r, d)
    if not bool((per_kv == per_kv[:, :1]).all()):
        raise ValueError("s differs between query heads that share a KV head, so it cannot fold into w_v; "
                         "compute it from amaxes tied with tie_shared_kv_heads")
    dtype = c.compute_dtype(w_v)
    divisor = per_kv[:, 0].reshape(-1).to(w_v.device, dtype)
    return w_v.to(dtype) / (divisor[:, None] if w_v.dim() == 2 else divisor)


def fold_scales_into_output_projection(w_o: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``W_o · diag(s)`` for ``o_proj``'s weight ``(hidden, heads·D)`` in ``nn.Linear``
    orientation (column c = channel c of the flattened ``s (G, K)``): the same as the
    ``diag(s) · W`` of :func:`smooth` on the grouped view."""
    c.float_tensor(w_o, "w_o", 2, "(hidden, heads·head_dim)")
    c.float_tensor(s, "s", 2, "(G, K)")
    if s.numel() != w_o.shape[1]:
        raise ValueError(f"s has {s.numel()} channels, w_o has {w_o.shape[1]} input columns")
    dtype = c.compute_dtype(w_o)
    return w_o.to(dtype) * s.reshape(1, -1).to(w_o.device, dtype)


def nvfp4_w4a4_output(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The default quantized layer of :func:`search_alpha`: NVFP4 W4A4 with per-group
    dynamic activation global scales (``amax_g / 2688``) and ``baselines.nvfp4_weights``;
    ``z (T, G, N)`` float64 (rounded to bf16 as the GEMM writes it)."""
    x32 = x.to(torch.float32)
    z, _ = baselines.nvfp4_output(x32, w.to(torch.float32), dynamic_global_scale(x32, per_group=True))
    return z


@dataclass(frozen=True)
class AlphaSearch:
    """The result of :func:`search_alpha`.

    Attributes:
        alpha: the chosen α (lowest total error).
        scales: its ``s (G, K)`` float32.
        alphas: the α tried.
        errors: ``(len(alphas), G)`` float64, ``Σ (z − ẑ)²`` per group.
        unsmoothed_error: ``(G,)`` float64, the same error without smoothing (s = 1).
    """

    alpha: float
    scales: torch.Tensor
    alphas: tuple[float, ...]
    errors: torch.Tensor
    unsmoothed_error: torch.Tensor

    @property
    def gain_db(self) -> float:
        """``10·log10(unsmoothed / chosen)`` total error: > 0 when smoothing helps."""
        best = self.errors[self.alphas.index(self.alpha)].sum()
        return float(10.0 * torch.log10(self.unsmoothed_error.sum() / best))


def search_alpha(x_cal: torch.Tensor, w: torch.Tensor, alphas: Sequence[float] = DEFAULT_ALPHAS,
                 quantized_output: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None, *,
                 power_of_two: bool = False, shared_kv: tuple[int, int] | None = None) -> AlphaSearch:
    """Choose α on calibration data by the quantized layer's output error.

    For each α: ``s`` from :func:`smoothing_scales` of ``x_cal``'s and ``W``'s channel amaxes
    (tied across KV heads when ``shared_kv = (heads, kv_heads)``), ``x', W' = smooth(x, W, s)``
    and ``E(α) = Σ (x W − quantized_output(x', W'))²`` against the unquantized float64
    ``x W``; the lowest total ``E`` wins (ties to the earlier α).

    Args:
        x_cal: ``(T, G, K)`` calibration activations (finite).
        w: ``(G, K, N)``.
        alphas: values in [0, 1].
        quantized_output: ``(x', W') -> ẑ (T, G, N)``; default :func:`nvfp4_w4a4_output`
            (NVFP4 W4A4, per-group dynamic activation scales). Pass the deployed recipe
            (e.g. its static scales computed on the smoothed calibration activations).
        power_of_two, shared_kv: as :func:`smoothing_scales`, :func:`tie_shared_kv_heads`.
    """
    c.float_tensor(x_cal, "x_cal", 3, "(T, G, K)")
    c.float_tensor(w, "w", 3, "(G, K, N)")
    if x_cal.shape[1:] != w.shape[:2]:
        raise ValueError(f"x_cal (T, G, K) = {tuple(x_cal.shape)} and w (G, K, N) = {tuple(w.shape)} disagree on G, K")
    alphas = tuple(float(a) for a in alphas)
    if not alphas:
        raise ValueError("alphas must not be empty")
    output = nvfp4_w4a4_output if quantized_output is None else quantized_output
    a, m = activation_channel_amax(x_cal), weight_channel_amax(w)
    if shared_kv is not None:
        a, m = tie_shared_kv_heads(a, *shared_kv), tie_shared_kv_heads(m, *shared_kv)
    reference = baselines.reference_output(x_cal, w)

    def error(z_hat: torch.Tensor) -> torch.Tensor:
        if z_hat.shape != reference.shape:
            raise ValueError(f"quantized_output returned {tuple(z_hat.shape)}, expected {tuple(reference.shape)}")
        return (reference - z_hat.double()).square().sum(dim=(0, 2))

    unsmoothed = error(output(x_cal, w))
    scales, errors = [], []
    for alpha in alphas:  # a small grid; each one quantized forward over the calibration set
        s = smoothing_scales(a, m, alpha, power_of_two=power_of_two)
        scales.append(s)
        errors.append(error(output(*smooth(x_cal, w, s))))
    errors = torch.stack(errors)
    best = int(errors.sum(dim=1).argmin())
    return AlphaSearch(alphas[best], scales[best], alphas, errors, unsmoothed)
