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
    BK,
    SCALE_TILE_WORDS,
    WORDS_PER_ROW,
    GemmConfig,
    async_copy_atom,
    decode_operand,
    group_rows,
    issue_stage,
    operand_tensors,
    raw_ring_bytes,
    store_accumulators,
    tile_plan,
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
    row_start, valid_rows = group_rows(offsets, g, tokens, padded_output)
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

        k_words, k_begin, k_tiles, a_row0, b_row0, scale_a_word, scale_b_word, b_tile_row0, live_a = tile_plan(
            cfg, k, n_out, splits, split, g, m_tile, n_tile, row_start, valid_rows
        )
        atom = async_copy_atom()
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

        store_accumulators(acc, coords, cfg, split_k, padded_output, out, partials, global_scale_a, global_scale_b, g,
                           m_tile, n_tile, split, tokens, valid_rows, row_stride, n_out, row_start)


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
    mat_a, scale_a, mat_b, scale_b, offsets, gs_a, gs_b, out, partials = operand_tensors(
        mat_a_ptr, scale_a_ptr, mat_b_ptr, scale_b_ptr, offsets_ptr, gs_a_ptr, gs_b_ptr, out_ptr, partials_ptr,
        rows_total, groups, n_out, k, tokens, splits,
    )

    tiled_mma = sm90_utils.make_trivial_tiled_mma(
        BFloat16, BFloat16, OperandMajorMode.K, OperandMajorMode.K, Float32,
        (cfg.warps_m, 1, 1), (64, cfg.bn),
    )
    tile = (cfg.bm, cfg.bn, BK)
    sA_layout = sm90_utils.make_smem_layout_a(LayoutEnum.ROW_MAJOR, tile, BFloat16, 2)
    sB_layout = sm90_utils.make_smem_layout_b(LayoutEnum.ROW_MAJOR, tile, BFloat16, 2)
    smem_bytes = raw_ring_bytes(cfg) + (cute.cosize(sA_layout) + cute.cosize(sB_layout)) * 2 + 2048
    grouped_gemm_wgmma_kernel(
        mat_a, scale_a, mat_b, scale_b, offsets, gs_a, gs_b, out, partials, tokens, n_out, k, row_stride, m_tiles, splits,
        sA_layout, sB_layout, tiled_mma, cfg, padded_output, split_k,
    ).launch(grid=[n_out // cfg.bn, m_tiles * splits, groups], block=[cfg.threads, 1, 1], smem=smem_bytes, stream=stream)
