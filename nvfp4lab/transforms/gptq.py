"""GPTQ for NVFP4 weights of a grouped layer ``z = einsum("tgk,gkn->tgn", x, W)``.

Orientation: nvfp4lab's ``W (G, K, N)`` has its blocks of 16 along K, the input
(contraction) dimension. GPTQ's "columns" — the dimension it walks, quantizing one at a
time and pushing the error onto the ones not yet quantized — are the K inputs here:
step k quantizes the row ``W[g, k, :]`` (N weights, each in its own block along K).

Per group g (all groups at once, vectorised):

    H      = 2 X_gᵀ X_g                     (K, K) float64, X_g (T, K) the calibration inputs
    dead   = {k : H_kk = 0}:  H_kk := 1, W[k, :] := 0        (an input that is always zero)
    H     += λ · mean(diag H) · I           damping, λ = ``damp`` (default 0.01)
    U      = chol(H⁻¹) upper                 H⁻¹ = Uᵀ U
    gs     = given, or max(amax(W_g) / 2688, 2^-126) of W after zeroing dead inputs (fixed)
    for k = 0 … K−1 (in order):
        if k % 16 == 0:  for every n, block b = rows k … k+15 of column n of the *current*
                         (error-updated) W:  s_b = e4m3(min((amax_b / M) / gs, 448)),
                         m_b = (1/gs)/s_b (0 if s_b = 0)  — the amax at the moment the
                         block's first row is reached; with several candidate maxima M the
                         block keeps the one with the lowest squared error of those 16
                         current values (as :func:`nvfp4lab.transforms.weights.encode_blocks`)
        q_k    = (e2m1(clamp(float32(W[k, :]) · m_b, −6, 6)) · s_b) · gs      RTN on the grid
        e_k    = (W[k, :] − q_k) / U_kk
        W[j, :] −= U_kj · e_k   for every j > k                           error feedback

The blocked implementation (:func:`gptq_quantize`) does the same with lazy batch updates:
inside a block of ``block_size`` rows (a multiple of 16, default 128, so a 16-block never
straddles two) the feedback goes only to the block's own rows; when the block ends, the
rows below receive ``W[b1:, :] −= U[b0:b1, b1:]ᵀ · E`` at once (E the block's ``e_k``).
It equals the one-row-at-a-time reference :func:`gptq_reference` (float64) up to the
summation order; the quantized bytes are an ordinary NVFP4 tensor
(:class:`~nvfp4lab.transforms.weights.QuantizedWeights`).

With ``H = c · I`` (uncorrelated inputs of equal energy) U is diagonal, nothing is fed
back and GPTQ is exactly round-to-nearest (:func:`nvfp4lab.baselines.nvfp4_weights`).
Not here: activation order (quantizing K by decreasing H_kk), static groups.
"""

from __future__ import annotations

import torch

from nvfp4lab import validation as v
from nvfp4lab.formats import E2M1_MAX, e2m1_code_from_float, e2m1_float_from_code
from nvfp4lab.quantize import BLOCK, FLT_MAX, true_divide
from nvfp4lab.transforms import _checks as c
from nvfp4lab.transforms.weights import (
    MAX6,
    QuantizedWeights,
    _as_result,
    _global_scale,
    check_block_maxima,
    check_weights,
    encode_blocks,
    quantize_weights,
)


def hessian(x: torch.Tensor, accumulated: torch.Tensor | None = None) -> torch.Tensor:
    """``H_g = 2 X_gᵀ X_g`` ``(G, K, K)`` float64 of calibration inputs ``x (T, G, K)`` (any
    float dtype, finite); pass the previous result as ``accumulated`` to stream over
    batches (the sum over tokens is the same, up to float64 summation order)."""
    c.float_tensor(x, "x", 3, "(T, G, K)")
    x64 = x.to(torch.float64)
    h = 2.0 * torch.einsum("tgk,tgj->gkj", x64, x64)
    if accumulated is None:
        return h
    v.check_tensor(accumulated, "accumulated")
    v.check_shape(accumulated, "accumulated", tuple(h.shape))
    return accumulated.to(h.device, torch.float64) + h


