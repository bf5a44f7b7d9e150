"""CuTeDSL kernel: the NVFP4 forward for decode-sized token counts (T <= 32; the layer selects
it for T <= 16, and to 32 where the prefill kernel does not take the shape).

``z (T, G, N) = bf16( Σ_k (e2m1·s)_x · (e2m1·s)_w · gs_x[g] · gs_w[g] )`` from bf16 ``x (T, G, K)``
and the weights in the decode layout (:mod:`decode_layout`), computed as ``zᵀ = W·xᵀ``
with ``mma.sync.m16n8k16`` (16 output channels × 8 tokens per MMA, fp32 accumulation).

* **Grid** ``(ceil(N / C), splits, G)``, ``32·WARPS`` threads. A CTA owns ``C = 32·WARPS``
  output channels (``WARPS`` warps × 2 m-tiles of 16) of group g and one K slice of
  ``K / splits``.
* **Prologue: the activation quantizer, fused.** The CTA quantizes its K slice of
  ``x[:, g]`` with exactly the quantizer's rounding steps (``quantize_activations.
  quantize_block``: same bytes as the CPU reference) and writes the decoded values
  ``e2m1·s·2^-9`` (bf16, exact) to shared memory as MMA B fragments. The global scale is
  the static one, or (``dynamic``) computed from ``group_amax``'s result, or
  (``fused_amax``) from the amax this CTA computes itself over all of ``x[:, g, :]`` (all of
  ``x`` when ``shared``) — the same value, so the same bytes, without the amax launch and its
  zeroing (``launch.decode_fuses_amax`` picks it where the redundant read is cheap). A
  variant whose prologue read the quantizer kernel's bytes instead was slower at every
  T <= 16 on the H100 and was removed. The first batch of weight loads is issued before the prologue, so HBM streams while it runs.
* **Main loop: weights straight from HBM to registers.** Each lane loads 16 bytes of
  codes + 8 bytes of re-encoded scales per m-tile and 64-K chunk into a 4-chunk register
  ring (a slot is refilled as soon as it is consumed), decodes them with 13 integer ops per 8 codes, 2 per two rows'
  scales (``prmt`` + one multiply-add) and one ``mul.rn.bf16x2`` per pair, and issues the MMAs: no shared
  memory and no barrier for the weights.
* **Split K, deterministic, in the same launch.** With ``splits > 1`` each CTA writes its
  fp32 partial sums to ``partials (splits, T, G, N)``, then bumps a per-tile counter; the
  last CTA of a tile adds the partials in split order 0, 1, …, applies
  ``gs_x·gs_w·2^18`` and writes bf16 ``z``, and resets the counter for the next launch.
"""

from __future__ import annotations

import os

import cuda.bindings.driver as cuda
import cutlass
import cutlass.cute as cute
from cutlass import BFloat16, Float32, Int32, Uint32
from cutlass._mlir.dialects import llvm
from cutlass.cutlass_dsl import T, dsl_user_op

from nvfp4lab.kernels._memory import vector_at
from nvfp4lab.kernels._ptx import bf16x2_splat_from_f32, decode_word_bf16x2, div_rn, max_nan
from nvfp4lab.kernels.decode_layout import K_CHUNK, SCALE_BIAS, SCALE_MULTIPLIER, TERMS
from nvfp4lab.kernels.grouped_gemm import ALPHA_POST, SCALE_PRE
from nvfp4lab.kernels.quantize_activations import global_scale_of, quantize_block
from nvfp4lab.quantize import MIN_GLOBAL_SCALE

WARPS = int(os.environ.get("NVFP4LAB_DECODE_WARPS", 8))  # experiments may override these two
THREADS = 32 * WARPS
M_TILES_PER_WARP = 2
CHANNELS_PER_CTA = 16 * M_TILES_PER_WARP * WARPS
BATCH = 4  # 64-K chunks per register buffer
MAX_SLICE = 2048  # K elements of one CTA's slice for one token tile (32 KB of B fragments); half for two
MAX_TOKENS = 32  # four token tiles of 8
CTAS_PER_SM = int(os.environ.get("NVFP4LAB_DECODE_MINCTAS", 2))  # 2: registers capped at 128 per thread


