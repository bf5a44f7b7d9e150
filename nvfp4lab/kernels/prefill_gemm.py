"""CuTeDSL kernel: the NVFP4 grouped GEMM for prefill-sized token counts, warp-specialized.

``z (T, G, N) = bf16( Σ_k (e2m1·s)_x · (e2m1·s)_w · gs_x[g] · gs_w[g] )`` from the quantizer's
output (x) and the weights in the decode layout (:mod:`decode_layout`), computed as
``zᵀ = W · xᵀ`` with Hopper ``wgmma`` in **RS form**: the weights are the MMA's A operand
and come from registers, the tokens are its B operand and come from shared memory.

* **Tile.** A CTA computes 256 output channels × 128 tokens of one group g over all of K
  (``grid (N/256, ceil(T/128), G)``, 384 threads, one CTA per SM).
* **Warpgroup 0, the producer** (``PRODUCER_REGISTERS`` after ``setmaxnreg``): ``cp.async``
  copies of the packed x rows and their swizzled scale tile into a ``RAW_STAGES``-deep
  ring, then decodes each 64-K stage *once* into a 128-byte-swizzled bf16 tile of
  ``X_STAGES`` (``e2m1·s·2^-9``, exact: ``_ptx.decode_word_bf16x2``) and signals it on an
  mbarrier. Every x element is decoded once per 256 output channels.
* **Warpgroups 1–2, the consumers** (``CONSUMER_REGISTERS``): each owns 64 channels of each
  of the CTA's two 128-channel blocks (``m64n128k16``, 2 × 64 fp32 accumulators per
  thread). Each lane loads its A-fragment codes and re-encoded scales for a 64-K chunk
  and block in one 16-byte and one 8-byte load (the decode layout was built for exactly
  that) into a two-chunk register ring, decodes them straight into the wgmma register
  operand (13 integer operations per 8 codes, one ``mul.rn.bf16x2`` per pair — the decode
  kernel's ``decode_fragment``), and issues the MMAs on the x stage: one group of MMAs
  per (k-tile, block), two fragment buffers, and while group n runs the fragment of group
  n + 1 is decoded. A stage is released (mbarrier) once the MMAs that read it completed.
* **No CTA-wide barrier in the main loop**: full/empty mbarriers between the producer and
  the consumers (``cutlass.pipeline.PipelineAsync``), one 128-thread named barrier inside
  the producer (its threads share the scale tile of a raw stage).

Both operands carry ``2^-9`` (see :mod:`grouped_gemm`), so the epilogue multiplies by
``gs_x·gs_w·2^18`` and rounds once to bf16: the same numerics as the other kernels, fp32
accumulation in a different order (within 2 bf16 ulps of the exact product).

Needs ``K % 64 == 0`` and ``N % 256 == 0``; rows of x for tokens ≥ T inside a tile are read
from the quantizer's padding (its buffers hold ``round_up(T, 128)`` rows per group) and only
affect output columns that are never stored.
"""

from __future__ import annotations

import cuda.bindings.driver as cuda
import cutlass
import cutlass.cute as cute
import cutlass.pipeline as pipeline
import cutlass.utils.hopper_helpers as sm90_utils
from cutlass import BFloat16, Float32, Int32, Uint8, Uint32
from cutlass.cute.nvgpu import OperandMajorMode, warpgroup
from cutlass.tensor_utils import LayoutEnum

from nvfp4lab.kernels._memory import vector_at
from nvfp4lab.kernels.decode_gemm import decode_fragment, scale_multipliers
from nvfp4lab.kernels.decode_layout import K_CHUNK
from nvfp4lab.kernels.grouped_gemm import ALPHA_POST, async_copy_atom, copy_chunk, decode_chunk

