"""CuTeDSL kernel: the NVFP4 grouped GEMM for prefill-sized token counts, warp-specialized.

``z (T, G, N) = bf16( Σ_k (e2m1·s)_x · (e2m1·s)_w · gs_x[g] · gs_w[g] )`` from the quantizer's
output (x) and the weights in the decode layout (:mod:`decode_layout`), computed as
``zᵀ = W · xᵀ`` with Hopper ``wgmma`` in **RS form**: the weights are the MMA's A operand
and come from registers, the tokens are its B operand and come from shared memory.

* **Tile.** A CTA computes 256 output channels × 128 tokens (64 for T <= 64:
  ``launch.prefill_tile_tokens``) of one group g over ``K / splits``
  (``grid (N/256, ceil(T/tile), G·splits)``, 384 threads, one CTA per SM). ``splits = 1``
  for large T; for T = 33–512, where ``N/256 · ceil(T/128) · G`` CTAs would leave most SMs
  idle, ``launch.prefill_splits`` splits K so that the grid fills the card.
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
* **Split K, deterministic, in the same launch** (``split_k``): each consumer thread stores
  its fp32 accumulators as 16-byte vectors to ``partials`` (one ``(elements, 256 threads)``
  slab per split and tile: coalesced), the consumers bump a per-tile counter, and the last
  CTA of a tile adds the slabs in split order 0, 1, … (each thread the elements it owns,
  per block and split all its loads in flight together), applies the epilogue and resets the counter to
  zero for the next launch: no second launch, results independent of CTA timing.
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
TOKENS = 256 // M_BLOCKS  # tokens per CTA (the wgmma N) for T > 64
SMALL_TOKENS = 64  # tokens per CTA for T <= 64 (half the MMAs and x decode of a 128-token tile)
TILE_TOKENS = (SMALL_TOKENS, TOKENS)  # the compiled token tiles
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
SCALE_TILE_WORDS = 128  # one 128-row × 4-block swizzled scale tile
PRODUCER_BARRIER = 1  # named barrier id of the producer warpgroup
CONSUMER_BARRIER = 2  # named barrier id of the two consumer warpgroups (the split-K epilogue)
CONSUMER_THREADS = 256


def raw_words(tile_tokens: int) -> int:
    """Packed x words of one raw stage of a ``tile_tokens``-token tile."""
    return tile_tokens * WORDS_PER_ROW


def raw_scale_words(tile_tokens: int) -> int:
    """Scale words of one raw stage: one 128-row scale tile per 128 rows (a 64-token tile
    copies the whole tile of its band and reads its half)."""
    return max(1, tile_tokens // 128) * SCALE_TILE_WORDS


@cute.jit
def copy_x_stage(atom, ptid: Int32, k_tile: Int32, slot: Int32, a_data: cute.Tensor, a_scales: cute.Tensor,
                 row0: Int32, scale_word0: Int32, band_words: Int32, k_words: Int32, live: Int32,
                 raw: cute.Tensor, raw_scales: cute.Tensor, tile_tokens: cutlass.Constexpr):
    """Producer thread ``ptid``: start the cp.async of stage ``k_tile`` into ring ``slot``:
    its chunks ``c = rep·128 + ptid`` (row ``c // 2``, half ``c % 2``) of the tile's
    ``tile_tokens`` packed rows, and (threads ``0 .. 32·bands - 1``) the stage's 512-byte scale
    tiles, one per 128-row band (a 64-token tile: its band's whole tile). A band is copied only if it holds a token (``128·band <
    live``: always true with 128-token tiles, one band). The rows lie inside the group's
    ``round_up(T, 128)`` quantizer rows (rows beyond T hold its padding)."""
    for rep in cutlass.range_constexpr(tile_tokens * CHUNKS_PER_ROW // PRODUCER_THREADS):
        if (rep * PRODUCER_THREADS // 256) * 128 < live:
            chunk = rep * PRODUCER_THREADS + ptid
            row = chunk // CHUNKS_PER_ROW
            q = chunk % CHUNKS_PER_ROW
            copy_chunk(atom, a_data, (row0 + row) * k_words + k_tile * WORDS_PER_ROW + q * 4,
                       raw, slot * raw_words(tile_tokens) + chunk * 4)
    if ptid < raw_scale_words(tile_tokens) // 4:
        band = ptid // (SCALE_TILE_WORDS // 4)
        if band * 128 < live:
            lane = ptid % (SCALE_TILE_WORDS // 4)
            copy_chunk(atom, a_scales, scale_word0 + band * band_words + k_tile * SCALE_TILE_WORDS + lane * 4,
                       raw_scales, slot * raw_scale_words(tile_tokens) + band * SCALE_TILE_WORDS + lane * 4)


@cute.jit
def decode_x_stage(ptid: Int32, slot: Int32, raw: cute.Tensor, raw_scale_bytes: cute.Tensor, sx: cute.Tensor,
                   stage: Int32, live: Int32, band_row0: Int32, tile_tokens: cutlass.Constexpr):
    """Producer thread ``ptid``: decode the chunks it copied (``copy_x_stage``) from ring
    ``slot`` into bf16 ``sx[row, :, stage]`` (``e2m1·s·2^-9``; two scale blocks per chunk,
    read from the swizzled tile: byte ``(r%32)·16 + (r%128 // 32)·4 + block`` for row ``r =
    band_row0 + row`` of its 128-row band; ``band_row0`` is 64 for odd 64-token tiles)."""
    for rep in cutlass.range_constexpr(tile_tokens * CHUNKS_PER_ROW // PRODUCER_THREADS):
        band = rep * PRODUCER_THREADS // 256  # the 128-row half this repetition's chunks are in
        if band * 128 < live:
            chunk = rep * PRODUCER_THREADS + ptid
            row = chunk // CHUNKS_PER_ROW
            q = chunk % CHUNKS_PER_ROW
            words = cute.make_tensor(raw.iterator + slot * raw_words(tile_tokens) + chunk * 4,
                                     cute.make_layout(4)).load()
            r = row
            if cutlass.const_expr(tile_tokens < 128):
                r = band_row0 + row
            scale_base = (slot * raw_scale_words(tile_tokens) * 4 + band * SCALE_TILE_WORDS * 4 + (r % 32) * 16
                          + ((r % 128) // 32) * 4 + q * 2)
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
    partials: cute.Tensor,  # (splits · tiles · 128 · 256,) fp32 (split_k only)
    counters: cute.Tensor,  # (tiles,) int32, zero between launches (split_k only)
    tokens: Int32,
    groups: Int32,
    n_out: Int32,
    k: Int32,
    rows_per_group: Int32,
    splits: Int32,
    sx_layout: cute.ComposedLayout,
    tiled_mma: cute.TiledMma,
    split_k: cutlass.Constexpr,
    tile_tokens: cutlass.Constexpr,
):
    tidx, _, _ = cute.arch.thread_idx()
    n_tile, t_tile, group_split = cute.arch.block_idx()
    n_tiles_grid, t_tiles_grid, _ = cute.arch.grid_dim()
    g = group_split // splits
    split = group_split % splits
    warpgroup_index = cute.arch.make_warp_uniform(tidx // 128)
    k_tiles_total = k // BK
    k_tiles = k_tiles_total // splits  # this CTA's K stages: kt0 .. kt0 + k_tiles - 1
    kt0 = split * k_tiles
    live = tokens - t_tile * tile_tokens  # tokens of this tile to store (> 0; may exceed the tile)

    allocator = cutlass.memory.SmemAllocator()
    barriers = allocator.allocate_array(cutlass.Int64, 2 * X_STAGES, byte_alignment=8)
    sx = allocator.allocate_tensor(BFloat16, sx_layout.outer, 1024, swizzle=sx_layout.inner)
    raw = allocator.allocate_tensor(Uint32, cute.make_layout(RAW_STAGES * raw_words(tile_tokens)), 16)
    raw_scales = allocator.allocate_tensor(Uint32, cute.make_layout(RAW_STAGES * raw_scale_words(tile_tokens)), 16)
    flag = allocator.allocate_tensor(Int32, cute.make_layout(4), 16)
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
        row0 = g * rows_per_group + t_tile * tile_tokens
        band_row0 = (t_tile * tile_tokens) % 128  # rows_per_group is a multiple of 128
        band_words = col_tiles * SCALE_TILE_WORDS
        scale_word0 = (row0 // 128) * band_words
        raw_scale_bytes = cute.recast_tensor(raw_scales, Uint8)
        atom = async_copy_atom()
        for s in cutlass.range_constexpr(RAW_STAGES - 1):
            if s < k_tiles:
                copy_x_stage(atom, ptid, kt0 + s, Int32(s), a_data, a_scales, row0, scale_word0, band_words, k_words,
                             live, raw, raw_scales, tile_tokens)
            cute.arch.cp_async_commit_group()
        state = pipeline.make_pipeline_state(pipeline.PipelineUserType.Producer, X_STAGES)
        for k_tile in range(k_tiles):
            cute.arch.cp_async_wait_group(RAW_STAGES - 2)  # this thread's copies of stage k_tile landed
            # everyone's copies of k_tile are visible, and everyone finished decoding k_tile - 1,
            # whose ring slot the next copy overwrites
            cute.arch.barrier(barrier_id=PRODUCER_BARRIER, number_of_threads=PRODUCER_THREADS)
            upcoming = k_tile + RAW_STAGES - 1
            if upcoming < k_tiles:
                copy_x_stage(atom, ptid, kt0 + upcoming, upcoming % RAW_STAGES, a_data, a_scales, row0, scale_word0,
                             band_words, k_words, live, raw, raw_scales, tile_tokens)
            cute.arch.cp_async_commit_group()
            x_pipeline.producer_acquire(state)
            decode_x_stage(ptid, k_tile % RAW_STAGES, raw, raw_scale_bytes, sx, state.index, live, band_row0,
                           tile_tokens)
            cute.arch.fence_proxy("async.shared", space="cta")  # generic-proxy stores -> wgmma reads
            x_pipeline.producer_commit(state)
            state.advance()
    else:
        cute.arch.setmaxregister_increase(CONSUMER_REGISTERS)
        ctid = tidx - PRODUCER_THREADS
        warp = ctid // 32  # 0..7: m-tile of 16 channels within each 128-channel block
        lane = ctid % 32
        m_tiles_total = n_out // 16
        tile_bases = [(g * m_tiles_total + n_tile * (CHANNELS // 16) + j * 8 + warp) * k_tiles_total + kt0
                      for j in range(M_BLOCKS)]

        thr_mma = tiled_mma.get_slice(ctid)
        tCrB = tiled_mma.make_fragment_B(thr_mma.partition_B(sx))
        coords = thr_mma.partition_C(cute.make_identity_tensor((128, tile_tokens)))
        accumulators = [cute.make_rmem_tensor(tiled_mma.partition_shape_C((128, tile_tokens)), Float32)
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
        t0 = t_tile * tile_tokens
        out_base = g * n_out + n_tile * CHANNELS
        if cutlass.const_expr(split_k):
            tiles = n_tiles_grid * t_tiles_grid * groups
            tile = (g * t_tiles_grid + t_tile) * n_tiles_grid + n_tile
            store_partials(accumulators, partials, split * tiles + tile, ctid)
            cute.arch.fence_acq_rel_gpu()  # this thread's partials are visible before the count
            cute.arch.barrier(barrier_id=CONSUMER_BARRIER, number_of_threads=CONSUMER_THREADS)
            if ctid == 0:
                flag[0] = cute.arch.atomic_add((counters.iterator + tile).llvm_ptr, Int32(1), sem="acq_rel",
                                               scope="gpu")
            cute.arch.barrier(barrier_id=CONSUMER_BARRIER, number_of_threads=CONSUMER_THREADS)
            if flag[0] == splits - 1:  # the last CTA of this tile: add the splits in order
                cute.arch.fence_acq_rel_gpu()
                add_partials(accumulators, partials, tile, tiles, splits, ctid)
                store_tile(accumulators, coords, out, alpha, live, t0, row_stride, out_base)
                if ctid == 0:
                    counters[tile] = Int32(0)
        else:
            store_tile(accumulators, coords, out, alpha, live, t0, row_stride, out_base)


@cute.jit
def store_tile(accumulators, coords: cute.Tensor, out: cute.Tensor, alpha: Float32, live: Int32, t0: Int32,
               row_stride: Int32, base0: Int32):
    """The epilogue: ``z = bf16(acc · gs_x·gs_w·2^18)`` for the tile's tokens < ``live``."""
    for j in cutlass.range_constexpr(M_BLOCKS):
        base = base0 + j * 128
        for i in cutlass.range(cute.size(accumulators[j]), unroll_full=True):
            channel, t = coords[i]
            if t < live:
                out[(t0 + t) * row_stride + base + channel] = (accumulators[j][i] * alpha).to(BFloat16)


def slab_index(accumulators, slab, j: int, q: int, ctid):
    """Float offset in ``partials`` of consumer thread ``ctid``'s element quad ``q`` of block ``j``
    in slab ``slab``: element ``e`` (block-major) at ``(slab · E/4 + e/4) · 256 + ctid`` as 4
    floats (E = elements per thread), so a warp's 16-byte accesses are contiguous."""
    per_block = cute.size(accumulators[0])
    quads = M_BLOCKS * per_block // 4
    return ((slab * quads + j * (per_block // 4) + q) * CONSUMER_THREADS + ctid) * 4


@cute.jit
def store_partials(accumulators, partials: cute.Tensor, slab: Int32, ctid: Int32):
    """Consumer thread ``ctid``'s accumulators -> slab ``slab`` of ``partials`` (:func:`slab_index`)."""
    per_block = cute.size(accumulators[0])
    for j in cutlass.range_constexpr(M_BLOCKS):
        for q in cutlass.range_constexpr(per_block // 4):
            vector = cute.make_rmem_tensor((4,), Float32)
            for e in cutlass.range_constexpr(4):
                vector[e] = accumulators[j][q * 4 + e]
            vector_at(partials, slab_index(accumulators, slab, j, q, ctid), 4).store(vector.load())


@cute.jit
def add_partials(accumulators, partials: cute.Tensor, tile: Int32, tiles: Int32, splits: Int32, ctid: Int32):
    """``accumulators := Σ_s partials[slab s·tiles + tile]`` in split order 0, 1, … . Per
    128-channel block and split, the loads of all the thread's element quads are issued
    together (16 independent 16-byte loads with 128-token tiles), so the reduction waits about
    ``M_BLOCKS · splits`` memory latencies (an earlier form loaded all splits of one quad, then
    the next quad: 32 latencies in a row with 128-token tiles, measurably slower)."""
    per_block = cute.size(accumulators[0])
    quads = M_BLOCKS * per_block // 4
    split_stride = tiles * quads * CONSUMER_THREADS * 4  # floats between the slabs of two splits
    for j in cutlass.range_constexpr(M_BLOCKS):
        for q in cutlass.range_constexpr(per_block // 4):
            first = vector_at(partials, slab_index(accumulators, tile, j, q, ctid), 4).load()
            for e in cutlass.range_constexpr(4):
                accumulators[j][q * 4 + e] = first[e]
        for s in cutlass.range(1, splits):
            for q in cutlass.range_constexpr(per_block // 4):
                term = vector_at(partials, slab_index(accumulators, tile, j, q, ctid) + s * split_stride, 4).load()
                for e in cutlass.range_constexpr(4):
                    accumulators[j][q * 4 + e] = accumulators[j][q * 4 + e] + term[e]


@cute.jit
def prefill_gemm(
    a_data_ptr: cute.Pointer,
    a_scales_ptr: cute.Pointer,
    words_ptr: cute.Pointer,
    scales_ptr: cute.Pointer,
    gs_a_ptr: cute.Pointer,
    gs_w_ptr: cute.Pointer,
    out_ptr: cute.Pointer,
    partials_ptr: cute.Pointer,
    counters_ptr: cute.Pointer,
    tokens: Int32,
    groups: Int32,
    n_out: Int32,
    k: Int32,
    rows_per_group: Int32,
    splits: Int32,
    stream: cuda.CUstream,
    split_k: cutlass.Constexpr,
    tile_tokens: cutlass.Constexpr,
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
    tiles = (n_out // CHANNELS) * ((tokens + tile_tokens - 1) // tile_tokens) * groups
    partials = cute.make_tensor(partials_ptr, cute.make_layout(splits * tiles * CHANNELS * tile_tokens))
    counters = cute.make_tensor(counters_ptr, cute.make_layout(tiles))

    tiled_mma = sm90_utils.make_trivial_tiled_mma(
        BFloat16, BFloat16, OperandMajorMode.K, OperandMajorMode.K, Float32, (2, 1, 1), (64, tile_tokens),
        a_source=warpgroup.OperandSource.RMEM,
    )
    sx_layout = sm90_utils.make_smem_layout_b(LayoutEnum.ROW_MAJOR, (128, tile_tokens, BK), BFloat16, X_STAGES)
    smem_bytes = (cute.cosize(sx_layout) * 2 + RAW_STAGES * (raw_words(tile_tokens) + raw_scale_words(tile_tokens)) * 4
                  + 2 * X_STAGES * 8 + 64 + 2048)
    prefill_gemm_kernel(a_data, a_scales, words, scales, gs_a, gs_w, out, partials, counters, tokens, groups, n_out, k,
                        rows_per_group, splits, sx_layout, tiled_mma, split_k, tile_tokens).launch(
        grid=[n_out // CHANNELS, (tokens + tile_tokens - 1) // tile_tokens, groups * splits], block=[THREADS, 1, 1], smem=smem_bytes,
        stream=stream, min_blocks_per_mp=1)
