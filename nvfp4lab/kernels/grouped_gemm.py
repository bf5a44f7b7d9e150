"""CuTeDSL kernel: the NVFP4 grouped GEMM on Hopper (sm_90a), decoding FP4 in the kernel.

Hopper has no FP4 tensor cores, so each CTA streams packed E2M1 bytes and their E4M3
block scales, decodes them *exactly* to bf16 in shared memory (every E2M1 × E4M3
product has at most 5 significant bits), and runs bf16 tensor-core MMA
(``mma.sync.m16n8k16``, fp32 accumulation). The epilogue multiplies by
``gs_a[g] · gs_b[g]`` and writes bf16 (docs/numerics.md §3)::

    out = bf16( acc · (gs_a[g] · gs_b[g]) ),   acc = Σ_k (e2m1·s)_a · (e2m1·s)_b   (fp32)

A CTA computes a ``BM × BN`` tile of one group: rows are tokens of group g (row
``offsets[g-1] + t`` of ``mat_a``), columns are output channels. The K loop keeps two
shared-memory stages: while the MMAs of stage k run, the packed bytes of stage k+1 are
already in flight into registers; they are decoded into the other stage afterwards.

Output addressing covers both callers without copies: ``out[t·row_stride + base_g·N + n]``
with ``base_g = g`` for ``z (T, G, N)`` (row_stride = G·N) and ``base_g = offsets[g-1]``
for the padded ``(Σ Mp_g, N)`` form (row_stride = N).

Decoding one nibble ``c`` (no table, no branch): the bf16/fp32 bit pattern
``(c&7)<<22 | (c&8)<<28`` is the E2M1 value × 2^-126 (E2M1's exponent field sits where
fp32's does, with bias 1 instead of 127), so one exact multiply by 2^126 and one by
the block scale give the decoded value.
"""

from __future__ import annotations

import cuda.bindings.driver as cuda
import cutlass
import cutlass.cute as cute
from cutlass import BFloat16, Float32, Int32, Uint32

from nvfp4lab.kernels._ptx import f32_from_e4m3_byte, mul_rn

BM, BN, BK = 128, 128, 64  # tokens × output channels × K elements per stage
STAGES = 2
ATOM_LAYOUT = (2, 2, 1)  # warps along M, N, K
THREADS = 32 * ATOM_LAYOUT[0] * ATOM_LAYOUT[1] * ATOM_LAYOUT[2]
WORDS_PER_ROW = BK // 8  # packed uint32 words (8 codes each) per row and stage
BLOCKS_PER_STAGE = BK // 16
TWO_POW_126 = 2.0**126


@cute.jit
def decode_code(code: Uint32, scale: Float32) -> BFloat16:
    """E2M1 code (low 4 bits of ``code``) × ``scale`` as an exact bf16."""
    bits = ((code & Uint32(7)) << Uint32(22)) | ((code & Uint32(8)) << Uint32(28))
    value = mul_rn(bits.bitcast(Float32), Float32(TWO_POW_126))
    return mul_rn(value, scale).to(BFloat16)


