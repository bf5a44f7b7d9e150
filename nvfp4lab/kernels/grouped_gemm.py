"""CuTeDSL kernel: the NVFP4 grouped GEMM on Hopper (sm_90a), decoding FP4 in the kernel.

Hopper has no FP4 tensor cores. Each CTA streams the packed E2M1 bytes and E4M3 block
scales of its tile through a multi-stage ``cp.async`` ring in shared memory, decodes
them *exactly* into bf16 tiles (double-buffered), and runs bf16 tensor-core MMA
(``mma.sync.m16n8k16``, fp32 accumulation)::

    out = bf16( acc · (gs_a[g] · gs_b[g]) ),   acc = Σ_k (e2m1·s)_a · (e2m1·s)_b   (fp32)

**Exact decode, two elements per multiply** (``_ptx.decode_word_bf16x2``). For codes
``c0``, ``c1``, the 32-bit pattern ``(c0&7)<<6 | (c0&8)<<12 | (c1&7)<<22 | (c1&8)<<28`` is
a bf16 pair equal to ``(e2m1(c0), e2m1(c1)) · 2^-126`` (E2M1's exponent and mantissa sit
where bf16's low exponent bits and top mantissa bit are; its bias is 1, bf16's 127).
One ``mul.rn.bf16x2`` by the block scale times ``2^117`` (exact in bf16: 4 significant
bits, at most 448·2^117 < 2^126) gives ``e2m1 · s · 2^-9`` exactly — every such product
has at most 6 significant bits — including E2M1 0.5 (a bf16 subnormal before the
multiply; sm_90 bf16 arithmetic keeps subnormals). Both operands carry ``2^-9``, so the
epilogue multiplies by ``gs_a·gs_b·2^18``: power-of-two scaling commutes with every
fp32 rounding here, so the result equals the unscaled computation bit for bit.

**Tiles.** A CTA computes ``BM × BN`` of one group g: rows are that group's tokens (row
``offsets[g-1] + t`` of ``mat_a``), columns its output channels. One configuration,
``SMALL`` (BM=16, 8-stage ring, for decode: many CTAs streaming weights); larger token
counts use :mod:`grouped_gemm_wgmma`, which shares this module's stage copy and decode.
Needs ``K % 64 == 0`` and ``N % BN == 0`` (checked on the host).

**Split K** (decode): with few tiles, ``splits`` CTAs share one tile's K range, write
fp32 partial sums to a workspace ``(splits, T, G, N)`` and ``split_k_reduce`` adds them in
split order and applies the epilogue: deterministic, and more CTAs stream the weights.

**Output.** ``out[t·row_stride + base_g·N + n]`` with ``base_g = g`` for ``z (T, G, N)``
(row_stride = G·N) and ``base_g = offsets[g-1]`` for the padded ``(Σ Mp_g, N)`` form.
"""

from __future__ import annotations

from typing import NamedTuple

import cuda.bindings.driver as cuda
import cutlass
import cutlass.cute as cute
from cutlass import BFloat16, Float32, Int32, Uint8, Uint32

from nvfp4lab.kernels._memory import vector_at
from nvfp4lab.kernels._ptx import bf16x2_splat_from_f32, decode_word_bf16x2, f32_from_e4m3_byte


class GemmConfig(NamedTuple):
    bm: int  # tokens per CTA tile
    bn: int  # output channels per CTA tile
    stages: int  # cp.async ring depth (raw packed bytes)
    warps_m: int
    warps_n: int

    @property
    def threads(self) -> int:
        return 32 * self.warps_m * self.warps_n


BK = 64  # K elements per stage: 32 packed bytes per row, 4 scale blocks (one 128×4 scale tile)
WORDS_PER_ROW = BK // 8  # uint32 words of packed codes per row and stage
CHUNKS_PER_ROW = BK // 32  # 16-byte chunks per row and stage
SCALE_TILE_WORDS = 128  # one 128-row × 4-block swizzled scale tile: 512 bytes
SMALL = GemmConfig(bm=16, bn=64, stages=8, warps_m=1, warps_n=4)
SCALE_PRE = 2.0**117  # block scales are pre-multiplied by this (see the module docstring)
ALPHA_POST = 2.0**18  # and the epilogue undoes 2^-9 on each operand


@cute.jit
def copy_chunk(atom, src_words: cute.Tensor, src_offset: Int32, dst_words: cute.Tensor, dst_offset: Int32):
    """cp.async 16 bytes: ``dst_words[dst_offset:+4] = src_words[src_offset:+4]`` (both offsets
    multiples of 4 words, both tensors 16-byte aligned)."""
    src = vector_at(src_words, src_offset, 4)
    dst = vector_at(dst_words, dst_offset, 4)
    cute.copy(atom, src, dst)


