"""CuTeDSL kernel: quantize ``x (T, G, K)`` bf16 into the grouped GEMM's A operand.

One launch writes, for all G groups at once, exactly what ``quantize_nvfp4`` followed by
``layouts.grouped_a_operand`` produce on the CPU (docs/numerics.md §2):

* ``mat_a`` ``(G·Mp, K/2)`` packed E2M1, group g's token t at row ``g·Mp + t``; rows
  ``T ≤ t < Mp`` are written as zeros (``Mp = round_up(T, 128)``);
* ``scale_a`` ``(G·Mp, round_up(K/16, 4))`` E4M3 block scales in the swizzled 128×4
  layout, padding rows zero (padding columns are never written: the buffer is zeroed
  once when allocated).

One thread quantizes one 16-element block: two 16-byte loads, one 8-byte store, and its
scale byte (when K % 64 == 0, four neighbouring threads gather their scale bytes with
warp shuffles and one stores the 4-byte word). The global scale of group g is either read from ``global_scale[g]`` (static)
or computed from ``amax[g]`` as ``max(amax / 2688, 2^-126)`` (dynamic; see
``kernels/amax.py``); with ``shared`` every group uses the max over all G entries (a
static shared scale is stored G times, equal; a dynamic shared one is the max amax). Every rounding step is an explicit PTX instruction (``_ptx``).
"""

from __future__ import annotations

import cuda.bindings.driver as cuda
import cutlass
import cutlass.cute as cute
from cutlass import Float32, Int32, Uint32

from nvfp4lab.kernels._ptx import div_rn, e4m3_byte_from_f32, f32_from_e4m3_byte, max_nan, mul_rn, rint_u32

THREADS = 256
FLT_MAX = 3.4028234663852886e38
MIN_GLOBAL_SCALE = 2.0**-126


@cute.jit
def e2m1_code(y: Float32) -> Uint32:
    """RNE code (0..15) of ``y`` already clamped to [-6, 6]; the sign bit is kept.

    The E2M1 grid is uniform on each binade-pair: step 0.5 on [0, 2), 1 on [2, 4), 2 on
    [4, 6]. So ``code = rint(|y|·2) (|y| < 2), rint(|y|) + 2 (< 4), rint(|y|/2) + 4``,
    with ``rint`` ties-to-even: an even integer there is an even code, exactly the
    format's tie rule (0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4,
    5 -> 4). The scalings are exact powers of two. NaN gives code 0 (as the CPU).
    """
    magnitude = cute.arch.fmax(y, -y)
    below_two = magnitude < Float32(2.0)
    below_four = magnitude < Float32(4.0)
    scale = Float32(0.5)
    offset = Uint32(4)
    if below_four:
        scale = Float32(1.0)
        offset = Uint32(2)
    if below_two:
        scale = Float32(2.0)
        offset = Uint32(0)
    code = rint_u32(magnitude * scale) + offset
    if not (magnitude == magnitude):
        code = Uint32(0)
    return code | ((y.bitcast(Uint32) >> Uint32(31)) << Uint32(3))


@cute.jit
def global_scale_of(group_scale: cute.Tensor, g: Int32, groups: Int32, dynamic: cutlass.Constexpr,
                    shared: cutlass.Constexpr) -> Float32:
    """Group g's global scale: ``group_scale[g]`` (static) or ``max(amax / 2688, 2^-126)``
    of the amax there (dynamic); ``shared``: of the max over all G entries."""
    gs = group_scale[g]
    if cutlass.const_expr(shared):  # one scale for all groups: the max over them
        gs = group_scale[0]
        for other in cutlass.range(1, groups):
            gs = max_nan(gs, group_scale[other])
    if cutlass.const_expr(dynamic):
        gs = max_nan(div_rn(gs, Float32(2688.0)), Float32(MIN_GLOBAL_SCALE))  # NaN stays NaN
    return gs


@cute.jit
def quantize_block(values, gs: Float32):
    """One 16-element block (``values``: 16 float32) with global scale ``gs`` ->
    ``(scale_byte, scale_value, word0, word1)``: its E4M3 scale byte and value and its 16
    codes packed 8 per word (code j at bits 4j). The CPU reference's rule, rounding by rounding."""
    block_amax = Float32(0.0)
    for j in cutlass.range_constexpr(16):
        block_amax = max_nan(block_amax, cute.arch.fmax(values[j], -values[j]))
    scale_byte = e4m3_byte_from_f32(div_rn(div_rn(block_amax, Float32(6.0)), gs))
    scale_value = f32_from_e4m3_byte(scale_byte)
    multiplier = cute.arch.fmin(div_rn(div_rn(Float32(1.0), gs), scale_value), Float32(FLT_MAX))
    if not (scale_value > Float32(0.0)):
        multiplier = Float32(0.0)
    word0 = Uint32(0)
    word1 = Uint32(0)
    for j in cutlass.range_constexpr(16):
        y = mul_rn(values[j], multiplier)
        y = cute.arch.fmin(cute.arch.fmax(y, Float32(-6.0)), Float32(6.0))
        code = e2m1_code(y)
        if cutlass.const_expr(j < 8):
            word0 = word0 | (code << Uint32(4 * j))
        else:
            word1 = word1 | (code << Uint32(4 * (j - 8)))
    return scale_byte, scale_value, word0, word1