def output_error(x: torch.Tensor, w: torch.Tensor, w_hat: torch.Tensor) -> torch.Tensor:
    """``(G,)`` float64 ``‖X_g (Ŵ_g − W_g)‖_F²`` of ``x (T, G, K)``, ``w, w_hat (G, K, N)``."""
    return torch.einsum("tgk,gkn->tgn", x.double(), w_hat.double() - w.double()).square().sum(dim=(0, 2))


def _prepare(w: torch.Tensor, h: torch.Tensor, damp: float, global_scale, block_maxima, dtype):
    """Checked inputs -> working W (G, K, N) in ``dtype``, U (G, K, K) float64, gs (G,), maxima."""
    check_weights(w)
    g, k, _ = w.shape
    c.float_tensor(h, "h", 3, "(G, K, K)")
    v.check_shape(h, "h", (g, k, k))
    if not (isinstance(damp, (int, float)) and 0 <= damp < float("inf")):
        raise ValueError(f"damp must be a finite non-negative number; got {damp!r}")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be float32 or float64; got {dtype}")
    maxima = check_block_maxima(block_maxima)
    h = h.to(w.device, torch.float64).clone()
    diagonal = h.diagonal(dim1=1, dim2=2)  # a view: writes go to h
    dead = diagonal == 0
    diagonal[dead] = 1.0
    work = w.to(torch.float32).clone()  # the quantizer's input is float32 (numerics §2.1)
    work[dead] = 0.0
    gs = _global_scale(work, global_scale, maxima)
    diagonal += damp * diagonal.mean(dim=1, keepdim=True)
    chol, info = torch.linalg.cholesky_ex(h)
    if bool((info != 0).any()):
        raise ValueError("h is not positive definite even after damping; raise damp")
    u = torch.linalg.cholesky(torch.cholesky_inverse(chol), upper=True)
    return work.to(dtype), u, gs, maxima


def _block_scales(rows: torch.Tensor, gs: torch.Tensor, maxima) -> tuple[torch.Tensor, torch.Tensor]:
    """Scales (G, N) E4M3 and multipliers (G, N) float32 of the current rows ``(G, 16, N)``."""
    blocks = rows.to(torch.float32).transpose(1, 2)  # (G, N, 16)
    scales, _ = encode_blocks(blocks, gs[:, None].expand(blocks.shape[:2]), maxima)
    value = scales.to(torch.float32)
    multiplier = true_divide(true_divide(1.0, gs)[:, None], value).clamp(max=FLT_MAX)  # numerics §2.4
    return scales, torch.where(value > 0, multiplier, torch.zeros_like(multiplier))


def _quantize_row(row: torch.Tensor, scale: torch.Tensor, multiplier: torch.Tensor, gs: torch.Tensor):
    """E2M1 codes (G, N) and dequantized values (G, N) in ``row``'s dtype of one row."""
    codes = e2m1_code_from_float((row.to(torch.float32) * multiplier).clamp(-E2M1_MAX, E2M1_MAX))
    values = (e2m1_float_from_code(codes) * scale.to(torch.float32)) * gs[:, None]
    return codes, values.to(row.dtype)


def _assemble(codes: torch.Tensor, scales: torch.Tensor, gs: torch.Tensor) -> QuantizedWeights:
    """codes (G, K, N) uint8, scales (G, K/16, N) E4M3 -> :class:`QuantizedWeights`."""
    return _as_result(codes.transpose(1, 2).contiguous(), scales.transpose(1, 2).contiguous(), gs)