def _decode_text() -> str:
    """PTX for one word: four registers from :data:`TERMS`, each times its row's multiplier
    (operands: $0..$3 out, $4 word, $5 the multipliers of rows r (low half) and r+8 (high
    half); each multiply takes its half as a splat, which ptxas folds into the operand)."""
    lines = ["{", ".reg .b32 t, r, m0, m1;", ".reg .b16 lo, hi;", "mov.b32 {lo, hi}, $5;", "mov.b32 m0, {lo, lo};",
             "mov.b32 m1, {hi, hi};"]
    for register, terms in enumerate(TERMS):
        for i, (shift, mask) in enumerate(terms):
            source = "$4"
            if shift > 0:
                lines.append(f"shr.b32 t, $4, {shift};")
                source = "t"
            elif shift < 0:
                lines.append(f"shl.b32 t, $4, {-shift};")
                source = "t"
            if i == 0:
                lines.append(f"and.b32 r, {source}, {mask:#010x};")
            else:
                lines.append(f"and.b32 t, {source}, {mask:#010x};")
                lines.append("or.b32 r, r, t;")
        lines.append(f"mul.rn.bf16x2 ${register}, r, m{register % 2};")  # registers 1, 3: row r+8
    lines.append("}")
    return "\n".join(lines)


_DECODE = _decode_text()


@dsl_user_op
def decode_fragment(word, multipliers, *, loc=None, ip=None):
    """The four A-fragment registers (bf16 pairs ``e2m1·s·2^-9``) of one decode-layout word;
    ``multipliers`` from :func:`scale_multipliers`."""
    result = llvm.inline_asm(
        llvm.StructType.get_literal([T.i32()] * 4),
        [Uint32(word).ir_value(), Uint32(multipliers).ir_value()],
        _DECODE, "=r,=r,=r,=r,r,r", has_side_effects=False, is_align_stack=False, asm_dialect=llvm.AsmDialect.AD_ATT,
    )
    return [Uint32(llvm.extractvalue(T.i32(), result, [i])) for i in range(4)]


@dsl_user_op
def scale_multipliers(word, byte: int, *, loc=None, ip=None) -> Uint32:
    """The bf16 multipliers ``s·2^117`` of re-encoded scale bytes ``byte`` (row r) and
    ``byte + 1`` (row r+8) of ``word``, in the low and high half: one ``prmt`` placing the
    bytes at bits 0 and 16, one multiply-add (``q << 4`` plus the exponent bias in each half,
    no carry between them: ``q·16 <= 0x8F0``; see :mod:`decode_layout`)."""
    selector = byte | 0x4 << 4 | (byte + 1) << 8 | 0x4 << 12
    text = (
        "{\n.reg .b32 z, q;\nmov.b32 z, 0;\n"
        f"prmt.b32 q, $1, z, {selector:#x};\n"
        f"mad.lo.u32 $0, q, {SCALE_MULTIPLIER & 0xFFFF:#x}, {SCALE_BIAS:#x};\n}}"
    )
    return Uint32(llvm.inline_asm(T.i32(), [Uint32(word).ir_value()], text, "=r,r", has_side_effects=False,
                                  is_align_stack=False, asm_dialect=llvm.AsmDialect.AD_ATT))


_MMA = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {$0,$1,$2,$3}, {$4,$5,$6,$7}, {$8,$9}, {$10,$11,$12,$13};"


@dsl_user_op
def mma_bf16(a, b, c, *, loc=None, ip=None):
    """``c += a·b`` for one m16n8k16 bf16 MMA (a: 4, b: 2 registers, c: 4 floats)."""
    operands = [Uint32(v).ir_value() for v in (*a, *b)] + [Float32(v).ir_value() for v in c]
    result = llvm.inline_asm(
        llvm.StructType.get_literal([T.f32()] * 4), operands, _MMA, "=f,=f,=f,=f,r,r,r,r,r,r,0,1,2,3",
        has_side_effects=False, is_align_stack=False, asm_dialect=llvm.AsmDialect.AD_ATT,
    )
    return [Float32(llvm.extractvalue(T.f32(), result, [i])) for i in range(4)]


