"""Exact scalar PTX operations the kernels need, as inline assembly.

Each helper names its PTX instruction, so rounding is explicit and no compiler flag
(fast math, FMA contraction, flush-to-zero) can change a result:

* ``div_rn``            ``div.rn.f32``: IEEE division, round to nearest even.
* ``mul_rn``            ``mul.rn.f32``: never fused into an FMA.
* ``max_nan``           ``max.NaN.f32``: NaN-propagating maximum.
* ``e4m3_byte_from_f32`` ``cvt.rn.satfinite.e4m3x2.f32``: RNE, saturate at ±448, NaN kept.
* ``f32_from_e4m3_byte`` ``cvt.rn.f16x2.e4m3x2`` then ``cvt.f32.f16`` (both exact).
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
def mul_bf16x2(a, b, *, loc=None, ip=None) -> Uint32:
    """``mul.rn.bf16x2`` on two packed bf16 pairs (subnormals supported on sm_90)."""
    return Uint32(_asm(T.i32(), [Uint32(a).ir_value(), Uint32(b).ir_value()], "mul.rn.bf16x2 $0, $1, $2;", "=r,r,r"))


@dsl_user_op
def bf16x2_splat_from_f32(a, *, loc=None, ip=None) -> Uint32:
    """``a`` rounded to bf16 (``cvt.rn.bf16x2.f32``) in both halves of a Uint32."""
    return Uint32(_asm(T.i32(), [Float32(a).ir_value()], "cvt.rn.bf16x2.f32 $0, $1, $1;", "=r,f"))
