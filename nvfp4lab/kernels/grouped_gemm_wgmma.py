"""CuTeDSL kernel: the NVFP4 grouped GEMM for large token counts, with Hopper ``wgmma``.

Same operands, decode and numerics as :mod:`grouped_gemm` (whose ``issue_stage`` and
``decode_operand`` it uses), but the MMA is the asynchronous warpgroup MMA reading both
bf16 tiles straight from shared memory (128-byte swizzled, K-major). That removes the
``ldmatrix`` traffic and lets the decode of stage k+1 run on the ALUs while the tensor
cores work on stage k::

    sync → wgmma(k) issued (async) → decode(k+1) → fence.proxy.async → wait wgmma(k)

Tile: BM=128 tokens (two warpgroups of 64 rows) × BN=128 output channels, BK=64, a
4-deep ``cp.async`` ring of packed bytes and two bf16 stages (100 KB of shared memory:
two CTAs per SM).
"""

from __future__ import annotations

import cuda.bindings.driver as cuda
import cutlass
import cutlass.cute as cute
import cutlass.utils.hopper_helpers as sm90_utils
from cutlass import BFloat16, Float32, Int32, Uint8, Uint32
from cutlass.cute.nvgpu import OperandMajorMode
from cutlass.utils import LayoutEnum

from nvfp4lab.kernels.grouped_gemm import (
    ALPHA_POST,
    BK,
    SCALE_TILE_WORDS,
    WORDS_PER_ROW,
    GemmConfig,
    decode_operand,
    issue_stage,
)

WGMMA = GemmConfig(bm=128, bn=128, stages=4, warps_m=2, warps_n=4)  # 8 warps = 2 warpgroups along M