@cute.jit
def swizzled_word_offset(row: Int32, block_col: Int32, col_tiles: Int32) -> Int32:
    """Offset, in 4-byte words, of scales ``(row, block_col..block_col+3)`` (block_col a
    multiple of 4) in the 128×4 tiled layout."""
    tile = (row // 128) * col_tiles + block_col // 4
    return tile * 128 + (row % 32) * 4 + (row % 128) // 32


@cute.jit
def load_row_stage(packed: cute.Tensor, scales_u32: cute.Tensor, scale_base: Int32, row: Int32, scale_row: Int32,
                   valid: cutlass.Boolean, k_tile: Int32, block_cols: Int32, words: cute.Tensor, scale_word: cute.Tensor):
    """Fetch row ``row``'s packed words and its 4 scale bytes (row ``scale_row`` of the
    swizzled matrix starting at word ``scale_base``) for stage ``k_tile`` into registers
    (zeros where the row or the K blocks are out of range)."""
    col_tiles = (block_cols + 3) // 4
    kb0 = k_tile * BLOCKS_PER_STAGE
    for w in cutlass.range_constexpr(WORDS_PER_ROW):
        words[w] = Uint32(0)
        if valid and kb0 + w // 2 < block_cols:
            words[w] = packed[row, k_tile * WORDS_PER_ROW + w]
    scale_word[0] = Uint32(0)
    if valid:
        scale_word[0] = scales_u32[scale_base + swizzled_word_offset(scale_row, kb0, col_tiles)]


@cute.jit
def decode_row_stage(words: cute.Tensor, scale_word: cute.Tensor, smem_row: cute.Tensor):
    """Decode ``BK`` elements of one row into ``smem_row`` (BK bf16, a swizzled view).
    Scale bytes of blocks beyond K are zero, so their elements decode to zero."""
    for blk in cutlass.range_constexpr(BLOCKS_PER_STAGE):
        scale = f32_from_e4m3_byte((scale_word[0] >> Uint32(8 * blk)) & Uint32(0xFF))
        for w in cutlass.range_constexpr(2):
            word = words[blk * 2 + w]
            chunk = cute.make_rmem_tensor((8,), BFloat16)
            for e in cutlass.range_constexpr(8):
                chunk[e] = decode_code(word >> Uint32(4 * e), scale)
            column = blk * 16 + w * 8
            for e in cutlass.range_constexpr(8):
                smem_row[column + e] = chunk[e]


@cute.kernel
def grouped_gemm_kernel(
    mat_a: cute.Tensor,  # (R, K/8) uint32
    scale_a: cute.Tensor,  # (R·Kbp/4,) uint32
    mat_b: cute.Tensor,  # (G·N, K/8) uint32
    scale_b: cute.Tensor,  # (G·Np·Kbp/4,) uint32
    offsets: cute.Tensor,  # (G,) int32 cumulative padded row ends
    global_scale_a: cute.Tensor,  # (G,) fp32
    global_scale_b: cute.Tensor,  # (G,) fp32
    out: cute.Tensor,  # flat bf16
    tokens: Int32,  # rows of each group to compute (z form) or -1 (padded form: all)
    n_out: Int32,
    block_cols: Int32,
    row_stride: Int32,
    sA_layout: cute.ComposedLayout,
    sB_layout: cute.ComposedLayout,
    tiled_mma: cute.TiledMma,
    padded_output: cutlass.Constexpr,
):
    tidx, _, _ = cute.arch.thread_idx()
    n_tile, m_tile, g = cute.arch.block_idx()
    row_start = Int32(0)
    if g > 0:
        row_start = offsets[g - 1]
    rows = offsets[g] - row_start
    valid_rows = rows
    if cutlass.const_expr(not padded_output):
        valid_rows = tokens  # the host checked rows >= tokens for every group
    if m_tile * BM < valid_rows:
        smem = cutlass.memory.SmemAllocator()
        sA = smem.allocate_tensor(BFloat16, sA_layout, 16)
        sB = smem.allocate_tensor(BFloat16, sB_layout, 16)

        col_tiles = (block_cols + 3) // 4
        n_padded = ((n_out + 127) // 128) * 128
        scale_b_base = g * n_padded * col_tiles  # words of scale_b before group g

        # Each thread stages one row of A and one row of B per K step.
        a_row_in_group = m_tile * BM + tidx
        a_valid = a_row_in_group < rows
        b_row = n_tile * BN + tidx
        b_valid = b_row < n_out
        words_a = cute.make_rmem_tensor((WORDS_PER_ROW,), Uint32)
        words_b = cute.make_rmem_tensor((WORDS_PER_ROW,), Uint32)
        scale_word_a = cute.make_rmem_tensor((1,), Uint32)
        scale_word_b = cute.make_rmem_tensor((1,), Uint32)

        k_tiles = (block_cols + BLOCKS_PER_STAGE - 1) // BLOCKS_PER_STAGE
        a_row = row_start + a_row_in_group
        load_row_stage(mat_a, scale_a, Int32(0), a_row, a_row, a_valid, Int32(0), block_cols, words_a, scale_word_a)
        load_row_stage(mat_b, scale_b, scale_b_base, g * n_out + b_row, b_row, b_valid, Int32(0), block_cols, words_b, scale_word_b)
        decode_row_stage(words_a, scale_word_a, sA[tidx, None, 0])
        decode_row_stage(words_b, scale_word_b, sB[tidx, None, 0])
        cute.arch.sync_threads()

        thr_mma = tiled_mma.get_slice(tidx)
        tCsA = thr_mma.partition_A(sA)
        tCsB = thr_mma.partition_B(sB)
        tCrA = tiled_mma.make_fragment_A(tCsA[None, None, None, 0])
        tCrB = tiled_mma.make_fragment_B(tCsB[None, None, None, 0])
        coords = thr_mma.partition_C(cute.make_identity_tensor((BM, BN)))
        acc = cute.make_rmem_tensor(coords.shape, Float32)
        acc.fill(0.0)

        copy_s2r_a = cute.make_tiled_copy_A(
            cute.make_copy_atom(cute.nvgpu.warp.LdMatrix8x8x16bOp(False, 4), BFloat16), tiled_mma
        )
        copy_s2r_b = cute.make_tiled_copy_B(
            cute.make_copy_atom(cute.nvgpu.warp.LdMatrix8x8x16bOp(False, 4), BFloat16), tiled_mma
        )
        thr_copy_a = copy_s2r_a.get_slice(tidx)
        thr_copy_b = copy_s2r_b.get_slice(tidx)
        tCsA_view = thr_copy_a.partition_S(sA)
        tCrA_view = thr_copy_a.retile(tCrA)
        tCsB_view = thr_copy_b.partition_S(sB)
        tCrB_view = thr_copy_b.retile(tCrB)
        k_blocks = cute.size(tCrA, mode=[2])

        for k_tile in range(k_tiles):
            stage = k_tile % STAGES
            has_next = k_tile + 1 < k_tiles
            if has_next:
                load_row_stage(mat_a, scale_a, Int32(0), a_row, a_row, a_valid, k_tile + 1, block_cols, words_a, scale_word_a)
                load_row_stage(mat_b, scale_b, scale_b_base, g * n_out + b_row, b_row, b_valid, k_tile + 1, block_cols,
                               words_b, scale_word_b)
            for k_block in cutlass.range_constexpr(k_blocks):
                cute.copy(copy_s2r_a, tCsA_view[None, None, k_block, stage], tCrA_view[None, None, k_block])
                cute.copy(copy_s2r_b, tCsB_view[None, None, k_block, stage], tCrB_view[None, None, k_block])
                cute.gemm(tiled_mma, acc, tCrA[None, None, k_block], tCrB[None, None, k_block], acc)
            if has_next:
                next_stage = (k_tile + 1) % STAGES
                decode_row_stage(words_a, scale_word_a, sA[tidx, None, next_stage])
                decode_row_stage(words_b, scale_word_b, sB[tidx, None, next_stage])
            cute.arch.sync_threads()

        alpha = global_scale_a[g] * global_scale_b[g]
        base = g
        if cutlass.const_expr(padded_output):
            base = row_start
        for i in cutlass.range(cute.size(acc), unroll_full=True):
            m, n = coords[i]
            t = m_tile * BM + m
            col = n_tile * BN + n
            if t < valid_rows and col < n_out:
                out[t * row_stride + base * n_out + col] = (acc[i] * alpha).to(BFloat16)


def _smem_layout(rows: int):
    atom = cute.make_composed_layout(
        cute.make_swizzle(3, 3, 3), 0, cute.make_layout((8, BK), stride=(BK, 1))
    )
    return cute.tile_to_shape(atom, (rows, BK, STAGES), (0, 1, 2))


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
    rows_total: Int32,
    groups: Int32,
    n_out: Int32,
    k: Int32,
    tokens: Int32,
    m_tiles: Int32,
    row_stride: Int32,
    stream: cuda.CUstream,
    padded_output: cutlass.Constexpr,
):
    """Host entry; see ``kernels.launch.run_grouped_gemm`` for the tensors behind the pointers."""
    block_cols = k // 16
    col_tiles = (block_cols + 3) // 4
    n_padded = ((n_out + 127) // 128) * 128
    mat_a = cute.make_tensor(mat_a_ptr, cute.make_layout((rows_total, k // 8), stride=(k // 8, 1)))
    scale_a = cute.make_tensor(scale_a_ptr, cute.make_layout(rows_total * col_tiles))
    mat_b = cute.make_tensor(mat_b_ptr, cute.make_layout((groups * n_out, k // 8), stride=(k // 8, 1)))
    scale_b = cute.make_tensor(scale_b_ptr, cute.make_layout(groups * n_padded * col_tiles))
    offsets = cute.make_tensor(offsets_ptr, cute.make_layout(groups))
    gs_a = cute.make_tensor(gs_a_ptr, cute.make_layout(groups))
    gs_b = cute.make_tensor(gs_b_ptr, cute.make_layout(groups))
    out = cute.make_tensor(out_ptr, cute.make_layout(rows_total * n_out * groups))

    tiled_mma = cute.make_tiled_mma(
        cute.nvgpu.warp.MmaF16BF16Op(BFloat16, Float32, (16, 8, 16)),
        cute.make_layout(ATOM_LAYOUT),
        permutation_mnk=(ATOM_LAYOUT[0] * 16, ATOM_LAYOUT[1] * 16, 16),
    )
    sA_layout = _smem_layout(BM)
    sB_layout = _smem_layout(BN)
    smem_bytes = (cute.cosize(sA_layout) + cute.cosize(sB_layout)) * 2 + 64
    grouped_gemm_kernel(
        mat_a, scale_a, mat_b, scale_b, offsets, gs_a, gs_b, out, tokens, n_out, block_cols, row_stride,
        sA_layout, sB_layout, tiled_mma, padded_output,
    ).launch(grid=[(n_out + BN - 1) // BN, m_tiles, groups], block=[THREADS, 1, 1], smem=smem_bytes, stream=stream)