@cute.jit
def load_tile_chunk(words: cute.Tensor, scales: cute.Tensor, ring_w: cute.Tensor, ring_s: cute.Tensor,
                    slot: cutlass.Constexpr, m: cutlass.Constexpr, base: Int32, lane: Int32):
    code_words = vector_at(words, base * 128 + lane * 4, 4).load()
    scale_words = vector_at(scales, base * 16 + (lane // 4) * 2, 2).load()
    for j in cutlass.range_constexpr(4):
        ring_w[(slot * M_TILES_PER_WARP + m) * 4 + j] = code_words[j]
    for j in cutlass.range_constexpr(2):
        ring_s[(slot * M_TILES_PER_WARP + m) * 2 + j] = scale_words[j]


@cute.jit
def load_chunk(words: cute.Tensor, scales: cute.Tensor, ring_w: cute.Tensor, ring_s: cute.Tensor, slot: cutlass.Constexpr,
               chunk: Int32, chunk_end: Int32, tile_base: cute.Tensor, live: cute.Tensor, lane: Int32,
               guarded: cutlass.Constexpr):
    """Load chunk ``chunk`` of both m-tiles into ring slot ``slot``: 4 code words and 2
    scale words per lane and m-tile. ``guarded``: only chunks < ``chunk_end`` of live
    m-tiles; else (every m-tile live) past-the-end chunks reload the last one, so the
    unrolled loop has no branch."""
    for m in cutlass.range_constexpr(M_TILES_PER_WARP):
        if cutlass.const_expr(guarded):
            if chunk < chunk_end and live[m] != 0:
                load_tile_chunk(words, scales, ring_w, ring_s, slot, m, tile_base[m] + chunk, lane)
        else:
            load_tile_chunk(words, scales, ring_w, ring_s, slot, m, tile_base[m] + cutlass.min(chunk, chunk_end - 1), lane)


@cute.jit
def consume_chunk(act: cute.Tensor, ring_w: cute.Tensor, ring_s: cute.Tensor, acc: cute.Tensor, i: cutlass.Constexpr,
                  chunk: Int32, token_in_tile: Int32, swap: Int32, quad: Int32, n_tiles: cutlass.Constexpr):
    """The MMAs of ring slot ``i`` (chunk ``chunk``): four k16 steps × 2 m-tiles × n-tiles."""
    for step in cutlass.range_constexpr(4):
        k_step = chunk * 4 + step
        b_frag = cute.make_rmem_tensor((n_tiles * 2,), Uint32)
        for nt in cutlass.range_constexpr(n_tiles):
            row = (k_step * (n_tiles * 8) + nt * 8 + token_in_tile) * 8
            b_frag[nt * 2] = act[row + quad + 4 * swap]
            b_frag[nt * 2 + 1] = act[row + quad + 4 - 4 * swap]
        for m in cutlass.range_constexpr(M_TILES_PER_WARP):
            slot = i * M_TILES_PER_WARP + m
            a = decode_fragment(ring_w[slot * 4 + step], scale_multipliers(ring_s[slot * 2 + step // 2], (2 * step) % 4))
            for nt in cutlass.range_constexpr(n_tiles):
                base = (m * n_tiles + nt) * 4
                c = mma_bf16(a, (b_frag[nt * 2], b_frag[nt * 2 + 1]), (acc[base], acc[base + 1], acc[base + 2], acc[base + 3]))
                for e in cutlass.range_constexpr(4):
                    acc[base + e] = c[e]


@cute.jit
def stage_slice(x: cute.Tensor, act: cute.Tensor, tidx: Int32, tokens: Int32, groups: Int32, g: Int32, k: Int32,
                k0: Int32, steps: Int32, gs: Float32, n_tiles: cutlass.Constexpr):
    """The prologue: blocks ``(t, kb)`` of token t's K range ``k0 + 16·kb ..+16`` -> decoded
    bf16 pairs ``e2m1·s·2^-9`` in ``act`` at row ``kb·8·n_tiles + t`` (8 words; halves swapped
    for t % 8 >= 4, so the B-fragment loads hit distinct banks). Tokens t >= T get zeros.
    Each block is quantized with the quantizer's rounding steps (same bytes)."""
    inverse_gs = div_rn(Float32(1.0), gs)
    for item in range(tidx, n_tiles * 8 * steps, THREADS):
        t = item // steps
        kb = item % steps
        decoded = cute.make_rmem_tensor((8,), Uint32)
        for i in cutlass.range_constexpr(8):
            decoded[i] = Uint32(0)
        if t < tokens:
            values = vector_at(x, (t * groups + g) * k + k0 + kb * 16, 16).load().to(Float32)
            _, scale_value, word0, word1 = quantize_block(values, gs, inverse_gs)
            scale_pair = bf16x2_splat_from_f32(scale_value * Float32(SCALE_PRE))
            low = decode_word_bf16x2(word0, scale_pair)
            high = decode_word_bf16x2(word1, scale_pair)
            for i in cutlass.range_constexpr(4):
                decoded[i] = low[i]
                decoded[4 + i] = high[i]
        swap = (t % 8) // 4
        row = (kb * (n_tiles * 8) + t) * 8
        for i in cutlass.range_constexpr(8):
            act[row + (i + 4 * swap) % 8] = decoded[i]


@cute.jit
def cta_global_scale(x: cute.Tensor, reduction: cute.Tensor, tidx: Int32, tokens: Int32, groups: Int32, g: Int32,
                     k: Int32, shared: cutlass.Constexpr) -> Float32:
    """The dynamic global scale ``max(amax / 2688, 2^-126)`` with ``amax = max |x[:, g, :]|``
    (``shared``: over all of x) computed by this CTA alone: the same float max ``group_amax``
    finds with its atomics (a max is exact in any order; NaN wins), so the same scale."""
    blocks = k // 16
    local = Float32(0.0)
    count = tokens * blocks
    if cutlass.const_expr(shared):
        count = tokens * groups * blocks
    for item in range(tidx, count, THREADS):
        offset = item * 16  # shared: x's rows in order
        if cutlass.const_expr(not shared):
            offset = ((item // blocks) * groups + g) * k + (item % blocks) * 16
        values = vector_at(x, offset, 16).load().to(Float32)
        for j in cutlass.range_constexpr(16):
            local = max_nan(local, cute.arch.fmax(values[j], -values[j]))
    local = cute.arch.warp_reduction(local, max_nan)
    if tidx % 32 == 0:
        reduction[tidx // 32] = local
    cute.arch.sync_threads()
    amax = reduction[0]
    for w in cutlass.range_constexpr(1, WARPS):
        amax = max_nan(amax, reduction[w])
    return max_nan(div_rn(amax, Float32(2688.0)), Float32(MIN_GLOBAL_SCALE))


@cute.kernel
def decode_forward_kernel(
    x: cute.Tensor,  # (T·G·K,) bf16
    group_scale: cute.Tensor,  # (G,) fp32: static global scales, or amaxes (dynamic)
    words: cute.Tensor,  # decode layout, uint32
    scales: cute.Tensor,  # decode layout, uint32 view of the scale bytes
    gs_w: cute.Tensor,  # (G,) fp32
    out: cute.Tensor,  # (T·G·N,) bf16
    partials: cute.Tensor,  # (splits·T·G·N,) fp32
    counters: cute.Tensor,  # (G·ceil(N/C),) int32, zero between launches
    tokens: Int32,
    groups: Int32,
    n_out: Int32,
    k: Int32,
    splits: Int32,
    n_tiles: cutlass.Constexpr,
    dynamic: cutlass.Constexpr,
    shared: cutlass.Constexpr,
    split_k: cutlass.Constexpr,
    guarded: cutlass.Constexpr,
    fused_amax: cutlass.Constexpr,
):
    tidx, _, _ = cute.arch.thread_idx()
    n_block, split, g = cute.arch.block_idx()
    warp = tidx // 32
    lane = tidx % 32
    chunks_total = k // K_CHUNK
    chunks = chunks_total // splits
    chunk0 = split * chunks
    m_tiles_total = n_out // 16

    tile_base = cute.make_rmem_tensor((M_TILES_PER_WARP,), Int32)
    live = cute.make_rmem_tensor((M_TILES_PER_WARP,), Int32)
    for m in cutlass.range_constexpr(M_TILES_PER_WARP):
        m_tile = n_block * (CHANNELS_PER_CTA // 16) + warp * M_TILES_PER_WARP + m
        live[m] = Int32(0)
        if m_tile < m_tiles_total:
            live[m] = Int32(1)
        tile_base[m] = (g * m_tiles_total + m_tile) * chunks_total + chunk0

    ring_w = cute.make_rmem_tensor((BATCH * M_TILES_PER_WARP * 4,), Uint32)
    ring_s = cute.make_rmem_tensor((BATCH * M_TILES_PER_WARP * 2,), Uint32)
    for i in cutlass.range_constexpr(BATCH):
        load_chunk(words, scales, ring_w, ring_s, i, Int32(i), chunks, tile_base, live, lane, guarded)

    allocator = cutlass.memory.SmemAllocator()
    act = allocator.allocate_tensor(Uint32, cute.make_layout(MAX_SLICE * 8 // 2), 16)
    flag = allocator.allocate_tensor(Int32, cute.make_layout(4), 16)
    reduction = allocator.allocate_tensor(Float32, cute.make_layout(WARPS), 16)
    gs_x = Float32(0.0)
    if cutlass.const_expr(fused_amax):
        gs_x = cta_global_scale(x, reduction, tidx, tokens, groups, g, k, shared)
    else:
        gs_x = global_scale_of(group_scale, g, groups, dynamic, shared)
    stage_slice(x, act, tidx, tokens, groups, g, k, chunk0 * K_CHUNK, chunks * (K_CHUNK // 16), gs_x, n_tiles)
    cute.arch.sync_threads()

    acc = cute.make_rmem_tensor((M_TILES_PER_WARP * n_tiles * 4,), Float32)
    acc.fill(0.0)
    token_in_tile = lane // 4
    swap = token_in_tile // 4
    quad = lane % 4
    batches = (chunks + BATCH - 1) // BATCH
    for batch in range(batches):
        for i in cutlass.range_constexpr(BATCH):
            chunk = batch * BATCH + i
            if cutlass.const_expr(guarded):
                if chunk < chunks:
                    consume_chunk(act, ring_w, ring_s, acc, i, chunk, token_in_tile, swap, quad, n_tiles)
            else:
                consume_chunk(act, ring_w, ring_s, acc, i, chunk, token_in_tile, swap, quad, n_tiles)
            # the slot is consumed: refill it with the chunk BATCH ahead (a register ring)
            load_chunk(words, scales, ring_w, ring_s, i, chunk + BATCH, chunks, tile_base, live, lane, guarded)

    alpha = (gs_x * gs_w[g]) * Float32(ALPHA_POST)
    # C fragment element e of (m, nt): channel row lane//4 (+8 for e >= 2), token 2·(lane%4) + e%2
    for m in cutlass.range_constexpr(M_TILES_PER_WARP):
        if live[m] != 0:
            m_tile = n_block * (CHANNELS_PER_CTA // 16) + warp * M_TILES_PER_WARP + m
            for nt in cutlass.range_constexpr(n_tiles):
                for e in cutlass.range_constexpr(4):
                    channel = m_tile * 16 + lane // 4 + 8 * (e // 2)
                    t = nt * 8 + 2 * quad + e % 2
                    if t < tokens:
                        value = acc[(m * n_tiles + nt) * 4 + e]
                        if cutlass.const_expr(split_k):
                            partials[((split * tokens + t) * groups + g) * n_out + channel] = value
                        else:
                            out[(t * groups + g) * n_out + channel] = (value * alpha).to(BFloat16)

    if cutlass.const_expr(split_k):
        cute.arch.fence_acq_rel_gpu()  # this thread's partials are visible before the count
        cute.arch.sync_threads()
        counter = g * ((n_out + CHANNELS_PER_CTA - 1) // CHANNELS_PER_CTA) + n_block
        if tidx == 0:
            flag[0] = cute.arch.atomic_add((counters.iterator + counter).llvm_ptr, Int32(1), sem="acq_rel",
                                           scope="gpu")
        cute.arch.sync_threads()
        if flag[0] == splits - 1:  # the last CTA of this tile: reduce in split order
            cute.arch.fence_acq_rel_gpu()
            # 4 neighbouring channels per item (16-byte loads; N % 16 == 0), the split loop
            # unrolled so that its loads are in flight together: one latency per item, not per split
            channel0 = n_block * CHANNELS_PER_CTA
            quads = CHANNELS_PER_CTA // 4
            split_stride = tokens * groups * n_out
            for item in range(tidx, tokens * quads, THREADS):
                t = item // quads
                channel = channel0 + (item % quads) * 4
                if channel < n_out:
                    index = (t * groups + g) * n_out + channel
                    total = vector_at(partials, index, 4).load()
                    for s in cutlass.range(1, splits, unroll=8):
                        total = total + vector_at(partials, s * split_stride + index, 4).load()
                    vector_at(out, index, 4).store(
                        (total * alpha).to(BFloat16))
            if tidx == 0:
                counters[counter] = Int32(0)


@cute.jit
def decode_forward(
    x_ptr: cute.Pointer,
    group_scale_ptr: cute.Pointer,
    words_ptr: cute.Pointer,
    scales_ptr: cute.Pointer,
    gs_w_ptr: cute.Pointer,
    out_ptr: cute.Pointer,
    partials_ptr: cute.Pointer,
    counters_ptr: cute.Pointer,
    tokens: Int32,
    groups: Int32,
    n_out: Int32,
    k: Int32,
    splits: Int32,
    stream: cuda.CUstream,
    n_tiles: cutlass.Constexpr,
    dynamic: cutlass.Constexpr,
    shared: cutlass.Constexpr,
    split_k: cutlass.Constexpr,
    guarded: cutlass.Constexpr,
    fused_amax: cutlass.Constexpr,
):
    """Host entry (``kernels.launch.decode_forward`` passes the tensors behind the pointers)."""
    n_blocks = (n_out + CHANNELS_PER_CTA - 1) // CHANNELS_PER_CTA
    x = cute.make_tensor(x_ptr, cute.make_layout(tokens * groups * k))
    group_scale = cute.make_tensor(group_scale_ptr, cute.make_layout(groups))
    words = cute.make_tensor(words_ptr, cute.make_layout(groups * n_out * k // 8))
    scales = cute.make_tensor(scales_ptr, cute.make_layout(groups * n_out * k // 64))
    gs_w = cute.make_tensor(gs_w_ptr, cute.make_layout(groups))
    out = cute.make_tensor(out_ptr, cute.make_layout(tokens * groups * n_out))
    partials = cute.make_tensor(partials_ptr, cute.make_layout(splits * tokens * groups * n_out))
    counters = cute.make_tensor(counters_ptr, cute.make_layout(groups * n_blocks))
    smem = MAX_SLICE * 8 * 2 + 16 + 4 * WARPS + 16 + 64
    decode_forward_kernel(x, group_scale, words, scales, gs_w, out, partials, counters, tokens, groups, n_out, k, splits,
                          n_tiles, dynamic, shared, split_k, guarded, fused_amax).launch(
        grid=[n_blocks, splits, groups], block=[THREADS, 1, 1], smem=smem, stream=stream,
        min_blocks_per_mp=CTAS_PER_SM, preferred_smem_carveout=100)
