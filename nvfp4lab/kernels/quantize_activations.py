"""CuTeDSL kernel: quantize ``x (T, G, K)`` bf16 into the grouped GEMM's A operand.

One launch writes, for all G groups at once, exactly what ``quantize_nvfp4`` followed by
``layouts.grouped_a_operand`` produce on the CPU (docs/numerics.md §2):

* ``mat_a`` ``(G·Mp, K/2)`` packed E2M1, group g's token t at row ``g·Mp + t``; rows
  ``T ≤ t < Mp`` are written as zeros (``Mp = round_up(T, 128)``);
* ``scale_a`` ``(G·Mp, round_up(K/16, 4))`` E4M3 block scales in the swizzled 128×4
  layout, padding rows zero (padding columns are never written: the buffer is zeroed
  once when allocated).

When K % 64 == 0 one thread quantizes the four 16-element blocks of a 64-element row slice:
128 contiguous bytes in (eight 16-byte loads), 32 contiguous bytes of codes out (two 16-byte
stores) and the four scale bytes (consecutive in the swizzled layout) as one 4-byte store;
otherwise one block per thread (8-byte and 1-byte stores). ``1/gs`` is divided once per thread.
The global scale of group g is either read from ``global_scale[g]`` (static) or computed from
``amax[g]`` as ``max(amax / 2688, 2^-126)`` (dynamic; see ``kernels/amax.py``); with ``shared``
every group uses the max over all G entries (a static shared scale is stored G times, equal; a
dynamic shared one is the max amax). Every rounding step is an explicit PTX instruction (``_ptx``).

**No clamp for most blocks.** The reference clamps ``y = x·multiplier`` to ±6 before
rounding. When the block scale ``s`` is a normal E4M3 number below 448 and ``gs ≥ 2^-126``, ``s``
is ``q = (amax/6)/gs`` rounded to 3 mantissa bits, so ``s ≥ q·(1 − 2^-4)``; ``1/gs`` is finite,
and ``q ≥ 2^-6`` puts ``amax/6`` at ``≥ 2^-132``, where its rounding is within ``2^-17``
relative; hence ``|y| ≤ 6·(1 + 2^-17)(1 + 2^-23)^4 / (1 − 2^-4) < 6.41``, and
``e2m1_code_biased`` gives code 7 for every ``6 ≤ |y| < 7``, what the clamp would give. Blocks
with a subnormal, zero, saturated (448) or NaN scale take the clamping loop, and so does every
block of a group whose ``gs`` is below ``2^-126`` (the API rejects such static scales,
``validation.check_global_scale``; direct kernel callers stay on the safe path: there ``1/gs``
overflows and the multiplier is capped at ``FLT_MAX``). ``tests/test_inline_ptx.py`` runs the
code's PTX on ``|y| < 7``. The clamping loop's NaN rule differs from the CPU's: NaN clamps to
-6 (code 15) where the CPU keeps NaN (code 0 or 8); the block's scale byte is NaN (0x7F) in
both, so every value of the block dequantizes to NaN.
"""

from __future__ import annotations

import cuda.bindings.driver as cuda
import cutlass
import cutlass.cute as cute
from cutlass import Float32, Int32, Uint32

from nvfp4lab.formats import E4M3_MAX, E4M3_MIN_NORMAL
from nvfp4lab.quantize import FLT_MAX, MIN_GLOBAL_SCALE
from nvfp4lab.kernels._ptx import (
    E2M1_CODE_BIAS,
    div_rn,
    e2m1_code_biased,
    e4m3_byte_from_f32,
    f32_from_e4m3_byte,
    max_abs_nan,
    max_nan,
    mul_rn,
)

THREADS = 256


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


# e2m1_code_biased returns code + E2M1_CODE_BIAS: eight biased codes summed at 4-bit
# offsets exceed their nibbles, but subtracting the bias of all eight at once (modulo 2^32)
# leaves exactly the packed codes.
WORD_BIAS = (E2M1_CODE_BIAS * 0x11111111) % 2**32


@cute.jit
def quantize_block(values, gs: Float32, inverse_gs: Float32):
    """One 16-element block (``values``: 16 float32) with global scale ``gs`` (and
    ``inverse_gs = div_rn(1, gs)``, computed once by the caller) ->
    ``(scale_byte, scale_value, word0, word1)``: its E4M3 scale byte and value and its 16
    codes packed 8 per word (code j at bits 4j). The CPU reference's rule, rounding by
    rounding: ``s = e4m3((amax/6)/gs)``, multiplier ``min((1/gs)/s, FLT_MAX)`` (0 when
    ``s`` is 0 or NaN), code of ``clamp(x·multiplier, ±6)``."""
    block_amax = Float32(0.0)
    for j in cutlass.range_constexpr(16):
        block_amax = max_abs_nan(block_amax, values[j])
    scale_byte = e4m3_byte_from_f32(div_rn(div_rn(block_amax, Float32(6.0)), gs))
    scale_value = f32_from_e4m3_byte(scale_byte)
    multiplier = cute.arch.fmin(div_rn(inverse_gs, scale_value), Float32(FLT_MAX))
    if not (scale_value > Float32(0.0)):
        multiplier = Float32(0.0)
    word0 = Uint32(0)  # defined before the branch that sets them (CuTeDSL's rule)
    word1 = Uint32(0)
    normal_scales = scale_value >= Float32(E4M3_MIN_NORMAL) and gs >= Float32(MIN_GLOBAL_SCALE)
    if normal_scales and scale_value < Float32(E4M3_MAX):
        # A normal, unsaturated scale and a normal gs: every |x·multiplier| < 7 (module
        # docstring), where the code needs no clamp. Everything else takes the clamp.
        word0, word1 = packed_codes(values, multiplier, False)
    else:
        word0, word1 = packed_codes(values, multiplier, True)
    return scale_byte, scale_value, word0, word1


