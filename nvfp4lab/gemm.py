"""The NVFP4 grouped GEMM: operands exactly as a Blackwell block-scaled grouped GEMM
takes them (see :mod:`nvfp4lab.layouts`), one result for all groups.

For every row ``r`` of group ``g`` (``offsets[g-1] <= r < offsets[g]``) and column ``n``::

    out[r, n] = bf16( acc[r, n] · (gs_a[g] · gs_b[g]) )
    acc[r, n] = Σ_k (e2m1(a[r,k]) · sa[r, k//16]) · (e2m1(b[g,n,k]) · sb[g, n, k//16])

with ``acc`` accumulated in float32. Each E2M1 × E4M3 product is exact in bf16 and
float32, so backends differ only by the order of the float32 summation.

Backends: ``"reference"`` (torch, any device: exact dequantisation and one batched
matmul) and, on CUDA sm_90+, ``"cutedsl"`` (:mod:`nvfp4lab.kernels`).
"""

from __future__ import annotations

import torch

from nvfp4lab import validation as v
from nvfp4lab.formats import e2m1_float_from_code, unpack_e2m1
from nvfp4lab.layouts import ROW_TILE, round_up, unswizzle_scales

BACKENDS = ("reference", "cutedsl")


def check_grouped_operands(mat_a, mat_b, scale_a, scale_b, expert_offsets, global_scale_a, global_scale_b):
    """Validate the grouped-GEMM operands (shapes, dtypes, devices) without reading
    values; returns ``(rows, groups, n, k)``."""
    tensors = dict(
        mat_a=mat_a,
        mat_b=mat_b,
        scale_a=scale_a,
        scale_b=scale_b,
        expert_offsets=expert_offsets,
        global_scale_a=global_scale_a,
        global_scale_b=global_scale_b,
    )
    for name, t in tensors.items():
        v.check_tensor(t, name)
    v.check_dtype(mat_a, "mat_a", (torch.float4_e2m1fn_x2,))
    v.check_dtype(mat_b, "mat_b", (torch.float4_e2m1fn_x2,))
    v.check_dtype(scale_a, "scale_a", (torch.float8_e4m3fn,))
    v.check_dtype(scale_b, "scale_b", (torch.float8_e4m3fn,))
    v.check_dtype(expert_offsets, "expert_offsets", (torch.int32,))
    v.check_dtype(global_scale_a, "global_scale_a", (torch.float32,))
    v.check_dtype(global_scale_b, "global_scale_b", (torch.float32,))
    v.check_ndim(mat_a, "mat_a", 2, "(Σ padded rows, K/2)")
    v.check_ndim(mat_b, "mat_b", 3, "(G, N, K/2), K-major")
    groups, n, half_k = mat_b.shape
    k = 2 * half_k
    v.check_block_multiple(k, "mat_b")
    rows = mat_a.shape[0]
    if mat_a.shape[1] != half_k:
        raise ValueError(f"mat_a has K/2={mat_a.shape[1]} but mat_b has K/2={half_k}")
    if rows % ROW_TILE:
        raise ValueError(f"mat_a rows ({rows}) must be a sum of per-group row counts padded to {ROW_TILE}")
    block_cols_p = round_up(k // 16, 4)
    v.check_shape(scale_a, "scale_a", (rows, block_cols_p))
    v.check_shape(scale_b, "scale_b", (groups, round_up(n, ROW_TILE) * block_cols_p))
    for name in ("expert_offsets", "global_scale_a", "global_scale_b"):
        v.check_shape(tensors[name], name, (groups,))
    v.check_same_device(tensors, mat_a.device)
    for name, t in tensors.items():
        v.check_contiguous(t, name)
    return rows, groups, n, k


def check_offsets_values(expert_offsets: torch.Tensor, rows: int) -> list[int]:
    """Host-side check of the offsets' values (a sync): non-decreasing multiples of 128
    ending at ``rows``. Returns them as a list."""
    ends = expert_offsets.to(torch.int64)
    sizes = torch.diff(ends, prepend=ends.new_zeros(1))
    if bool((sizes < 0).any()) or bool((ends % ROW_TILE != 0).any()):
        raise ValueError(
            f"expert_offsets must be non-decreasing multiples of {ROW_TILE}; got {ends.tolist()}"
        )
    if ends.numel() and int(ends[-1]) != rows:
        raise ValueError(f"expert_offsets[-1]={int(ends[-1])} must equal mat_a's row count {rows}")
    return ends.tolist()


def _dequantize_blocks(packed: torch.Tensor, block_scales: torch.Tensor) -> torch.Tensor:
    """``(..., K/2)`` packed codes and ``(..., K/16)`` E4M3 scales -> ``(..., K)`` float32
    ``e2m1 · s`` (exact)."""
    values = e2m1_float_from_code(unpack_e2m1(packed))
    values = values.reshape(*block_scales.shape, 16) * block_scales.to(torch.float32)[..., None]
    return values.flatten(-2)


def reference_grouped_gemm(mat_a, mat_b, scale_a, scale_b, expert_offsets, global_scale_a, global_scale_b):
    """The ``"reference"`` backend (see the module docstring); returns ``(rows, N)`` bf16."""
    rows, groups, n, k = check_grouped_operands(
        mat_a, mat_b, scale_a, scale_b, expert_offsets, global_scale_a, global_scale_b
    )
    ends = check_offsets_values(expert_offsets, rows)
    v.check_global_scale(global_scale_a, "global_scale_a")
    v.check_global_scale(global_scale_b, "global_scale_b")
    kb = k // 16
    a = _dequantize_blocks(mat_a, unswizzle_scales(scale_a, rows, kb))  # (rows, K)
    b = _dequantize_blocks(mat_b, unswizzle_scales(scale_b, n, kb))  # (G, N, K)

    starts = [0, *ends[:-1]]
    sizes = [end - start for start, end in zip(starts, ends)]
    longest = max(sizes, default=0)
    # Gather every group's rows into a (G, longest, K) batch: one bmm, no group loop.
    position = torch.arange(longest, device=a.device)
    start_t = torch.tensor(starts, device=a.device)[:, None]
    size_t = torch.tensor(sizes, device=a.device)[:, None]
    valid = position[None, :] < size_t  # (G, longest)
    row_index = torch.where(valid, start_t + position[None, :], torch.zeros_like(start_t))
    batched_a = a[row_index] * valid[..., None]
    acc = torch.bmm(batched_a, b.transpose(1, 2))  # (G, longest, N) float32
    scaled = acc * (global_scale_a * global_scale_b)[:, None, None]
    out = torch.zeros((rows, n), dtype=torch.bfloat16, device=a.device)
    out[row_index[valid]] = scaled[valid].to(torch.bfloat16)
    return out


def cutedsl_grouped_gemm(
    mat_a, mat_b, scale_a, scale_b, expert_offsets, global_scale_a, global_scale_b, *, out=None, tokens=None
):
    """The ``"cutedsl"`` backend (CUDA sm_90+): checks shapes, dtypes and devices (no
    values: no sync), then launches the kernel.

    ``tokens=None``: returns the padded ``(R, N)`` form (into ``out`` if given).
    ``tokens=T``: every group's first T rows are its tokens and the result is written
    straight into ``out``, a ``(T, G, N)`` bf16 tensor (``z``); each group must have at
    least T rows, which the caller guarantees (offsets are not read on the host).
    """
    from nvfp4lab import kernels

    rows, groups, n, k = check_grouped_operands(
        mat_a, mat_b, scale_a, scale_b, expert_offsets, global_scale_a, global_scale_b
    )
    if not kernels.gpu_supported(mat_a.device):
        raise ValueError(f"backend 'cutedsl' needs a CUDA GPU with compute capability >= 9.0 and CuTeDSL; got {mat_a.device}")
    if k % 64 or n % 128:
        raise ValueError(f"backend 'cutedsl' needs K % 64 == 0 and N % 128 == 0 (its tile sizes); got K={k}, N={n}")
    shape = (rows, n) if tokens is None else (tokens, groups, n)
    if out is None:
        out = torch.empty(shape, dtype=torch.bfloat16, device=mat_a.device)
    v.check_tensor(out, "out")
    v.check_dtype(out, "out", (torch.bfloat16,))
    v.check_shape(out, "out", shape)
    v.check_contiguous(out, "out")
    v.check_same_device({"out": out}, mat_a.device)
    if tokens is not None and tokens > rows // max(groups, 1):
        raise ValueError(f"tokens={tokens} exceeds the rows available per group ({rows}//{groups})")
    if tokens == 0 or rows == 0:
        return out
    from nvfp4lab.kernels import launch

    launch.grouped_gemm(
        mat_a.view(torch.uint8), scale_a.view(torch.uint8), mat_b.view(torch.uint8), scale_b.view(torch.uint8),
        expert_offsets, global_scale_a, global_scale_b, out, tokens=tokens,
    )
    return out


def run_nvfp4_grouped_gemm(
    mat_a: torch.Tensor,
    mat_b: torch.Tensor,
    scale_a: torch.Tensor,
    scale_b: torch.Tensor,
    expert_offsets: torch.Tensor,
    global_scale_a: torch.Tensor,
    global_scale_b: torch.Tensor,
    *,
    backend: str = "reference",
) -> torch.Tensor:
    """Run the NVFP4 grouped GEMM on Blackwell-layout operands.

    Args:
        mat_a: ``(R, K/2)`` float4_e2m1fn_x2, groups' rows padded to 128 (``R = Σ Mp_g``).
        mat_b: ``(G, N, K/2)`` float4_e2m1fn_x2, K-major.
        scale_a: ``(R, round_up(K/16, 4))`` float8_e4m3fn, swizzled per group.
        scale_b: ``(G, round_up(N,128)·round_up(K/16,4))`` float8_e4m3fn, swizzled.
        expert_offsets: ``(G,)`` int32, cumulative padded row ends (``offsets[-1] = R``).
        global_scale_a, global_scale_b: ``(G,)`` float32, dequant form.
        backend: ``"reference"`` or ``"cutedsl"``.

    Returns:
        ``(R, N)`` bfloat16 (padded rows give zeros).
    """
    if backend == "reference":
        return reference_grouped_gemm(mat_a, mat_b, scale_a, scale_b, expert_offsets, global_scale_a, global_scale_b)
    if backend == "cutedsl":
        return cutedsl_grouped_gemm(mat_a, mat_b, scale_a, scale_b, expert_offsets, global_scale_a, global_scale_b)
    raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
