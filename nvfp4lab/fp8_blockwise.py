"""The FP8 recipe serving stacks run for ``wo_a``, on the GPU: the benchmark's fair baseline.

Same numerics as the study's ``baselines.fp8_output`` (DeepSeek's recipe):

* activations ``x (T, G, K)`` bf16 -> E4M3 with one power-of-two scale per token, group and
  128 channels: ``s = 2^ceil(log2(amax/448))`` (1 for an all-zero block), ``q = e4m3(x/s)``;
* weights ``W (G, N, K)`` -> E4M3 in 128×128 blocks with float32 scales ``amax/448``;
* per group, ``torch._scaled_mm`` with blockwise scales (cuBLAS, 1×128 × 128×128; sm_90 and
  CUDA ≥ 12.9) writes ``z_g = x_g · W_gᵀ`` in bf16 into ``out (G, T, N)``.

Layouts ``_scaled_mm`` expects (PyTorch's blockwise tests): group g's activations are the
row-major ``x8[:, g]`` (leading dimension G·K, as the serving stacks' einsum reads them); the
1×128 activation scales ``(T, K/128)`` outer-dim-major, i.e. stored ``(G, K/128, T)`` and passed transposed; the
128×128 weight scales ``(K/128, N/128)`` stored ``(G, N/128, K/128)`` and passed transposed
(K/128 must be a multiple of 4). The groups are separate ``_scaled_mm`` calls (PyTorch's
grouped FP8 GEMM is row-wise only on sm_90); the benchmark captures them in one CUDA graph.
"""

from __future__ import annotations

import torch

from nvfp4lab.baselines import e4m3_saturated, fp8_activation_scale, fp8_weight_scale
from nvfp4lab.quantize import true_divide

BLOCK = 128


def _check_blocks(name: str, *sizes: int) -> None:
    if any(size % BLOCK for size in sizes):
        raise ValueError(f"the FP8 blockwise recipe needs {name} multiples of {BLOCK}; got {sizes}")


def quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x (T, G, K)`` -> ``(x8 (M, G, K) float8_e4m3fn, scales (G, K/128, M) float32)`` with
    ``M = round_up(T, 4)``: the decode scale of each (token, group, 128 channels) block, a
    power of two. Rows T..M are zeros: cuBLAS wants the outer-dim-major scale columns
    16-byte aligned, so the GEMM runs on M rows (``padded_tokens``)."""
    tokens, groups, k = x.shape
    _check_blocks("K", k)
    rows = padded_tokens(tokens)
    blocks = x.to(torch.float32).reshape(tokens, groups, k // BLOCK, BLOCK)
    blocks = torch.nn.functional.pad(blocks, (0, 0, 0, 0, 0, 0, 0, rows - tokens))
    scale = fp8_activation_scale(blocks.abs().amax(dim=-1, keepdim=True))
    x8 = e4m3_saturated(blocks / scale).reshape(rows, groups, k)
    return x8, scale.squeeze(-1).permute(1, 2, 0).contiguous()


def padded_tokens(tokens: int) -> int:
    """The rows the blockwise GEMM runs on for T tokens (a multiple of 4)."""
    return -(-tokens // 4) * 4


def quantize_activations_fused(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`quantize_activations` as one Triton kernel on the GPU (one program per token and
    group: read x once, write the E4M3 bytes and the scales), what a serving stack's fused cast
    does. The power-of-two scale ``2^ceil(log2(amax/448))`` comes from the bits of
    ``amax/448`` (exact; for bf16 ``x`` the eager version's ``log2`` gives the same power for
    every normal ratio). Needs ``x`` bf16, contiguous, K/128 a power of two and fewer than
    2^31 elements (the kernel's offsets are 32-bit)."""
    tokens, groups, k = x.shape
    _check_blocks("K", k)
    blocks = k // BLOCK
    if x.dtype != torch.bfloat16 or not x.is_contiguous():
        raise ValueError(f"the fused FP8 cast needs a contiguous bf16 x; got {x.dtype}, strides {x.stride()}")
    if blocks & (blocks - 1) or x.numel() >= 2**31:
        raise ValueError(f"the fused FP8 cast needs K/128 a power of two and T·G·K < 2^31; "
                         f"got K={k}, {x.numel()} elements")
    rows = padded_tokens(tokens)
    x8 = torch.empty(rows, groups, k, dtype=torch.float8_e4m3fn, device=x.device)
    scales = torch.empty(groups, k // BLOCK, rows, dtype=torch.float32, device=x.device)
    if rows > tokens:
        x8[tokens:].view(torch.uint8).zero_()
        scales[:, :, tokens:] = 1.0
    if tokens:
        _triton_cast()[(tokens * groups,)](x, x8, scales, groups, rows, BLOCKS=blocks, num_warps=8)
    return x8, scales


_TRITON_CAST = None


def _triton_cast():
    """The Triton kernel of :func:`quantize_activations_fused` (built on first use: Triton is
    a GPU-only dependency)."""
    global _TRITON_CAST
    if _TRITON_CAST is None:
        import triton
        import triton.language as tl

        @triton.jit
        def cast(x_ptr, q_ptr, s_ptr, groups, rows, BLOCKS: tl.constexpr):
            row = tl.program_id(0)  # token t = row // groups, group g = row % groups
            block = tl.arange(0, BLOCKS)[:, None]
            offsets = row * (BLOCKS * 128) + block * 128 + tl.arange(0, 128)[None, :]
            x = tl.load(x_ptr + offsets).to(tl.float32)
            ratio = tl.div_rn(tl.max(tl.abs(x), axis=1), 448.0)  # IEEE division, as the eager cast
            bits = ratio.to(tl.int32, bitcast=True)
            up = tl.where((bits & 0x7FFFFF) == 0, bits & 0x7F800000, (bits & 0x7F800000) + 0x800000)
            scale = tl.where(ratio > 0, up.to(tl.float32, bitcast=True), 1.0)
            q = tl.clamp(tl.div_rn(x, scale[:, None]), -448.0, 448.0)  # exact: scale is a power of two
            tl.store(q_ptr + offsets, q.to(tl.float8e4nv))
            t = row // groups
            g = row % groups
            tl.store(s_ptr + (g * BLOCKS + tl.arange(0, BLOCKS)) * rows + t, scale)

        _TRITON_CAST = cast
    return _TRITON_CAST


def quantize_weights(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``W (G, N, K)`` -> ``(w8 (G, N, K) float8_e4m3fn, scales (G, N/128, K/128) float32)``:
    128×128 blocks, decode scale ``amax/448`` (1 for an all-zero block)."""
    groups, n, k = w.shape
    _check_blocks("N and K", n, k)
    if (k // BLOCK) % 4:
        raise ValueError(f"cuBLAS's 128×128 weight scales need K/128 to be a multiple of 4; got K={k}")
    blocks = w.to(torch.float32).reshape(groups, n // BLOCK, BLOCK, k // BLOCK, BLOCK)
    scale = fp8_weight_scale(blocks.abs().amax(dim=(2, 4), keepdim=True))
    w8 = e4m3_saturated(true_divide(blocks, scale)).reshape(groups, n, k)
    return w8, scale.reshape(groups, n // BLOCK, k // BLOCK).contiguous()


def dequantize(q8: torch.Tensor, scales: torch.Tensor, activations: bool) -> torch.Tensor:
    """float64 values of :func:`quantize_activations` (``(T, G, K)``) or
    :func:`quantize_weights` (``(G, N, K)``) output: what the GEMM multiplies."""
    values = q8.to(torch.float64)
    if activations:  # (M, G, K), scales (G, K/128, M)
        return values * scales.permute(2, 0, 1).double().repeat_interleave(BLOCK, dim=-1)
    per_element = scales.double().repeat_interleave(BLOCK, dim=1).repeat_interleave(BLOCK, dim=2)
    return values * per_element


def grouped_matmul(x8: torch.Tensor, x_scales: torch.Tensor, w8: torch.Tensor, w_scales: torch.Tensor,
                   out: torch.Tensor) -> torch.Tensor:
    """``out[g] = bf16(x_g · W_gᵀ)`` for every group, with cuBLAS's blockwise FP8 GEMM.
    ``out (G, M, N)`` bf16 on the GPU (M = padded_tokens(T)); the other arguments as the
    quantizers return them."""
    for g in range(x8.shape[1]):  # one cuBLAS call per group: no grouped blockwise GEMM on sm_90
        torch._scaled_mm(x8[:, g], w8[g].t(), x_scales[g].t(), w_scales[g].t(), out_dtype=torch.bfloat16, out=out[g])
    return out
