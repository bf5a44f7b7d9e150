"""CuTeDSL kernel: per-group amax of ``x (T, G, K)`` bf16, for dynamic global scales.

``amax_bits (G,)`` int32 must be zeroed first; after the launch it holds the bits of
``max |x[:, g, :]|`` as float32 (non-negative floats order like their bit patterns, so
an integer ``atomicMax`` of ``bits & 0x7FFFFFFF`` is an exact, order-independent float
max, and a NaN, whose bits exceed Inf's, wins). Each CTA reduces ``BLOCKS_PER_THREAD``
16-element blocks per thread of one group, then issues one atomic.
"""

from __future__ import annotations

import cuda.bindings.driver as cuda
import cutlass
import cutlass.cute as cute
from cutlass import Float32, Int32

from nvfp4lab.kernels._ptx import max_nan

THREADS = 256
BLOCKS_PER_THREAD = 8
WARPS = THREADS // 32


@cute.kernel
def group_amax_kernel(
    x: cute.Tensor,  # (T·G·Kb, 16) bf16
    amax_bits: cute.Tensor,  # (G,) int32
    tokens: Int32,
    groups: Int32,
    block_cols: Int32,
):
    tidx, _, _ = cute.arch.thread_idx()
    bidx, g, _ = cute.arch.block_idx()
    per_group = tokens * block_cols
    local = Float32(0.0)
    for i in cutlass.range_constexpr(BLOCKS_PER_THREAD):
        item = (bidx * BLOCKS_PER_THREAD + i) * THREADS + tidx
        if item < per_group:
            t = item // block_cols
            kb = item % block_cols
            values = x[(t * groups + g) * block_cols + kb, None].load().to(Float32)
            for j in cutlass.range_constexpr(16):
                local = max_nan(local, cute.arch.fmax(values[j], -values[j]))
    local = cute.arch.warp_reduction(local, max_nan)
    smem = cutlass.memory.SmemAllocator()
    partial = smem.allocate_tensor(Float32, cute.make_layout(WARPS), 16)
    warp = tidx // 32
    if tidx % 32 == 0:
        partial[warp] = local
    cute.arch.sync_threads()
    if tidx == 0:
        block_max = partial[0]
        for w in cutlass.range_constexpr(1, WARPS):
            block_max = max_nan(block_max, partial[w])
        bits = block_max.bitcast(Int32) & Int32(0x7FFFFFFF)
        cute.arch.atomic_max((amax_bits.iterator + g).llvm_ptr, bits)


@cute.jit
def group_amax(
    x_ptr: cute.Pointer, amax_ptr: cute.Pointer, tokens: Int32, groups: Int32, block_cols: Int32, stream: cuda.CUstream
):
    """Host entry: ``x`` is ``(T·G·Kb, 16)`` bf16, ``amax_bits`` ``(G,)`` int32 (zeroed)."""
    x = cute.make_tensor(x_ptr, cute.make_layout((tokens * groups * block_cols, 16), stride=(16, 1)))
    amax_bits = cute.make_tensor(amax_ptr, cute.make_layout(groups))
    per_cta = THREADS * BLOCKS_PER_THREAD
    ctas = (tokens * block_cols + per_cta - 1) // per_cta
    group_amax_kernel(x, amax_bits, tokens, groups, block_cols).launch(
        grid=[ctas, groups, 1], block=[THREADS, 1, 1], smem=WARPS * 4 + 16, stream=stream
    )