M_BLOCKS = 2  # 128-channel blocks per CTA: the consumer schedule below needs exactly 2 (one block with
# 256-token tiles, measured 10 % slower on the H200: twice the x decode per MAC, was not kept)
CHANNELS = 128 * M_BLOCKS  # output channels per CTA (two consumer warpgroups of 64 per block)
TOKENS = 256 // M_BLOCKS  # tokens per CTA (the wgmma N)
BANDS = TOKENS // 128  # 128-row scale-tile bands per x stage
BK = K_CHUNK  # K per stage: 64
PRODUCER_THREADS = 128  # one producer warpgroup (two do not fit: ptxas then caps every thread at 128 registers)
THREADS = PRODUCER_THREADS + 256
X_STAGES = 3  # decoded bf16 x stages (16 KB each); 2 and 4 measured within 0.5 % with 256-token tiles (H200)
RAW_STAGES = 4  # packed x stages (4 KB of codes + one 512-byte scale tile each)
LAUNCH_REGISTERS = 65536 // THREADS // 8 * 8  # what ptxas allocates per thread at launch: 168
PRODUCER_REGISTERS = 56  # after setmaxnreg; 80, 96 and 112 measured the same (H200)
#: what the producer's registers leave the consumers of the CTA's pool (setmaxnreg only moves
#: registers within the pool allocated at launch: asking for more blocks forever): 224
CONSUMER_REGISTERS = min(256, (LAUNCH_REGISTERS * THREADS - PRODUCER_THREADS * PRODUCER_REGISTERS) // 256 // 8 * 8)
W_RING = 2  # 64-K weight chunks in flight per consumer lane
WORDS_PER_ROW = BK // 8  # packed x words per row and stage
CHUNKS_PER_ROW = BK // 32  # 16-byte chunks per row and stage
RAW_WORDS = TOKENS * WORDS_PER_ROW  # packed x words per raw stage
SCALE_TILE_WORDS = 128  # one 128-row × 4-block swizzled scale tile
RAW_SCALE_WORDS = BANDS * SCALE_TILE_WORDS  # a stage's scale tiles (one per 128 rows)
PRODUCER_BARRIER = 1  # named barrier id of the producer warpgroup


@cute.jit
def copy_x_stage(atom, ptid: Int32, k_tile: Int32, slot: Int32, a_data: cute.Tensor, a_scales: cute.Tensor,
                 row0: Int32, scale_word0: Int32, band_words: Int32, k_words: Int32, live: Int32,
                 raw: cute.Tensor, raw_scales: cute.Tensor):
    """Producer thread ``ptid``: start the cp.async of stage ``k_tile`` into ring ``slot``:
    its chunks ``c = rep·128 + ptid`` (row ``c // 2``, half ``c % 2``) of the tile's
    ``TOKENS`` packed rows, and (threads ``0 .. 32·BANDS - 1``) the stage's 512-byte scale
    tiles, one per 128-row band. A band is copied only if it holds a token (``128·band <
    live``: always true with 128-token tiles, one band). The rows lie inside the group's
    ``round_up(T, 128)`` quantizer rows (rows beyond T hold its padding)."""
    for rep in cutlass.range_constexpr(TOKENS * CHUNKS_PER_ROW // PRODUCER_THREADS):
        if (rep * PRODUCER_THREADS // 256) * 128 < live:
            chunk = rep * PRODUCER_THREADS + ptid
            row = chunk // CHUNKS_PER_ROW
            q = chunk % CHUNKS_PER_ROW
            copy_chunk(atom, a_data, (row0 + row) * k_words + k_tile * WORDS_PER_ROW + q * 4,
                       raw, slot * RAW_WORDS + chunk * 4)
    if ptid < BANDS * SCALE_TILE_WORDS // 4:
        band = ptid // (SCALE_TILE_WORDS // 4)
        if band * 128 < live:
            lane = ptid % (SCALE_TILE_WORDS // 4)
            copy_chunk(atom, a_scales, scale_word0 + band * band_words + k_tile * SCALE_TILE_WORDS + lane * 4,
                       raw_scales, slot * RAW_SCALE_WORDS + band * SCALE_TILE_WORDS + lane * 4)


@cute.jit
def decode_x_stage(ptid: Int32, slot: Int32, raw: cute.Tensor, raw_scale_bytes: cute.Tensor, sx: cute.Tensor,
                   stage: Int32, live: Int32):
    """Producer thread ``ptid``: decode the chunks it copied (``copy_x_stage``) from ring
    ``slot`` into bf16 ``sx[row, :, stage]`` (``e2m1·s·2^-9``; two scale blocks per chunk,
    read from the swizzled tile: byte ``(r%32)·16 + (r%128 // 32)·4 + block``)."""
    for rep in cutlass.range_constexpr(TOKENS * CHUNKS_PER_ROW // PRODUCER_THREADS):
        band = rep * PRODUCER_THREADS // 256  # the 128-row half this repetition's chunks are in
        if band * 128 < live:
            chunk = rep * PRODUCER_THREADS + ptid
            row = chunk // CHUNKS_PER_ROW
            q = chunk % CHUNKS_PER_ROW
            words = cute.make_tensor(raw.iterator + slot * RAW_WORDS + chunk * 4, cute.make_layout(4)).load()
            scale_base = (slot * RAW_SCALE_WORDS * 4 + band * SCALE_TILE_WORDS * 4 + (row % 32) * 16
                          + ((row % 128) // 32) * 4 + q * 2)
            decode_chunk(words, raw_scale_bytes, scale_base, cute.local_tile(sx[row, None, stage], (32,), (q,)))


@cute.jit
def load_weight_chunk(words: cute.Tensor, scales: cute.Tensor, ring_w: cute.Tensor, ring_s: cute.Tensor,
                      slot: cutlass.Constexpr, chunk: Int32, k_tiles: Int32, tile_base: Int32, lane: Int32):
    """One lane's decode-layout bytes of 64-K chunk ``chunk`` (clamped to the last one, so
    the loop needs no branch): 4 code words and 2 words of re-encoded scales."""
    base = tile_base + cutlass.min(chunk, k_tiles - 1)
    code_words = vector_at(words, base * 128 + lane * 4, 4).load()
    scale_words = vector_at(scales, base * 16 + (lane // 4) * 2, 2).load()
    for j in cutlass.range_constexpr(4):
        ring_w[slot * 4 + j] = code_words[j]
    for j in cutlass.range_constexpr(2):
        ring_s[slot * 2 + j] = scale_words[j]


@cute.jit
def decode_weight_chunk(ring_w: cute.Tensor, ring_s: cute.Tensor, slot: cutlass.Constexpr, fragment: cute.Tensor):
    """Ring ``slot`` -> the wgmma A operand of its four k16 steps: register ``4·step + i``
    of ``fragment`` (a uint32 view) is decode-layout register i of that step."""
    for step in cutlass.range_constexpr(4):
        registers = decode_fragment(ring_w[slot * 4 + step], scale_multipliers(ring_s[slot * 2 + step // 2], (2 * step) % 4))
        for i in cutlass.range_constexpr(4):
            fragment[step * 4 + i] = registers[i]


@cute.kernel
def prefill_gemm_kernel(
    a_data: cute.Tensor,  # (G·Mp·K/8,) uint32: the quantizer's packed codes, Mp rows per group
    a_scales: cute.Tensor,  # (G·Mp·Kbp/4,) uint32: its swizzled scale bytes
    words: cute.Tensor,  # decode layout (G, N/16, K/64, 32, 4) uint32
    scales: cute.Tensor,  # decode layout (G, N/16, K/64, 8, 2) uint32
    gs_a: cute.Tensor,  # (G,) fp32: the global scales the quantizer used
    gs_w: cute.Tensor,  # (G,) fp32
    out: cute.Tensor,  # (T·G·N,) bf16
    tokens: Int32,
    groups: Int32,
    n_out: Int32,
    k: Int32,
    rows_per_group: Int32,
    sx_layout: cute.ComposedLayout,
    tiled_mma: cute.TiledMma,
):
    tidx, _, _ = cute.arch.thread_idx()
    n_tile, t_tile, g = cute.arch.block_idx()
    warpgroup_index = cute.arch.make_warp_uniform(tidx // 128)
    k_tiles = k // BK
    live = tokens - t_tile * TOKENS  # tokens of this tile to store (> 0; may exceed TOKENS)

    allocator = cutlass.memory.SmemAllocator()
    barriers = allocator.allocate_array(cutlass.Int64, 2 * X_STAGES, byte_alignment=8)
    sx = allocator.allocate_tensor(BFloat16, sx_layout.outer, 1024, swizzle=sx_layout.inner)
    raw = allocator.allocate_tensor(Uint32, cute.make_layout(RAW_STAGES * RAW_WORDS), 16)
    raw_scales = allocator.allocate_tensor(Uint32, cute.make_layout(RAW_STAGES * RAW_SCALE_WORDS), 16)
    x_pipeline = pipeline.PipelineAsync.create(
        num_stages=X_STAGES,
        producer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread, PRODUCER_THREADS),
        consumer_group=pipeline.CooperativeGroup(pipeline.Agent.Thread, 256),
        barrier_storage=barriers,
    )

    if warpgroup_index == 0:
        cute.arch.setmaxregister_decrease(PRODUCER_REGISTERS)
        ptid = tidx
        k_words = k // 8
        col_tiles = k // 64  # scale tiles per 128-row band
        row0 = g * rows_per_group + t_tile * TOKENS
        band_words = col_tiles * SCALE_TILE_WORDS
        scale_word0 = (row0 // 128) * band_words
        raw_scale_bytes = cute.recast_tensor(raw_scales, Uint8)
        atom = async_copy_atom()
        for s in cutlass.range_constexpr(RAW_STAGES - 1):
            if s < k_tiles:
                copy_x_stage(atom, ptid, Int32(s), Int32(s), a_data, a_scales, row0, scale_word0, band_words, k_words,
                             live, raw, raw_scales)
            cute.arch.cp_async_commit_group()
        state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer, X_STAGES)
        for k_tile in range(k_tiles):
            cute.arch.cp_async_wait_group(RAW_STAGES - 2)  # this thread's copies of stage k_tile landed
            # everyone's copies of k_tile are visible, and everyone finished decoding k_tile - 1,
            # whose ring slot the next copy overwrites
            cute.arch.barrier(barrier_id=PRODUCER_BARRIER, number_of_threads=PRODUCER_THREADS)
            upcoming = k_tile + RAW_STAGES - 1
            if upcoming < k_tiles:
                copy_x_stage(atom, ptid, upcoming, upcoming % RAW_STAGES, a_data, a_scales, row0, scale_word0,
                             band_words, k_words, live, raw, raw_scales)
            cute.arch.cp_async_commit_group()
            x_pipeline.producer_acquire(state)
            decode_x_stage(ptid, k_tile % RAW_STAGES, raw, raw_scale_bytes, sx, state.index, live)
            cute.arch.fence_proxy("async.shared", space="cta")  # generic-proxy stores -> wgmma reads
            x_pipeline.producer_commit(state)
            state.advance()
    else:
        cute.arch.setmaxregister_increase(CONSUMER_REGISTERS)
        ctid = tidx - PRODUCER_THREADS
        warp = ctid // 32  # 0..7: m-tile of 16 channels within each 128-channel block
        lane = ctid % 32
        m_tiles_total = n_out // 16
        tile_bases = [(g * m_tiles_total + n_tile * (CHANNELS // 16) + j * 8 + warp) * k_tiles for j in range(M_BLOCKS)]

        thr_mma = tiled_mma.get_slice(ctid)
        tCrB = tiled_mma.make_fragment_B(thr_mma.partition_B(sx))
        coords = thr_mma.partition_C(cute.make_identity_tensor((128, TOKENS)))
        accumulators = [cute.make_rmem_tensor(tiled_mma.partition_shape_C((128, TOKENS)), Float32)
                        for _ in range(M_BLOCKS)]
        for acc in accumulators:
            acc.fill(0.0)
        tiled_mma.set(warpgroup.Field.ACCUMULATE, True)
        a_shape = thr_mma.partition_shape_A((128, BK))
        fragments = [tiled_mma.make_fragment_A(a_shape) for _ in range(2)]
        fragment_words = [cute.recast_tensor(f, Uint32) for f in fragments]
        k_blocks = cute.size(fragments[0], mode=[2])

        # register ring of packed weights: chunk c of m-block j in slot (c % 2, j)
        ring_w = cute.make_rmem_tensor((W_RING * M_BLOCKS * 4,), Uint32)
        ring_s = cute.make_rmem_tensor((W_RING * M_BLOCKS * 2,), Uint32)
        for s in cutlass.range_constexpr(W_RING):
            for j in cutlass.range_constexpr(M_BLOCKS):
                load_weight_chunk(words, scales, ring_w, ring_s, s * M_BLOCKS + j, Int32(s), k_tiles, tile_bases[j],
                                  lane)
        decode_weight_chunk(ring_w, ring_s, 0, fragment_words[0])

        # Groups of MMAs, in order (k-tile, m-block); group n reads fragment buffer n % 2. After
        # issuing group n: wait for group n - 1, then decode group n + 1 into its buffer.
        read_state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Consumer, X_STAGES)
        release_state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Consumer, X_STAGES)
        for pair in range((k_tiles + 1) // 2):
            for half in cutlass.range_constexpr(2):  # unrolled: fragment buffers and ring slots are static
                k_tile = pair * 2 + half
                if k_tile < k_tiles:
                    for j in cutlass.range_constexpr(M_BLOCKS):
                        buffer = (half * M_BLOCKS + j) % 2
                        if cutlass.const_expr(j == 0):
                            x_pipeline.consumer_wait(read_state)
                        warpgroup.fence()
                        for k_block in cutlass.range_constexpr(k_blocks):
                            cute.gemm(tiled_mma, accumulators[j], fragments[buffer][None, None, k_block],
                                      tCrB[None, None, k_block, read_state.index], accumulators[j])
                        warpgroup.commit_group()
                        if cutlass.const_expr(j == M_BLOCKS - 1):
                            read_state.advance()
                        warpgroup.wait_group(1)  # group n - 1 is done: its fragment buffer is free
                        if cutlass.const_expr(j == 0):
                            if k_tile > 0:  # ... and it was the last group of k_tile - 1: free its x stage
                                x_pipeline.consumer_release(release_state)
                                release_state.advance()
                        # decode group n + 1: (k_tile, j + 1), or (k_tile + 1, 0)
                        if cutlass.const_expr(j + 1 < M_BLOCKS):
                            decode_weight_chunk(ring_w, ring_s, half * M_BLOCKS + j + 1, fragment_words[1 - buffer])
                            if cutlass.const_expr(j + 1 == M_BLOCKS - 1):  # chunk k_tile fully decoded: refill
                                for jj in cutlass.range_constexpr(M_BLOCKS):
                                    load_weight_chunk(words, scales, ring_w, ring_s, half * M_BLOCKS + jj,
                                                      k_tile + W_RING, k_tiles, tile_bases[jj], lane)
                        elif k_tile + 1 < k_tiles:
                            decode_weight_chunk(ring_w, ring_s, (1 - half) * M_BLOCKS, fragment_words[1 - buffer])
        warpgroup.wait_group(0)
        x_pipeline.consumer_release(release_state)

        alpha = (gs_a[g] * gs_w[g]) * Float32(ALPHA_POST)
        row_stride = groups * n_out
        t0 = t_tile * TOKENS
        for j in cutlass.range_constexpr(M_BLOCKS):
            base = g * n_out + n_tile * CHANNELS + j * 128
            for i in cutlass.range(cute.size(accumulators[j]), unroll_full=True):
                channel, t = coords[i]
                if t < live:
                    out[(t0 + t) * row_stride + base + channel] = (accumulators[j][i] * alpha).to(BFloat16)


@cute.jit
def prefill_gemm(
    a_data_ptr: cute.Pointer,
    a_scales_ptr: cute.Pointer,
    words_ptr: cute.Pointer,
    scales_ptr: cute.Pointer,
    gs_a_ptr: cute.Pointer,
    gs_w_ptr: cute.Pointer,
    out_ptr: cute.Pointer,
    tokens: Int32,
    groups: Int32,
    n_out: Int32,
    k: Int32,
    rows_per_group: Int32,
    stream: cuda.CUstream,
):
    """Host entry (``kernels.launch.prefill_gemm`` passes the tensors behind the pointers)."""
    col_tiles = k // 64
    a_data = cute.make_tensor(a_data_ptr, cute.make_layout(groups * rows_per_group * (k // 8)))
    a_scales = cute.make_tensor(a_scales_ptr, cute.make_layout(groups * rows_per_group * col_tiles))
    words = cute.make_tensor(words_ptr, cute.make_layout(groups * n_out * (k // 8)))
    scales = cute.make_tensor(scales_ptr, cute.make_layout(groups * n_out * (k // 64)))
    gs_a = cute.make_tensor(gs_a_ptr, cute.make_layout(groups))
    gs_w = cute.make_tensor(gs_w_ptr, cute.make_layout(groups))
    out = cute.make_tensor(out_ptr, cute.make_layout(tokens * groups * n_out))

    tiled_mma = sm90_utils.make_trivial_tiled_mma(
        BFloat16, BFloat16, OperandMajorMode.K, OperandMajorMode.K, Float32, (2, 1, 1), (64, TOKENS),
        a_source=warpgroup.OperandSource.RMEM,
    )
    sx_layout = sm90_utils.make_smem_layout_b(LayoutEnum.ROW_MAJOR, (128, TOKENS, BK), BFloat16, X_STAGES)
    smem_bytes = (cute.cosize(sx_layout) * 2 + RAW_STAGES * (RAW_WORDS + RAW_SCALE_WORDS) * 4
                  + 2 * X_STAGES * 8 + 2048)
    prefill_gemm_kernel(a_data, a_scales, words, scales, gs_a, gs_w, out, tokens, groups, n_out, k, rows_per_group,
                        sx_layout, tiled_mma).launch(
        grid=[n_out // CHANNELS, (tokens + TOKENS - 1) // TOKENS, groups], block=[THREADS, 1, 1], smem=smem_bytes,
        stream=stream, min_blocks_per_mp=1)
