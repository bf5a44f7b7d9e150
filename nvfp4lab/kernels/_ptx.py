"""Exact scalar PTX operations the kernels need, as inline assembly.

Each helper names its PTX instruction, so rounding is explicit and no compiler flag
(fast math, FMA contraction, flush-to-zero) can change a result:

* ``div_rn``            ``div.rn.f32``: IEEE division, round to nearest even.
* ``mul_rn``            ``mul.rn.f32``: never fused into an FMA.
* ``max_nan``           ``max.NaN.f32``: NaN-propagating maximum.
* ``e4m3_byte_from_f32`` ``cvt.rn.satfinite.e4m3x2.f32``: RNE, saturate at ±448, NaN kept.
* ``f32_from_e4m3_byte`` ``cvt.rn.f16x2.e4m3x2`` then ``cvt.f32.f16`` (both exact).
* ``bf16x2_splat_from_f32`` ``cvt.rn.bf16x2.f32`` of one value into both halves.
* ``rint_u32``         ``cvt.rni.u32.f32``: round to nearest integer, ties to even.
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


_DECODE_WORD = "\n".join(
    ["{", ".reg .b32 lo, hi, x, a, b;", "and.b32 lo, $4, 0x0F0F0F0F;", "shr.b32 hi, $4, 4;", "and.b32 hi, hi, 0x0F0F0F0F;"]
    + [
        line
        for pair, selector in enumerate(("0x8480", "0x8581", "0x8682", "0x8783"))
        for line in (
            f"prmt.b32 x, lo, hi, {selector};",  # [code 2p, 0, code 2p+1, 0]: bytes of lo/hi, zeros
            "and.b32 a, x, 0x00070007;",
            "and.b32 b, x, 0x00080008;",
            "shl.b32 a, a, 6;",
            "shl.b32 b, b, 12;",
            "or.b32 x, a, b;",
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

    Per pair: ``prmt`` moves codes 2p and 2p+1 into the two 16-bit halves, two masks and
    shifts put magnitude bits at bf16 bits 6..8 and the sign at bit 15 (the E2M1 value
    times 2^-126), and one ``mul.rn.bf16x2`` applies the scale. The ``prmt`` selector
    nibble 8 picks a zero byte (sign-replicate of a byte whose top bit is 0).
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


@dsl_user_op
def rint_u32(a, *, loc=None, ip=None) -> Uint32:
    """``cvt.rni.u32.f32``: the nearest integer to ``a >= 0``, ties to even (NaN gives 0)."""
    return Uint32(_asm(T.i32(), [Float32(a).ir_value()], "cvt.rni.u32.f32 $0, $1;", "=r,f"))