@cute.jit
def swizzled_scale_offset(row: Int32, block_col: Int32, col_tiles: Int32) -> Int32:
    """Byte offset of scale (row, block_col) in the 128×4 tiled layout (layouts.py)."""
    tile = (row // 128) * col_tiles + block_col // 4
    return tile * 512 + (row % 32) * 16 + ((row % 128) // 32) * 4 + block_col % 4


@cute.kernel
def quantize_activations_kernel(
    x: cute.Tensor,  # (T·G·Kb, 16) bf16
    group_scale: cute.Tensor,  # (G,) fp32: global scales (static) or amaxes (dynamic)
    data_out: cute.Tensor,  # (G·Mp·Kb, 2) uint32: 16 packed codes per block
    scale_out: cute.Tensor,  # (G·Mp·Kbp,) uint8, 4-byte aligned
    used_scale_out: cute.Tensor,  # (G,) fp32: the global scale each group used
    tokens: Int32,
    groups: Int32,
    block_cols: Int32,
    rows_per_group: Int32,
    dynamic: cutlass.Constexpr,
    shared: cutlass.Constexpr,
    packed_scales: cutlass.Constexpr,
):
    tidx, _, _ = cute.arch.thread_idx()
    bidx, _, _ = cute.arch.block_idx()
    index = bidx * THREADS + tidx
    total = rows_per_group * groups * block_cols
    kb = index % block_cols
    token_group = index // block_cols
    g = token_group % groups
    t = token_group // groups
    col_tiles = (block_cols + 3) // 4
    scale_index = g * rows_per_group * col_tiles * 4 + swizzled_scale_offset(t, kb, col_tiles)
    scale_byte = Uint32(0)
    if index < total:
        out_block = (g * rows_per_group + t) * block_cols + kb
        word0 = Uint32(0)
        word1 = Uint32(0)
        if t < tokens:
            values = x[index, None].load().to(Float32)
            gs = global_scale_of(group_scale, g, groups, dynamic, shared)
            if t == 0 and kb == 0:
                used_scale_out[g] = gs
            scale_byte, _, word0, word1 = quantize_block(values, gs)
        data_out[out_block, 0] = word0
        data_out[out_block, 1] = word1
        if cutlass.const_expr(not packed_scales):
            scale_out[scale_index] = cutlass.Uint8(scale_byte)
    if cutlass.const_expr(packed_scales):
        # K % 64 == 0: lanes 4j..4j+3 hold blocks kb = 4i..4i+3 of one row, whose scales
        # are 4 consecutive bytes of the swizzled layout: gather them, store one word.
        word = scale_byte << Uint32(8 * (kb % 4))
        word = word | cute.arch.shuffle_sync_bfly(word, offset=1)
        word = word | cute.arch.shuffle_sync_bfly(word, offset=2)
        if index < total and kb % 4 == 0:
            scale_words = cute.make_tensor(cute.recast_ptr(scale_out.iterator, dtype=Uint32), cute.make_layout(1 << 30))
            scale_words[scale_index // 4] = word


@cute.jit
def quantize_activations(
    x_ptr: cute.Pointer,
    group_scale_ptr: cute.Pointer,
    data_ptr: cute.Pointer,
    scale_ptr: cute.Pointer,
    used_scale_ptr: cute.Pointer,
    tokens: Int32,
    groups: Int32,
    block_cols: Int32,
    rows_per_group: Int32,
    stream: cuda.CUstream,
    dynamic: cutlass.Constexpr,
    shared: cutlass.Constexpr,
    packed_scales: cutlass.Constexpr,
):
    """Host entry: builds the tensors from raw pointers (see ``kernels.launch``).
    ``packed_scales`` (K % 64 == 0) stores each row's 4 neighbouring scales as one word."""
    col_tiles = (block_cols + 3) // 4
    x = cute.make_tensor(x_ptr, cute.make_layout((tokens * groups * block_cols, 16), stride=(16, 1)))
    group_scale = cute.make_tensor(group_scale_ptr, cute.make_layout(groups))
    data = cute.make_tensor(data_ptr, cute.make_layout((rows_per_group * groups * block_cols, 2), stride=(2, 1)))
    scales = cute.make_tensor(scale_ptr, cute.make_layout(rows_per_group * groups * col_tiles * 4))
    used_scale = cute.make_tensor(used_scale_ptr, cute.make_layout(groups))
    total = rows_per_group * groups * block_cols
    quantize_activations_kernel(
        x, group_scale, data, scales, used_scale, tokens, groups, block_cols, rows_per_group, dynamic, shared, packed_scales
    ).launch(grid=[(total + THREADS - 1) // THREADS, 1, 1], block=[THREADS, 1, 1], stream=stream)
