"""Scale-factor layouts and the grouped-GEMM operand layout.

**Swizzled block scales** (Blackwell block-scaled MMA, cuBLAS "1D block scaling factors
layout"). The scales of an ``(M, K)`` operand form an ``(M, Kb = K/16)`` matrix. Rows are
padded to a multiple of 128 and columns to a multiple of 4 with zeros, then stored as
128×4 tiles of 512 bytes, K-tiles fastest. With ``ncb = ceil(Kb/4)``::

    offset(r, kb) = ((r//128)·ncb + kb//4)·512 + (r%32)·16 + ((r%128)//32)·4 + kb%4

A swizzled matrix is returned as ``(round_up(M,128), round_up(Kb,4))`` holding those
bytes in row-major order (row ``i`` of it is bytes ``i·ncb·4 … (i+1)·ncb·4``), the same
bytes as torchao's ``to_blocked`` flattened.

**Grouped A** (every token goes to every group): group ``g``'s ``M_g`` rows start at a
multiple of 128 and are padded with zero rows to ``round_up(M_g, 128)``. ``mat_a`` is
``(Σ Mp_g, K/2)`` packed FP4, ``scale_a`` is ``(Σ Mp_g, round_up(Kb,4))`` (each group
swizzled on its own, then concatenated) and ``offsets`` ``(G,)`` int32 holds the
cumulative padded row ends. Because every group starts on a 128-row tile, the
concatenation equals the swizzle of the whole ``(Σ Mp_g, Kb)`` matrix.

**Grouped B**: ``mat_b`` is ``(G, N, K/2)`` (the ``(K, N)`` operand stored K-major:
K is the contiguous axis), ``scale_b`` is ``(G, round_up(N,128)·round_up(Kb,4))``.
"""

from __future__ import annotations

import torch

from nvfp4lab import validation as v
from nvfp4lab.quantize import NVFP4Tensor

ROW_TILE = 128
COL_TILE = 4


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def swizzled_offset(row: torch.Tensor, block_col: torch.Tensor, num_block_cols: int) -> torch.Tensor:
    """Byte offset of scale ``(row, block_col)`` in the swizzled layout (the formula)."""
    col_tiles = round_up(num_block_cols, COL_TILE) // COL_TILE
    tile = (row // 128) * col_tiles + block_col // 4
    return tile * 512 + (row % 32) * 16 + ((row % 128) // 32) * 4 + block_col % 4


def _as_bytes(scales: torch.Tensor) -> torch.Tensor:
    if scales.dtype not in (torch.float8_e4m3fn, torch.uint8):
        raise TypeError(f"scales must be float8_e4m3fn or uint8; got {scales.dtype}")
    return scales.view(torch.uint8)


def swizzle_scales(scales: torch.Tensor) -> torch.Tensor:
    """Swizzle ``(..., M, Kb)`` block scales into ``(..., round_up(M,128), round_up(Kb,4))``.

    Leading dimensions are independent matrices (e.g. groups). Dtype is preserved
    (float8_e4m3fn or uint8); padding is zero bytes.
    """
    v.check_tensor(scales, "scales")
    raw = _as_bytes(scales)
    if raw.dim() < 2:
        raise ValueError(f"scales must be (..., M, Kb); got shape {tuple(scales.shape)}")
    *lead, rows, cols = raw.shape
    rows_p, cols_p = round_up(rows, ROW_TILE), round_up(cols, COL_TILE)
    padded = torch.zeros((*lead, rows_p, cols_p), dtype=torch.uint8, device=raw.device)
    padded[..., :rows, :cols] = raw
    # (.., row_tiles, 4 [row // 32 % 4], 32 [row % 32], col_tiles, 4 [col % 4])
    tiles = padded.reshape(*lead, rows_p // 128, 4, 32, cols_p // 4, 4)
    n = len(lead)
    order = [*range(n), n, n + 3, n + 2, n + 1, n + 4]
    swizzled = tiles.permute(order).reshape(*lead, rows_p, cols_p)
    return swizzled.view(scales.dtype)


def unswizzle_scales(swizzled: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Inverse of :func:`swizzle_scales`: ``(..., Mp, Kbp)`` (or ``(..., Mp·Kbp)``) back to
    ``(..., rows, cols)``, dropping the padding."""
    v.check_tensor(swizzled, "swizzled")
    raw = _as_bytes(swizzled)
    rows_p, cols_p = round_up(rows, ROW_TILE), round_up(cols, COL_TILE)
    if raw.dim() >= 2 and tuple(raw.shape[-2:]) == (rows_p, cols_p):
        lead = raw.shape[:-2]
    elif raw.shape[-1] == rows_p * cols_p:
        lead = raw.shape[:-1]
    else:
        raise ValueError(
            f"swizzled scales for a ({rows}, {cols}) matrix must end in ({rows_p}, {cols_p}) or"
            f" ({rows_p * cols_p},); got shape {tuple(swizzled.shape)}"
        )
    tiles = raw.reshape(*lead, rows_p // 128, cols_p // 4, 32, 4, 4)
    n = len(lead)
    order = [*range(n), n, n + 3, n + 2, n + 1, n + 4]
    plain = tiles.permute(order).reshape(*lead, rows_p, cols_p)
    return plain[..., :rows, :cols].contiguous().view(swizzled.dtype)


def grouped_a_operand(t: NVFP4Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lay out an activation quantized as ``(G, M, K)`` (or ``(M, G, K)`` is *not*
    accepted: permute first) as the grouped GEMM's A operand.

    Returns ``(mat_a (G·Mp, K/2) float4_e2m1fn_x2, scale_a (G·Mp, round_up(K/16,4))
    float8_e4m3fn, offsets (G,) int32)`` with ``Mp = round_up(M, 128)``; padded rows are
    zero.
    """
    if len(t.shape) != 3:
        raise ValueError(f"grouped_a_operand needs a (G, M, K) tensor; got shape {tuple(t.shape)}")
    groups, rows, k = t.shape
    rows_p = round_up(rows, ROW_TILE)
    data = torch.zeros((groups, rows_p, k // 2), dtype=torch.uint8, device=t.data.device)
    data[:, :rows] = t.data.view(torch.uint8)
    scale_a = swizzle_scales(t.scales)  # (G, Mp, Kbp)
    offsets = torch.arange(1, groups + 1, dtype=torch.int32, device=t.data.device) * rows_p
    return (
        data.reshape(groups * rows_p, k // 2).view(torch.float4_e2m1fn_x2),
        scale_a.reshape(groups * rows_p, -1),
        offsets,
    )


def grouped_b_operand(t: NVFP4Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay out a weight quantized as ``(G, N, K)`` (K-major: each output channel's K
    values contiguous) as the grouped GEMM's B operand.

    Returns ``(mat_b (G, N, K/2) float4_e2m1fn_x2, scale_b (G, round_up(N,128)·round_up(K/16,4))
    float8_e4m3fn)``.
    """
    if len(t.shape) != 3:
        raise ValueError(f"grouped_b_operand needs a (G, N, K) tensor; got shape {tuple(t.shape)}")
    groups = t.shape[0]
    return t.data.contiguous(), swizzle_scales(t.scales).reshape(groups, -1)