def gptq_reference(w: torch.Tensor, h: torch.Tensor, *, damp: float = 0.01, global_scale=None,
                   block_maxima=MAX6) -> QuantizedWeights:
    """The definition (module docstring), one row of K at a time with immediate float64
    updates of every later row (K Python-level steps, each updating all later rows): for tests.
    Arguments as :func:`gptq_quantize`."""
    work, u, gs, maxima = _prepare(w, h, damp, global_scale, block_maxima, torch.float64)
    g, k, n = work.shape
    codes = torch.empty(g, k, n, dtype=torch.uint8, device=work.device)
    scales = torch.empty(g, k // BLOCK, n, dtype=torch.float8_e4m3fn, device=work.device)
    for i in range(k):
        if i % BLOCK == 0:
            scales[:, i // BLOCK], multiplier = _block_scales(work[:, i : i + BLOCK], gs, maxima)
        codes[:, i], q = _quantize_row(work[:, i], scales[:, i // BLOCK], multiplier, gs)
        error = (work[:, i] - q) / u[:, i, i, None]
        work[:, i:] -= u[:, i, i:, None] * error[:, None, :]
    return _assemble(codes, scales, gs)


def gptq_quantize(w: torch.Tensor, h: torch.Tensor, *, block_size: int = 128, damp: float = 0.01,
                  global_scale: torch.Tensor | None = None, block_maxima=MAX6,
                  dtype: torch.dtype = torch.float32) -> QuantizedWeights:
    """GPTQ-quantize grouped weights to NVFP4 (blocked, lazy batch updates).

    Args:
        w: ``(G, K, N)`` bf16/fp16/fp32/fp64 (converted to float32), finite, K % 16 == 0.
        h: ``(G, K, K)`` the per-group Hessians :func:`hessian` of the calibration inputs
            (any positive scale: the result does not depend on it).
        block_size: rows of K per lazy-update block, a positive multiple of 16.
        damp: λ, added as ``λ · mean(diag H) · I``.
        global_scale: ``(G,)`` float32 weight global scales (e.g. from
            :func:`nvfp4lab.transforms.weights.mse_global_scale`), or ``None`` for
            ``amax_g / 2688`` (``/ 1536`` with candidate maxima below 6).
        block_maxima: candidate maxima per block (``(6,)`` the definition, ``(6, 4)``
            four-over-six), chosen per block on its current values when it starts.
        dtype: the working precision of the error feedback, float32 (GPTQ's usual) or
            float64 (then equal to :func:`gptq_reference` up to summation order).

    Returns:
        :class:`~nvfp4lab.transforms.weights.QuantizedWeights` (dequantized ``(G, K, N)``
        float32 and the NVFP4 bytes).
    """
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0 or block_size % BLOCK:
        raise ValueError(f"block_size must be a positive multiple of {BLOCK}; got {block_size!r}")
    work, u, gs, maxima = _prepare(w, h, damp, global_scale, block_maxima, dtype)
    u = u.to(dtype)
    g, k, n = work.shape
    codes = torch.empty(g, k, n, dtype=torch.uint8, device=work.device)
    scales = torch.empty(g, k // BLOCK, n, dtype=torch.float8_e4m3fn, device=work.device)
    for b0 in range(0, k, block_size):  # blocks of K rows; inside, one row at a time (inherent)
        b1 = min(b0 + block_size, k)
        rows = work[:, b0:b1].clone()
        errors = torch.empty_like(rows)
        for i in range(b1 - b0):
            row = b0 + i
            if row % BLOCK == 0:
                scales[:, row // BLOCK], multiplier = _block_scales(rows[:, i : i + BLOCK], gs, maxima)
            codes[:, row], q = _quantize_row(rows[:, i], scales[:, row // BLOCK], multiplier, gs)
            errors[:, i] = (rows[:, i] - q) / u[:, row, row, None]
            rows[:, i:] -= u[:, row, row:b1, None] * errors[:, i, None, :]
        if b1 < k:  # lazy batch update of every row below the block
            work[:, b1:] -= u[:, b0:b1, b1:].transpose(1, 2) @ errors
    return _assemble(codes, scales, gs)


def rtn_weights(w: torch.Tensor, global_scale: torch.Tensor | None = None, *, block_maxima=MAX6) -> QuantizedWeights:
    """Round-to-nearest with the same scale rules (no error feedback): what GPTQ is compared with."""
    return quantize_weights(w, global_scale, block_maxima=block_maxima)