@cute.kernel
def grouped_gemm_wgmma_kernel(
    mat_a: cute.Tensor,
    scale_a: cute.Tensor,
    mat_b: cute.Tensor,
    scale_b: cute.Tensor,
    offsets: cute.Tensor,
    global_scale_a: cute.Tensor,
    global_scale_b: cute.Tensor,
    out: cute.Tensor,
    partials: cute.Tensor,
    tokens: Int32,
    n_out: Int32,
    k: Int32,
    row_stride: Int32,
    m_tiles: Int32,
    splits: Int32,
    sA_layout: cute.ComposedLayout,
    sB_layout: cute.ComposedLayout,
    tiled_mma: cute.TiledMma,
    cfg: cutlass.Constexpr,
    padded_output: cutlass.Constexpr,
    split_k: cutlass.Constexpr,
):
    tidx, _, _ = cute.arch.thread_idx()
    n_tile, m_and_split, g = cute.arch.block_idx()
    m_tile = m_and_split % m_tiles
    split = m_and_split // m_tiles
    row_start = Int32(0)
    if g > 0:
        row_start = offsets[g - 1]
    rows = offsets[g] - row_start
    valid_rows = rows
    if cutlass.const_expr(not padded_output):
        valid_rows = tokens
    if m_tile * cfg.bm < valid_rows:
        allocator = cutlass.memory.SmemAllocator()
        sA = allocator.allocate_tensor(BFloat16, sA_layout.outer, 1024, swizzle=sA_layout.inner)
        sB = allocator.allocate_tensor(BFloat16, sB_layout.outer, 1024, swizzle=sB_layout.inner)
        raw_a = allocator.allocate_tensor(Uint32, cute.make_layout(cfg.stages * cfg.bm * WORDS_PER_ROW), 16)
        raw_b = allocator.allocate_tensor(Uint32, cute.make_layout(cfg.stages * cfg.bn * WORDS_PER_ROW), 16)
        raw_sa = allocator.allocate_tensor(Uint32, cute.make_layout(cfg.stages * SCALE_TILE_WORDS), 16)
        raw_sb = allocator.allocate_tensor(Uint32, cute.make_layout(cfg.stages * SCALE_TILE_WORDS), 16)
        raw_sa_bytes = cute.recast_tensor(raw_sa, Uint8)
        raw_sb_bytes = cute.recast_tensor(raw_sb, Uint8)

        k_words = k // 8
        all_k_tiles = k // BK
        per_split = (all_k_tiles + splits - 1) // splits
        k_begin = split * per_split
        k_tiles = cutlass.min(per_split, all_k_tiles - k_begin)
        col_tiles = k // 64
        n_padded = ((n_out + 127) // 128) * 128
        a_row0 = row_start + m_tile * cfg.bm
        b_row0 = g * n_out + n_tile * cfg.bn
        scale_a_word = (a_row0 // 128) * col_tiles * SCALE_TILE_WORDS
        scale_b_word = (g * (n_padded // 128) + (n_tile * cfg.bn) // 128) * col_tiles * SCALE_TILE_WORDS
        b_tile_row0 = (n_tile * cfg.bn) % 128
        live_a = valid_rows - m_tile * cfg.bm  # A rows worth decoding (>= BM means all)
        atom = cute.make_copy_atom(
            cute.nvgpu.cpasync.CopyG2SOp(cache_mode=cute.nvgpu.cpasync.LoadCacheMode.GLOBAL), Uint32, num_bits_per_copy=128
        )
        for s in cutlass.range_constexpr(cfg.stages - 1):
            if s < k_tiles:
                issue_stage(atom, cfg, tidx, k_begin + s, Int32(s), mat_a, a_row0, raw_a, mat_b, b_row0, raw_b,
                            scale_a, scale_a_word, raw_sa, scale_b, scale_b_word, raw_sb, k_words)
            cute.arch.cp_async_commit_group()
        cute.arch.cp_async_wait_group(cfg.stages - 2)
        cute.arch.sync_threads()
        decode_operand(cfg.bm, cfg.threads, tidx, Int32(0), raw_a, raw_sa_bytes, a_row0 % 128, sA, Int32(0), live_a)
        decode_operand(cfg.bn, cfg.threads, tidx, Int32(0), raw_b, raw_sb_bytes, b_tile_row0, sB, Int32(0), Int32(cfg.bn))
        cute.arch.fence_proxy("async.shared", space="cta")

        thr_mma = tiled_mma.get_slice(tidx)
        tCrA = tiled_mma.make_fragment_A(thr_mma.partition_A(sA))
        tCrB = tiled_mma.make_fragment_B(thr_mma.partition_B(sB))
        coords = thr_mma.partition_C(cute.make_identity_tensor((cfg.bm, cfg.bn)))
        acc = cute.make_rmem_tensor(tiled_mma.partition_shape_C((cfg.bm, cfg.bn)), Float32)
        acc.fill(0.0)
        tiled_mma.set(cute.nvgpu.warpgroup.Field.ACCUMULATE, True)
        k_blocks = cute.size(tCrA, mode=[2])

        for k_tile in range(k_tiles):
            upcoming = k_tile + cfg.stages - 1
            if upcoming < k_tiles:
                issue_stage(atom, cfg, tidx, k_begin + upcoming, upcoming % cfg.stages, mat_a, a_row0, raw_a, mat_b,
                            b_row0, raw_b, scale_a, scale_a_word, raw_sa, scale_b, scale_b_word, raw_sb, k_words)
            cute.arch.cp_async_commit_group()
            cute.arch.cp_async_wait_group(cfg.stages - 2)
            cute.arch.sync_threads()
            stage = k_tile % 2
            cute.nvgpu.warpgroup.fence()
            for k_block in cutlass.range_constexpr(k_blocks):
                cute.gemm(tiled_mma, acc, tCrA[None, None, k_block, stage], tCrB[None, None, k_block, stage], acc)
            cute.nvgpu.warpgroup.commit_group()
            if k_tile + 1 < k_tiles:  # decode the next stage while the tensor cores run
                slot = (k_tile + 1) % cfg.stages
                decode_operand(cfg.bm, cfg.threads, tidx, slot, raw_a, raw_sa_bytes, a_row0 % 128, sA, (k_tile + 1) % 2, live_a)
                decode_operand(cfg.bn, cfg.threads, tidx, slot, raw_b, raw_sb_bytes, b_tile_row0, sB, (k_tile + 1) % 2, Int32(cfg.bn))
                cute.arch.fence_proxy("async.shared", space="cta")
            cute.nvgpu.warpgroup.wait_group(0)

        if cutlass.const_expr(split_k):
            for i in cutlass.range(cute.size(acc), unroll_full=True):
                m, n = coords[i]
                t = m_tile * cfg.bm + m
                if t < valid_rows:
                    partials[(split * tokens + t) * row_stride + g * n_out + n_tile * cfg.bn + n] = acc[i]
        else:
            alpha = (global_scale_a[g] * global_scale_b[g]) * Float32(ALPHA_POST)
            base = g
            if cutlass.const_expr(padded_output):
                base = row_start
            for i in cutlass.range(cute.size(acc), unroll_full=True):
                m, n = coords[i]
                t = m_tile * cfg.bm + m
                if t < valid_rows:
                    out[t * row_stride + base * n_out + n_tile * cfg.bn + n] = (acc[i] * alpha).to(BFloat16)


@cute.jit
def grouped_gemm_wgmma(
    mat_a_ptr: cute.Pointer,
    scale_a_ptr: cute.Pointer,
    mat_b_ptr: cute.Pointer,
    scale_b_ptr: cute.Pointer,
    offsets_ptr: cute.Pointer,
    gs_a_ptr: cute.Pointer,
    gs_b_ptr: cute.Pointer,
    out_ptr: cute.Pointer,
    partials_ptr: cute.Pointer,
    rows_total: Int32,
    groups: Int32,
    n_out: Int32,
    k: Int32,
    tokens: Int32,
    m_tiles: Int32,
    row_stride: Int32,
    splits: Int32,
    stream: cuda.CUstream,
    cfg: cutlass.Constexpr,
    padded_output: cutlass.Constexpr,
    split_k: cutlass.Constexpr,
):
    """Host entry, with the same arguments as ``grouped_gemm.grouped_gemm``."""
    col_tiles = k // 64
    n_padded = ((n_out + 127) // 128) * 128
    mat_a = cute.make_tensor(mat_a_ptr, cute.make_layout(rows_total * (k // 8)))
    scale_a = cute.make_tensor(scale_a_ptr, cute.make_layout(rows_total * col_tiles))
    mat_b = cute.make_tensor(mat_b_ptr, cute.make_layout(groups * n_out * (k // 8)))
    scale_b = cute.make_tensor(scale_b_ptr, cute.make_layout(groups * n_padded * col_tiles))
    offsets = cute.make_tensor(offsets_ptr, cute.make_layout(groups))
    gs_a = cute.make_tensor(gs_a_ptr, cute.make_layout(groups))
    gs_b = cute.make_tensor(gs_b_ptr, cute.make_layout(groups))
    out = cute.make_tensor(out_ptr, cute.make_layout(rows_total * n_out * groups))
    partials = cute.make_tensor(partials_ptr, cute.make_layout(splits * tokens * groups * n_out))

    tiled_mma = sm90_utils.make_trivial_tiled_mma(
        BFloat16, BFloat16, OperandMajorMode.K, OperandMajorMode.K, Float32,
        (cfg.warps_m, 1, 1), (64, cfg.bn),
    )
    tile = (cfg.bm, cfg.bn, BK)
    sA_layout = sm90_utils.make_smem_layout_a(LayoutEnum.ROW_MAJOR, tile, BFloat16, 2)
    sB_layout = sm90_utils.make_smem_layout_b(LayoutEnum.ROW_MAJOR, tile, BFloat16, 2)
    raw_bytes = cfg.stages * ((cfg.bm + cfg.bn) * WORDS_PER_ROW + 2 * SCALE_TILE_WORDS) * 4
    smem_bytes = raw_bytes + (cute.cosize(sA_layout) + cute.cosize(sB_layout)) * 2 + 2048
    grouped_gemm_wgmma_kernel(
        mat_a, scale_a, mat_b, scale_b, offsets, gs_a, gs_b, out, partials, tokens, n_out, k, row_stride, m_tiles, splits,
        sA_layout, sB_layout, tiled_mma, cfg, padded_output, split_k,
    ).launch(grid=[n_out // cfg.bn, m_tiles * splits, groups], block=[cfg.threads, 1, 1], smem=smem_bytes, stream=stream)
