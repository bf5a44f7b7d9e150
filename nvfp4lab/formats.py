"""The two number formats of NVFP4 and their bit-exact conversions.

* **E2M1** (FP4): 1 sign, 2 exponent (bias 1), 1 mantissa bit. Codes 0..7 are the
  magnitudes ``E2M1_GRID`` = {0, 0.5, 1, 1.5, 2, 3, 4, 6}; codes 8..15 the same with the
  sign bit (8 is -0). No Inf, no NaN.
* **E4M3** (FP8, ``torch.float8_e4m3fn``): the block-scale format. Max 448, min normal
  2^-6, min subnormal 2^-9, one NaN pattern per sign (0x7F / 0xFF), no Inf.

Packing: two E2M1 codes per byte, element ``2i`` in the low nibble and ``2i+1`` in the
high nibble (``torch.float4_e2m1fn_x2``).

Every function here is vectorised, works on any device and is exact: no step rounds
except where the docstring says so.
"""

from __future__ import annotations

import torch

E2M1_MAX = 6.0
E4M3_MAX = 448.0
E4M3_MIN_NORMAL = 2.0**-6
E4M3_MIN_SUBNORMAL = 2.0**-9
#: ``gs = amax / GLOBAL_SCALE_DIVISOR`` maps a tensor's amax to the top of both formats.
GLOBAL_SCALE_DIVISOR = E2M1_MAX * E4M3_MAX  # 2688, exact

E2M1_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)

# Round-to-nearest-even decision points on |y|, for |y| <= 6. At a tie the even code
# wins: the code rises *after* a tie point whose lower neighbour is even (strict >) and
# *at* a tie point whose upper neighbour is even (>=).
#   (threshold, inclusive): code += 1 when |y| > t (inclusive False) or |y| >= t (True)
E2M1_ROUNDING_THRESHOLDS = (
    (0.25, False),  # 0 | 0.5  : tie -> 0 (code 0 even)
    (0.75, True),  # 0.5 | 1  : tie -> 1 (code 2 even)
    (1.25, False),  # 1 | 1.5  : tie -> 1
    (1.75, True),  # 1.5 | 2  : tie -> 2
    (2.5, False),  # 2 | 3    : tie -> 2
    (3.5, True),  # 3 | 4    : tie -> 4
    (5.0, False),  # 4 | 6    : tie -> 4
)


def e2m1_code_from_float(y: torch.Tensor) -> torch.Tensor:
    """Round ``y`` to the nearest E2M1 value (ties to the even code) and return its code.

    ``y``: any shape, float32 (or any float dtype; compared exactly). Values with
    ``|y| > 6`` saturate to ±6. The sign bit of ``y`` is kept, so ``-0.0`` and tiny
    negative values give code 8 (-0). NaN gives code 0 or 8 (the quantizer lets its
    block scale carry the NaN instead).

    Returns uint8 codes 0..15, same shape as ``y``.
    """
    magnitude = y.abs()
    code = torch.zeros(y.shape, dtype=torch.uint8, device=y.device)
    for threshold, inclusive in E2M1_ROUNDING_THRESHOLDS:  # 7 fixed steps, not data
        above = magnitude >= threshold if inclusive else magnitude > threshold
        code += above.to(torch.uint8)
    return code | (torch.signbit(y).to(torch.uint8) << 3)


def e2m1_float_from_code(code: torch.Tensor) -> torch.Tensor:
    """Decode E2M1 codes (uint8 0..15, any shape) to float32 values (exact)."""
    table = torch.tensor(E2M1_GRID + tuple(-v for v in E2M1_GRID), dtype=torch.float32)
    return table.to(code.device)[code.long()]


def pack_e2m1(code: torch.Tensor) -> torch.Tensor:
    """Pack codes ``(..., K)`` uint8 into ``(..., K/2)`` ``torch.float4_e2m1fn_x2``.

    Element ``2i`` goes to the low nibble of byte ``i``, element ``2i+1`` to the high one.
    """
    if code.shape[-1] % 2:
        raise ValueError(f"pack_e2m1: last dimension must be even, got {code.shape[-1]}")
    low, high = code[..., 0::2], code[..., 1::2]
    return (low | (high << 4)).contiguous().view(torch.float4_e2m1fn_x2)


def unpack_e2m1(packed: torch.Tensor) -> torch.Tensor:
    """Unpack ``(..., K/2)`` float4_e2m1fn_x2 (or uint8) into codes ``(..., K)`` uint8."""
    byte = packed.view(torch.uint8)
    low, high = byte & 0x0F, byte >> 4
    return torch.stack((low, high), dim=-1).flatten(-2)


def e4m3_from_float(value: torch.Tensor) -> torch.Tensor:
    """Round non-negative float32 ``value`` to E4M3, saturating at 448.

    Round to nearest even (subnormals included, the grid step there is 2^-9); values
    above 448 become 448 (clamped *before* the cast: older PyTorch casts turned >= 480
    into NaN). NaN stays NaN (byte 0x7F). Returns ``torch.float8_e4m3fn``.
    """
    return value.clamp(max=E4M3_MAX).to(torch.float8_e4m3fn)


def e4m3_float_from_byte(byte: torch.Tensor) -> torch.Tensor:
    """Decode E4M3 bytes (uint8, any shape) to float32, computed from the bits.

    ``(-1)^s · 2^(e-7) · (1 + m/8)`` for e > 0, ``(-1)^s · 2^-6 · m/8`` for e = 0, and
    NaN for 0x7F / 0xFF. An oracle independent of ``torch.float8_e4m3fn``'s own cast.
    """
    b = byte.to(torch.int32)
    sign = torch.where(b & 0x80 != 0, -1.0, 1.0)
    exponent = (b >> 3) & 0xF
    mantissa = (b & 0x7).to(torch.float32)
    normal = torch.ldexp(1.0 + mantissa / 8.0, (exponent - 7).to(torch.float32))
    subnormal = mantissa / 8.0 * 2.0**-6
    value = sign * torch.where(exponent == 0, subnormal, normal)
    return torch.where((b & 0x7F) == 0x7F, torch.nan, value)