@cute.jit
def packed_codes(values, multiplier: Float32, clamp: cutlass.Constexpr):
    """The 16 codes of ``values · multiplier`` packed 8 per word (code j at bits 4j);
    ``clamp``: to ±6 first (NaN -> -6; the CPU keeps NaN: code 0)."""
    word0 = Uint32(0)
    word1 = Uint32(0)
    for j in cutlass.range_constexpr(16):
        y = mul_rn(values[j], multiplier)
        if cutlass.const_expr(clamp):
            y = cute.arch.fmin(cute.arch.fmax(y, Float32(-6.0)), Float32(6.0))
        code = e2m1_code_biased(y)
        if cutlass.const_expr(j < 8):
            word0 = word0 + (code << Uint32(4 * j))
        else:
            word1 = word1 + (code << Uint32(4 * (j - 8)))
    return word0 - Uint32(WORD_BIAS), word1 - Uint32(WORD_BIAS)


@cute.jit
def swizzled_scale_offset(row: Int32, block_col: Int32, col_tiles: Int32) -> Int32:
    """Byte offset of scale (row, block_col) in the 128×4 tiled layout (layouts.py)."""
    tile = (row // 128) * col_tiles + block_col // 4
    return tile * 512 + (row % 32) * 16 + ((row % 128) // 32) * 4 + block_col % 4


@cute.kernel
def quantize_activations_kernel(
    x: cute.Tensor,  # (T·G·Kb/P, 16·P) bf16: P = blocks per thread
    group_scale: cute.Tensor,  # (G,) fp32: global scales (static) or amaxes (dynamic)
    data_out: cute.Tensor,  # (G·Mp·Kb/P, 2·P) uint32: 16 packed codes per block
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
    per_thread = blocks_per_thread(packed_scales)
    tidx, _, _ = cute.arch.thread_idx()
    bidx, _, _ = cute.arch.block_idx()
    index = bidx * THREADS + tidx
    chunk_cols = block_cols // per_thread
    if index < rows_per_group * groups * chunk_cols:
        chunk = index % chunk_cols
        token_group = index // chunk_cols
        g = token_group % groups
        t = token_group // groups
        kb = chunk * per_thread
        col_tiles = (block_cols + 3) // 4
        scale_index = g * rows_per_group * col_tiles * 4 + swizzled_scale_offset(t, kb, col_tiles)
        codes = cute.make_rmem_tensor((2 * per_thread,), Uint32)
        codes.fill(0)
        scale_bytes = Uint32(0)
        if t < tokens:
            values = x[index, None].load().to(Float32)  # P blocks of one row: 32·P contiguous bytes
            gs = global_scale_of(group_scale, g, groups, dynamic, shared)
            inverse_gs = div_rn(Float32(1.0), gs)
            if t == 0 and kb == 0:
                used_scale_out[g] = gs
            for b in cutlass.range_constexpr(per_thread):
                block = cute.make_rmem_tensor((16,), Float32)
                for j in cutlass.range_constexpr(16):
                    block[j] = values[16 * b + j]
                scale_byte, _, word0, word1 = quantize_block(block, gs, inverse_gs)
                codes[2 * b] = word0
                codes[2 * b + 1] = word1
                scale_bytes = scale_bytes | (scale_byte << Uint32(8 * b))
        cute.autovec_copy(codes, data_out[(g * rows_per_group + t) * chunk_cols + chunk, None])
        if cutlass.const_expr(packed_scales):
            # K % 64 == 0: this thread's 4 blocks kb..kb+3 of one row have 4 consecutive
            # scale bytes in the swizzled layout (kb % 4 == 0): one 4-byte store.
            scale_words = cute.make_tensor(cute.recast_ptr(scale_out.iterator, dtype=Uint32), cute.make_layout(1 << 30))
            scale_words[scale_index // 4] = scale_bytes
        else:
            scale_out[scale_index] = cutlass.Uint8(scale_bytes)


def blocks_per_thread(packed_scales: bool) -> int:
    """Blocks one thread quantizes: the 4 of a 64-element row slice when K % 64 == 0 (128 bytes
    in, 32 bytes of codes and one 4-byte scale word out), else 1."""
    return 4 if packed_scales else 1


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
    ``packed_scales`` (K % 64 == 0): one thread per 4 blocks, scales stored as one word."""
    per_thread = blocks_per_thread(packed_scales)
    col_tiles = (block_cols + 3) // 4
    chunk_cols = block_cols // per_thread
    x = cute.make_tensor(x_ptr, cute.make_layout((tokens * groups * chunk_cols, 16 * per_thread),
                                                 stride=(16 * per_thread, 1)))
    group_scale = cute.make_tensor(group_scale_ptr, cute.make_layout(groups))
    data = cute.make_tensor(data_ptr, cute.make_layout((rows_per_group * groups * chunk_cols, 2 * per_thread),
                                                       stride=(2 * per_thread, 1)))
    scales = cute.make_tensor(scale_ptr, cute.make_layout(rows_per_group * groups * col_tiles * 4))
    used_scale = cute.make_tensor(used_scale_ptr, cute.make_layout(groups))
    total = rows_per_group * groups * chunk_cols
    quantize_activations_kernel(
        x, group_scale, data, scales, used_scale, tokens, groups, block_cols, rows_per_group, dynamic, shared,
        packed_scales,
    ).launch(grid=[(total + THREADS - 1) // THREADS, 1, 1], block=[THREADS, 1, 1], stream=stream)
