"""Exact scalar PTX operations the kernels need, as inline assembly.

Each helper names its PTX instruction, so rounding is explicit and no compiler flag
(fast math, FMA contraction, flush-to-zero) can change a result:

* ``div_rn``            ``div.rn.f32``: IEEE division, round to nearest even.
* ``mul_rn``            ``mul.rn.f32``: never fused into an FMA.
* ``max_nan``           ``max.NaN.f32``: NaN-propagating maximum.
* ``e4m3_byte_from_f32`` ``cvt.rn.satfinite.e4m3x2.f32``: RNE, saturate at ±448, NaN kept.
* ``f32_from_e4m3_byte`` ``cvt.rn.f16x2.e4m3x2`` then ``cvt.f32.f16`` (both exact).
* ``bf16x2_splat_from_f32`` ``cvt.rn.bf16x2.f32`` of one value into both halves.
* ``max_abs_nan``      ``abs.f32`` then ``max.NaN.f32``: a running ``max |x|`` that keeps NaN.
* ``e2m1_code_biased`` the E2M1 code of ``y`` (``|y| < 7``) by one ``add.rn.f32``, plus ``E2M1_CODE_BIAS``.
* ``decode_word_bf16x2``  eight E2M1 codes -> four exactly scaled bf16 pairs.
"""

from __future__ import annotations

from cutlass import Float32, Uint32
from cutlass._mlir.dialects import llvm
from cutlass.cutlass_dsl import T, dsl_user_op


def _asm(result_type, operands, text: str, constraints: str):
    return llvm.inline_asm(
        result_type,
        operands,
        text,
        constraints,
        has_side_effects=False,
        is_align_stack=False,
        asm_dialect=llvm.AsmDialect.AD_ATT,
    )


@dsl_user_op
def div_rn(a, b, *, loc=None, ip=None) -> Float32:
    return Float32(_asm(T.f32(), [Float32(a).ir_value(), Float32(b).ir_value()], "div.rn.f32 $0, $1, $2;", "=f,f,f"))


@dsl_user_op
def mul_rn(a, b, *, loc=None, ip=None) -> Float32:
    return Float32(_asm(T.f32(), [Float32(a).ir_value(), Float32(b).ir_value()], "mul.rn.f32 $0, $1, $2;", "=f,f,f"))


@dsl_user_op
def max_nan(a, b, *, loc=None, ip=None) -> Float32:
    return Float32(_asm(T.f32(), [Float32(a).ir_value(), Float32(b).ir_value()], "max.NaN.f32 $0, $1, $2;", "=f,f,f"))


@dsl_user_op
def max_abs_nan(acc, x, *, loc=None, ip=None) -> Float32:
    """``max.NaN(acc, |x|)``: one FMNMX with an absolute-value operand."""
    text = "{\n.reg .f32 magnitude;\nabs.f32 magnitude, $2;\nmax.NaN.f32 $0, $1, magnitude;\n}"
    return Float32(_asm(T.f32(), [Float32(acc).ir_value(), Float32(x).ir_value()], text, "=f,f,f"))


# The E2M1 code of y, |y| <= 6, by one float addition: adding c = 2^22 (|y| < 2), 2^23
# (|y| < 4) or 2^24 (|y| <= 6) rounds |y| (RNE, ties to even) to the E2M1 grid of its range,
# whose steps are 0.5, 1 and 2 = the ulp of c; the bits of |y| + c minus those of c count
# steps, and the code adds 0, 2 or 4 for the range: (c >> 22) - 298. c's exponent comes from
# max(bits(|y|), bits(1.0)) (E2M1's subnormal 0.5 has the step of [1, 2)). The kernel
# returns code + 8·sign + E2M1_CODE_BIAS (the caller sums eight of them into a word and
# subtracts the eight biases at once: quantize_activations.WORD_BIAS).
E2M1_CODE_BIAS = 298
_E2M1_CODE = "\n".join([
    "{",
    ".reg .f32 a, f;",
    ".reg .b32 c, t, e, s;",
    "abs.f32 a, $1;",  # |y| (an operand modifier of the two instructions below)
    "max.f32 f, a, 0f3F800000;",  # at least 1.0
    "and.b32 c, f, 0x7F800000;",  # 2^exponent(|y|) ...
    "add.u32 c, c, 0x0B000000;",  # ... times 2^22
    "add.rn.f32 t, a, c;",  # rounded to the grid
    "shr.u32 e, c, 22;",  # 298 + 2·(range index)
    "sub.u32 t, t, c;",  # steps above 0 in this range
    "add.u32 t, t, e;",
    "shr.u32 s, $1, 31;",
    "shl.b32 s, s, 3;",
    "add.u32 $0, t, s;",  # + 8 for a negative sign (-0.0 too)
    "}",
])