@cute.jit
def copy_rows(atom, rows: cutlass.Constexpr, threads: cutlass.Constexpr, tidx: Int32, k_tile: Int32, slot: Int32,
              mat: cute.Tensor, row0: Int32, raw: cute.Tensor, k_words: Int32):
    """cp.async ``rows`` packed rows (from ``row0``) of stage ``k_tile`` into ring slot
    ``slot``: 16-byte chunks spread over the threads."""
    for rep in cutlass.range_constexpr((rows * CHUNKS_PER_ROW + threads - 1) // threads):
        chunk = rep * threads + tidx
        if chunk < rows * CHUNKS_PER_ROW:
            r = chunk // CHUNKS_PER_ROW
            q = chunk % CHUNKS_PER_ROW
            copy_chunk(atom, mat, (row0 + r) * k_words + k_tile * WORDS_PER_ROW + q * 4,
                       raw, slot * (rows * WORDS_PER_ROW) + chunk * 4)


@cute.jit
def issue_stage(atom, cfg: cutlass.Constexpr, tidx: Int32, k_tile: Int32, slot: Int32,
                mat_a: cute.Tensor, a_row0: Int32, raw_a: cute.Tensor,
                mat_b: cute.Tensor, b_row0: Int32, raw_b: cute.Tensor,
                scale_a: cute.Tensor, scale_a_word: Int32, raw_sa: cute.Tensor,
                scale_b: cute.Tensor, scale_b_word: Int32, raw_sb: cute.Tensor,
                k_words: Int32):
    """Start the copies of stage ``k_tile`` into ring slot ``slot``: the tile's packed A
    and B rows and the 512-byte scale tiles that hold their scales."""
    copy_rows(atom, cfg.bm, cfg.threads, tidx, k_tile, slot, mat_a, a_row0, raw_a, k_words)
    copy_rows(atom, cfg.bn, cfg.threads, tidx, k_tile, slot, mat_b, b_row0, raw_b, k_words)
    if tidx < SCALE_TILE_WORDS // 4:
        copy_chunk(atom, scale_a, scale_a_word + k_tile * SCALE_TILE_WORDS + tidx * 4,
                   raw_sa, slot * SCALE_TILE_WORDS + tidx * 4)
    elif tidx < SCALE_TILE_WORDS // 2:
        lane = tidx - SCALE_TILE_WORDS // 4
        copy_chunk(atom, scale_b, scale_b_word + k_tile * SCALE_TILE_WORDS + lane * 4,
                   raw_sb, slot * SCALE_TILE_WORDS + lane * 4)


@cute.jit
def decode_chunk(words, scale_bytes: cute.Tensor, scale_base, destination: cute.Tensor):
    """One 16-byte chunk of packed codes (``words``: 4 uint32, 32 codes) whose two 16-element
    blocks have their E4M3 scales at ``scale_bytes[scale_base]`` and ``[scale_base + 1]`` ->
    32 bf16 ``e2m1·s·2^-9`` (exact) stored into ``destination``."""
    decoded = cute.make_rmem_tensor((16,), Uint32)
    for half in cutlass.range_constexpr(2):
        scale = f32_from_e4m3_byte(Uint32(scale_bytes[scale_base + half]))
        scale_pair = bf16x2_splat_from_f32(scale * Float32(SCALE_PRE))
        for w in cutlass.range_constexpr(2):
            pairs = decode_word_bf16x2(words[half * 2 + w], scale_pair)
            for p in cutlass.range_constexpr(4):
                decoded[(half * 2 + w) * 4 + p] = pairs[p]
    cute.autovec_copy(cute.recast_tensor(decoded, BFloat16), destination)


@cute.jit
def decode_operand(cfg_rows: cutlass.Constexpr, threads: cutlass.Constexpr, tidx: Int32, slot: Int32,
                   raw: cute.Tensor, raw_scales_bytes: cute.Tensor, tile_row0: Int32,
                   smem: cute.Tensor, stage: Int32, live_rows: Int32):
    """Decode one ring slot (``cfg_rows`` rows × BK elements) into bf16 ``smem[:, :, stage]``.

    Each thread takes 16-byte chunks (32 codes, two scale blocks); ``tile_row0`` is the
    tile's first row within its 128-row scale tile. Rows from ``live_rows`` on are left
    undecoded: they only feed output rows that are never stored (tokens beyond T)."""
    for rep in cutlass.range_constexpr((cfg_rows * CHUNKS_PER_ROW + threads - 1) // threads):
        chunk = rep * threads + tidx
        r = chunk // CHUNKS_PER_ROW
        if chunk < cfg_rows * CHUNKS_PER_ROW and r < live_rows:
            q = chunk % CHUNKS_PER_ROW
            words = cute.make_tensor(raw.iterator + slot * (cfg_rows * WORDS_PER_ROW) + chunk * 4,
                                     cute.make_layout(4)).load()
            row_in_tile = tile_row0 + r
            scale_base = slot * (SCALE_TILE_WORDS * 4) + (row_in_tile % 32) * 16 + (row_in_tile // 32) * 4 + q * 2
            decode_chunk(words, raw_scales_bytes, scale_base, cute.local_tile(smem[r, None, stage], (32,), (q,)))


@cute.jit
def group_rows(offsets: cute.Tensor, g: Int32, tokens: Int32, padded_output: cutlass.Constexpr):
    """``(row_start, valid_rows)`` of group g: its first row in ``mat_a`` and how many of
    its rows produce output (all of them in the padded form, the T tokens in the z form;
    the host checked rows >= tokens for every group)."""
    row_start = Int32(0)
    if g > 0:
        row_start = offsets[g - 1]
    valid_rows = offsets[g] - row_start
    if cutlass.const_expr(not padded_output):
        valid_rows = tokens
    return row_start, valid_rows


@cute.jit
def tile_plan(cfg: cutlass.Constexpr, k: Int32, n_out: Int32, splits: Int32, split: Int32, g: Int32,
              m_tile: Int32, n_tile: Int32, row_start: Int32, valid_rows: Int32):
    """Where this CTA's tile lives: ``(k_words, k_begin, k_tiles, a_row0, b_row0, scale_a_word,
    scale_b_word, b_tile_row0, live_a)``. ``k_begin``/``k_tiles``: this split's share of the
    K stages; ``*_word``: the first swizzled scale tile (uint32 words) of each operand;
    ``live_a``: A rows worth decoding (>= BM means all)."""
    all_k_tiles = k // BK
    per_split = (all_k_tiles + splits - 1) // splits
    k_begin = split * per_split
    k_tiles = cutlass.min(per_split, all_k_tiles - k_begin)
    col_tiles = k // 64  # scale tiles per 128 rows (K % 64 == 0)
    n_padded = ((n_out + 127) // 128) * 128
    a_row0 = row_start + m_tile * cfg.bm
    b_row0 = g * n_out + n_tile * cfg.bn
    scale_a_word = (a_row0 // 128) * col_tiles * SCALE_TILE_WORDS
    scale_b_word = (g * (n_padded // 128) + (n_tile * cfg.bn) // 128) * col_tiles * SCALE_TILE_WORDS
    b_tile_row0 = (n_tile * cfg.bn) % 128
    live_a = valid_rows - m_tile * cfg.bm
    return k // 8, k_begin, k_tiles, a_row0, b_row0, scale_a_word, scale_b_word, b_tile_row0, live_a


def async_copy_atom():
    """16-byte ``cp.async.cg`` (L2 only: each byte is read once per CTA)."""
    return cute.make_copy_atom(
        cute.nvgpu.cpasync.CopyG2SOp(cache_mode=cute.nvgpu.cpasync.LoadCacheMode.GLOBAL), Uint32, num_bits_per_copy=128
    )


@cute.jit
def store_accumulators(acc: cute.Tensor, coords: cute.Tensor, cfg: cutlass.Constexpr, split_k: cutlass.Constexpr,
                       padded_output: cutlass.Constexpr, out: cute.Tensor, partials: cute.Tensor,
                       global_scale_a: cute.Tensor, global_scale_b: cute.Tensor, g: Int32, m_tile: Int32,
                       n_tile: Int32, split: Int32, tokens: Int32, valid_rows: Int32, row_stride: Int32,
                       n_out: Int32, row_start: Int32):
    """The epilogue: fp32 partial sums (split K, still scaled by 2^-18) or
    ``bf16(acc · gs_a·gs_b·2^18)`` at ``out[t·row_stride + base·N + n]``."""
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
def operand_tensors(mat_a_ptr: cute.Pointer, scale_a_ptr: cute.Pointer, mat_b_ptr: cute.Pointer,
                    scale_b_ptr: cute.Pointer, offsets_ptr: cute.Pointer, gs_a_ptr: cute.Pointer,
                    gs_b_ptr: cute.Pointer, out_ptr: cute.Pointer, partials_ptr: cute.Pointer,
                    rows_total: Int32, groups: Int32, n_out: Int32, k: Int32, tokens: Int32, splits: Int32):
    """The kernels' flat tensors over the host's pointers (shapes in the kernel docstring)."""
    col_tiles = k // 64
    n_padded = ((n_out + 127) // 128) * 128
    return (
        cute.make_tensor(mat_a_ptr, cute.make_layout(rows_total * (k // 8))),
        cute.make_tensor(scale_a_ptr, cute.make_layout(rows_total * col_tiles)),
        cute.make_tensor(mat_b_ptr, cute.make_layout(groups * n_out * (k // 8))),
        cute.make_tensor(scale_b_ptr, cute.make_layout(groups * n_padded * col_tiles)),
        cute.make_tensor(offsets_ptr, cute.make_layout(groups)),
        cute.make_tensor(gs_a_ptr, cute.make_layout(groups)),
        cute.make_tensor(gs_b_ptr, cute.make_layout(groups)),
        cute.make_tensor(out_ptr, cute.make_layout(rows_total * n_out * groups)),
        cute.make_tensor(partials_ptr, cute.make_layout(splits * tokens * groups * n_out)),
    )


def raw_ring_bytes(cfg: GemmConfig) -> int:
    """Shared memory of the cp.async ring: packed rows of both operands and their scale tiles."""
    return cfg.stages * ((cfg.bm + cfg.bn) * WORDS_PER_ROW + 2 * SCALE_TILE_WORDS) * 4


@cute.kernel
def grouped_gemm_kernel(
    mat_a: cute.Tensor,  # (R·K/8,) uint32
    scale_a: cute.Tensor,  # (R·Kbp/4,) uint32
    mat_b: cute.Tensor,  # (G·N·K/8,) uint32
    scale_b: cute.Tensor,  # (G·Np·Kbp/4,) uint32
    offsets: cute.Tensor,  # (G,) int32 cumulative padded row ends
    global_scale_a: cute.Tensor,  # (G,) fp32
    global_scale_b: cute.Tensor,  # (G,) fp32
    out: cute.Tensor,  # flat bf16
    partials: cute.Tensor,  # flat fp32 (splits, T, G, N) when split_k
    tokens: Int32,  # rows of each group to compute (z form; padded form: unused)
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
        raw_a = allocator.allocate_tensor(Uint32, cute.make_layout(cfg.stages * cfg.bm * WORDS_PER_ROW), 16)
        raw_b = allocator.allocate_tensor(Uint32, cute.make_layout(cfg.stages * cfg.bn * WORDS_PER_ROW), 16)
        raw_sa = allocator.allocate_tensor(Uint32, cute.make_layout(cfg.stages * SCALE_TILE_WORDS), 16)
        raw_sb = allocator.allocate_tensor(Uint32, cute.make_layout(cfg.stages * SCALE_TILE_WORDS), 16)
        sA = allocator.allocate_tensor(BFloat16, sA_layout, 16)
        sB = allocator.allocate_tensor(BFloat16, sB_layout, 16)
        raw_sa_bytes = cute.recast_tensor(raw_sa, Uint8)
        raw_sb_bytes = cute.recast_tensor(raw_sb, Uint8)

        k_words, k_begin, k_tiles, a_row0, b_row0, scale_a_word, scale_b_word, b_tile_row0, live_a = tile_plan(
            cfg, k, n_out, splits, split, g, m_tile, n_tile, row_start, valid_rows
        )
        a_tile_row0 = a_row0 % 128
        atom = async_copy_atom()

        for s in cutlass.range_constexpr(cfg.stages - 1):
            if s < k_tiles:
                issue_stage(atom, cfg, tidx, k_begin + s, Int32(s), mat_a, a_row0, raw_a, mat_b, b_row0, raw_b,
                            scale_a, scale_a_word, raw_sa, scale_b, scale_b_word, raw_sb, k_words)
            cute.arch.cp_async_commit_group()
        cute.arch.cp_async_wait_group(cfg.stages - 2)
        cute.arch.sync_threads()
        decode_operand(cfg.bm, cfg.threads, tidx, Int32(0), raw_a, raw_sa_bytes, a_tile_row0, sA, Int32(0), live_a)
        decode_operand(cfg.bn, cfg.threads, tidx, Int32(0), raw_b, raw_sb_bytes, b_tile_row0, sB, Int32(0), Int32(cfg.bn))

        thr_mma = tiled_mma.get_slice(tidx)
        tCsA = thr_mma.partition_A(sA)
        tCsB = thr_mma.partition_B(sB)
        tCrA = tiled_mma.make_fragment_A(tCsA[None, None, None, 0])
        tCrB = tiled_mma.make_fragment_B(tCsB[None, None, None, 0])
        coords = thr_mma.partition_C(cute.make_identity_tensor((cfg.bm, cfg.bn)))
        acc = cute.make_rmem_tensor(coords.shape, Float32)
        acc.fill(0.0)
        ldmatrix = cute.make_copy_atom(cute.nvgpu.warp.LdMatrix8x8x16bOp(False, 4), BFloat16)
        thr_copy_a = cute.make_tiled_copy_A(ldmatrix, tiled_mma).get_slice(tidx)
        thr_copy_b = cute.make_tiled_copy_B(ldmatrix, tiled_mma).get_slice(tidx)
        copy_s2r_a = cute.make_tiled_copy_A(ldmatrix, tiled_mma)
        copy_s2r_b = cute.make_tiled_copy_B(ldmatrix, tiled_mma)
        tCsA_view = thr_copy_a.partition_S(sA)
        tCrA_view = thr_copy_a.retile(tCrA)
        tCsB_view = thr_copy_b.partition_S(sB)
        tCrB_view = thr_copy_b.retile(tCrB)
        k_blocks = cute.size(tCrA, mode=[2])

        for k_tile in range(k_tiles):
            upcoming = k_tile + cfg.stages - 1
            if upcoming < k_tiles:
                issue_stage(atom, cfg, tidx, k_begin + upcoming, upcoming % cfg.stages, mat_a, a_row0, raw_a, mat_b, b_row0, raw_b,
                            scale_a, scale_a_word, raw_sa, scale_b, scale_b_word, raw_sb, k_words)
            cute.arch.cp_async_commit_group()
            cute.arch.cp_async_wait_group(cfg.stages - 2)
            cute.arch.sync_threads()
            if k_tile + 1 < k_tiles:
                slot = (k_tile + 1) % cfg.stages
                decode_operand(cfg.bm, cfg.threads, tidx, slot, raw_a, raw_sa_bytes, a_tile_row0, sA, (k_tile + 1) % 2, live_a)
                decode_operand(cfg.bn, cfg.threads, tidx, slot, raw_b, raw_sb_bytes, b_tile_row0, sB, (k_tile + 1) % 2, Int32(cfg.bn))
            stage = k_tile % 2
            for k_block in cutlass.range_constexpr(k_blocks):
                cute.copy(copy_s2r_a, tCsA_view[None, None, k_block, stage], tCrA_view[None, None, k_block])
                cute.copy(copy_s2r_b, tCsB_view[None, None, k_block, stage], tCrB_view[None, None, k_block])
                cute.gemm(tiled_mma, acc, tCrA[None, None, k_block], tCrB[None, None, k_block], acc)

        store_accumulators(acc, coords, cfg, split_k, padded_output, out, partials, global_scale_a, global_scale_b, g,
                           m_tile, n_tile, split, tokens, valid_rows, row_stride, n_out, row_start)


def _smem_layout(rows: int):
    atom = cute.make_composed_layout(cute.make_swizzle(3, 3, 3), 0, cute.make_layout((8, BK), stride=(BK, 1)))
    return cute.tile_to_shape(atom, (rows, BK, 2), (0, 1, 2))


@cute.jit
def grouped_gemm(
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
    """Host entry; ``kernels.launch.grouped_gemm`` passes the tensors behind the pointers."""
    mat_a, scale_a, mat_b, scale_b, offsets, gs_a, gs_b, out, partials = operand_tensors(
        mat_a_ptr, scale_a_ptr, mat_b_ptr, scale_b_ptr, offsets_ptr, gs_a_ptr, gs_b_ptr, out_ptr, partials_ptr,
        rows_total, groups, n_out, k, tokens, splits,
    )

    tiled_mma = cute.make_tiled_mma(
        cute.nvgpu.warp.MmaF16BF16Op(BFloat16, Float32, (16, 8, 16)),
        cute.make_layout((cfg.warps_m, cfg.warps_n, 1)),
        permutation_mnk=(cfg.warps_m * 16, cfg.warps_n * 16, 16),
    )
    sA_layout = _smem_layout(cfg.bm)
    sB_layout = _smem_layout(cfg.bn)
    smem_bytes = raw_ring_bytes(cfg) + (cute.cosize(sA_layout) + cute.cosize(sB_layout)) * 2 + 256
    grouped_gemm_kernel(
        mat_a, scale_a, mat_b, scale_b, offsets, gs_a, gs_b, out, partials, tokens, n_out, k, row_stride, m_tiles, splits,
        sA_layout, sB_layout, tiled_mma, cfg, padded_output, split_k,
    ).launch(grid=[n_out // cfg.bn, m_tiles * splits, groups], block=[cfg.threads, 1, 1], smem=smem_bytes, stream=stream)