@dsl_user_op
def e2m1_code_biased(y, *, loc=None, ip=None) -> Uint32:
    """``code(clamp(y, ±6)) + E2M1_CODE_BIAS`` for ``|y| < 7`` (not NaN): the RNE E2M1 code
    (ties to the even code), sign bit kept; ``6 <= |y| < 7`` gives code 7 like the clamped
    value. See ``_E2M1_CODE``."""
    return Uint32(_asm(T.i32(), [Float32(y).ir_value()], _E2M1_CODE, "=r,f"))


@dsl_user_op
def e4m3_byte_from_f32(a, *, loc=None, ip=None) -> Uint32:
    """The E4M3 byte of ``a`` (in the low 8 bits of a Uint32)."""
    text = (
        "{\n.reg .b16 pair;\n.reg .f32 zero;\nmov.f32 zero, 0f00000000;\n"
        "cvt.rn.satfinite.e4m3x2.f32 pair, zero, $1;\ncvt.u32.u16 $0, pair;\n}"
    )
    return Uint32(_asm(T.i32(), [Float32(a).ir_value()], text, "=r,f"))


@dsl_user_op
def f32_from_e4m3_byte(byte, *, loc=None, ip=None) -> Float32:
    """Decode the E4M3 byte in the low 8 bits of ``byte``."""
    text = (
        "{\n.reg .b16 packed, lo, hi;\n.reg .b32 halves;\n"
        "cvt.u16.u32 packed, $1;\n"
        "cvt.rn.f16x2.e4m3x2 halves, packed;\n"
        "mov.b32 {lo, hi}, halves;\n"
        "cvt.f32.f16 $0, lo;\n}"
    )
    return Float32(_asm(T.f32(), [Uint32(byte).ir_value()], text, "=f,r"))


@dsl_user_op
def bf16x2_splat_from_f32(a, *, loc=None, ip=None) -> Uint32:
    """``a`` rounded to bf16 (``cvt.rn.bf16x2.f32``) in both halves of a Uint32."""
    return Uint32(_asm(T.i32(), [Float32(a).ir_value()], "cvt.rn.bf16x2.f32 $0, $1, $1;", "=r,f"))


# Byte p of ``word`` holds codes 2p (low nibble) and 2p+1 (high nibble); byte p of
# ``word << 4`` holds code 2p in its high nibble. One ``prmt`` puts the latter in byte 1
# and the former in byte 3, so each code's sign sits on a bf16 sign bit (15, 31) and its
# three magnitude bits on bits 12..14 / 28..30, 6 places above where they belong.
# Bytes 0 and 2 of the prmt result are masked away, so their selector does not matter.
DECODE_SELECTORS = tuple(f"0x{(4 + p) << 12 | p << 4:04x}" for p in range(4))
_DECODE_WORD = "\n".join(
    ["{", ".reg .b32 shifted, x, m;", "shl.b32 shifted, $4, 4;"]
    + [
        line
        for pair, selector in enumerate(DECODE_SELECTORS)
        for line in (
            f"prmt.b32 x, shifted, $4, {selector};",  # byte 1: code 2p in the high nibble; byte 3: code 2p+1
            "and.b32 m, x, 0x70007000;",  # the two magnitudes ...
            "shr.b32 m, m, 6;",  # ... to bf16 bits 6..8 and 22..24
            "lop3.b32 x, m, x, 0x80008000, 0xF8;",  # m | (x & sign bits)  (LUT: a | (b & c))
            f"mul.rn.bf16x2 ${pair}, x, $5;",
        )
    ]
    + ["}"]
)


@dsl_user_op
def decode_word_bf16x2(word, scale_pair, *, loc=None, ip=None):
    """Decode the 8 E2M1 codes of ``word`` (code i in bits 4i..4i+3) into four bf16 pairs
    ``(e2m1(c_2p), e2m1(c_2p+1)) · scale``, exactly, where ``scale_pair`` is a bf16x2
    splat of ``s · 2^117``.

    One shift per word, then per pair (``DECODE_SELECTORS[p]``): a ``prmt`` puts code 2p in
    the top nibble of the low half and code 2p+1 in the top nibble of the high half (from
    ``word << 4`` and ``word``), an AND and a shift move the magnitude bits to bf16 bits
    6..8 / 22..24, one ``lop3`` adds the sign bits 15 / 31 (giving the E2M1 values times
    2^-126), and one ``mul.rn.bf16x2`` applies the scale: 21 instructions per 8 codes.
    ``tests/test_inline_ptx.py`` runs this text through a PTX interpreter for every byte
    value at every position.
    """
    result = llvm.inline_asm(
        llvm.StructType.get_literal([T.i32()] * 4),
        [Uint32(word).ir_value(), Uint32(scale_pair).ir_value()],
        _DECODE_WORD,
        "=r,=r,=r,=r,r,r",
        has_side_effects=False,
        is_align_stack=False,
        asm_dialect=llvm.AsmDialect.AD_ATT,
    )
    return [Uint32(llvm.extractvalue(T.i32(), result, [i])) for i in range(4)]
