"""The decode kernel's weight layout (pure torch; built once in ``finalize_weights``).

:mod:`decode_gemm` computes ``zᵀ = W · xᵀ`` with ``mma.sync.m16n8k16``: 16 weight rows
(output channels) are the MMA's A operand. For one 16 × 64 chunk (an "m-tile" of 16
rows, 64 of K) each lane of a warp loads **one 16-byte word quad** that holds exactly its
A-fragment codes for the chunk's four k16 steps, and **8 scale bytes**:

* word ``j`` (k16 step ``j``) of lane ``L`` (``r = L // 4``, ``c = 2·(L % 4)``) holds the
  codes of fragment registers ``(row r, k c..c+1)``, ``(r+8, c..c+1)``, ``(r, c+8..c+9)``,
  ``(r+8, c+8..c+9)``, each code's four bits at the positions :data:`TERMS` reads them
  from, so that register ``i`` is ``OR_t ((word >> shift_t) & mask_t)``: a bf16 pair
  equal to the two E2M1 values times ``2^-126`` (code bit 0..2 at bf16 bits 6..8, the
  sign at bit 15; the same placement as ``_ptx.decode_word_bf16x2``). That is 13 integer
  operations per 8 codes (registers 0..2: one AND, or a shift and an AND; register 3:
  three of each and two ORs), no ``prmt``.
* scale byte ``2j + h`` of row pair ``r`` is the block scale of row ``r + 8h`` at step
  ``j``, **re-encoded** as ``q = E'·8 + m'`` with ``s = 2^(E'-9)·(1 + m'/8)``
  (:func:`reencode_scales`): every non-zero E4M3 magnitude, subnormals included, is
  such a normal number with ``0 <= E' <= 17``. The bf16 multiplier ``s·2^117`` is
  ``q·16 + 0x7580`` (bf16 exponent field ``E' + 235``, mantissa ``m'``): the kernels get
  rows r and r+8's multipliers, one per half, from one ``prmt`` (``q_r | q_{r+8} << 16``)
  and one multiply-add by 16 plus ``0x75807580``, and each ``mul.rn.bf16x2`` takes its
  half as a splat (``q · 0x00100010 + 0x75807580`` is that splat). One ``mul.rn.bf16x2`` then
  gives ``e2m1 · s · 2^-9`` exactly (at most 6 significant bits, within bf16's normal
  range), the value the other kernels produce.
* A negative scale is folded into the codes (their sign bits flipped: ``e2m1(c)·s =
  e2m1(c ^ 8)·|s|``) and a zero scale zeroes its codes (keeping their sign), so the
  re-encoded scale only needs magnitudes; the decoded values are unchanged.

Memory order: ``words (G, N/16, K/64, 32 lanes, 4)`` uint32 and ``scales (G, N/16, K/64,
8 row pairs, 8)`` uint8: a warp streaming one m-tile along K reads 512 + 64 contiguous
bytes per chunk.
"""

from __future__ import annotations

import torch

from nvfp4lab.formats import unpack_e2m1

#: Register i of a word: OR over (right shift, mask) terms (a negative shift is a left shift).
SIGN_MAG_MASK = 0x81C081C0  # bf16 bits 6..8 and 15 of both halves
TERMS = (
    ((0, SIGN_MAG_MASK),),
    ((-3, SIGN_MAG_MASK),),
    ((-6, SIGN_MAG_MASK),),
    ((6, 0x01800180), (5, 0x00400040), (-5, 0x80008000)),
)
#: Fragment register i holds (row offset, k offset) of its low half; the high half is k + 1.
REGISTER_ELEMENTS = ((0, 0), (8, 0), (0, 8), (8, 8))
SCALE_MULTIPLIER = 0x00100010  # q -> (q << 4) in both halves
SCALE_BIAS = 0x75807580  # bf16 exponent field 235 in both halves
SCALE_EXPONENT_BIAS = 9  # s = 2^(E' - 9) · (1 + m'/8)
ROWS, K_CHUNK = 16, 64


def _bf16_bit_of(code_bit: int, half: int) -> int:
    """Where a code bit lands in a decoded bf16 pair (0..2: bits 6..8, 3: the sign bit 15)."""
    return 16 * half + (15 if code_bit == 3 else 6 + code_bit)


def _word_bit_sources() -> list[tuple[int, int, int, int]]:
    """For each word bit 0..31: ``(register, half, code bit)`` it carries, as a list
    indexed by word bit, plus the register/term consistency check."""
    sources = [None] * 32
    for register, terms in enumerate(TERMS):
        for half in range(2):
            for code_bit in range(4):
                target = _bf16_bit_of(code_bit, half)
                (shift,) = [s for s, mask in terms if mask >> target & 1]
                source = target + shift
                if not 0 <= source < 32 or sources[source] is not None:
                    raise AssertionError("TERMS do not tile the 32-bit word")
                sources[source] = (register, half, code_bit)
    return sources


WORD_BIT_SOURCES = tuple(_word_bit_sources())


def reencode_scales(scale_bytes: torch.Tensor):
    """E4M3 bytes (uint8) -> ``(q uint8, negative bool, zero bool)`` (see the module
    docstring). NaN bytes (0x7F, 0xFF) raise: the weights are finite."""
    b = scale_bytes.to(torch.int32)
    if bool(((b & 0x7F) == 0x7F).any()):
        raise ValueError("a weight block scale is NaN (E4M3 0x7F/0xFF): the weights must be finite")
    exponent, mantissa = (b >> 3) & 0xF, b & 7
    # subnormal m·2^-9: m = 2^p·(1 + f/8) with p = floor(log2 m) and f = (m·8 >> p) - 8
    p = torch.where(mantissa >= 4, 2, torch.where(mantissa >= 2, 1, 0))
    sub_e, sub_m = p, ((mantissa << 3) >> p) - 8
    e_prime = torch.where(exponent == 0, sub_e, exponent + (SCALE_EXPONENT_BIAS - 7))
    m_prime = torch.where(exponent == 0, sub_m, mantissa)
    zero = (b & 0x7F) == 0
    q = torch.where(zero, 0, e_prime * 8 + m_prime)
    return q.to(torch.uint8), (b & 0x80) != 0, zero


def pack_decode_weights(data: torch.Tensor, scales: torch.Tensor):
    """``data (G, N, K/2)`` packed E2M1 and ``scales (G, N, K/16)`` E4M3 (an
    :class:`~nvfp4lab.quantize.NVFP4Tensor`'s, any device) -> ``(words, scale_bytes)``
    in the decode layout, on the same device. Needs ``N % 16 == 0`` and ``K % 64 == 0``."""
    groups, n, half_k = data.shape
    k = 2 * half_k
    if n % ROWS or k % K_CHUNK:
        raise ValueError(f"the decode layout needs N % {ROWS} == 0 and K % {K_CHUNK} == 0; got N={n}, K={k}")
    codes = unpack_e2m1(data).to(torch.int32)  # (G, N, K)
    q, negative, zero = reencode_scales(scales.view(torch.uint8))  # (G, N, K/16)
    per_element = lambda t: t.repeat_interleave(16, dim=-1)  # noqa: E731
    codes = torch.where(per_element(zero), codes & 8, codes) ^ (per_element(negative).to(torch.int32) << 3)

    m_tiles, chunks = n // ROWS, k // K_CHUNK
    # codes as (G, m_tile, row 16, chunk, step 4, k 16)
    tiles = codes.view(groups, m_tiles, ROWS, chunks, 4, 16)
    lane = torch.arange(32, device=data.device)
    row_of_lane, col_of_lane = lane // 4, 2 * (lane % 4)
    words = torch.zeros(groups, m_tiles, chunks, 32, 4, dtype=torch.int64, device=data.device)
    for bit, (register, half, code_bit) in enumerate(WORD_BIT_SOURCES):
        row_offset, k_offset = REGISTER_ELEMENTS[register]
        rows = row_of_lane + row_offset  # (32,)
        ks = col_of_lane + k_offset + half
        picked = tiles[:, :, rows, :, :, ks]  # (32, G, m_tile, chunk, step) after advanced indexing
        picked = picked.permute(1, 2, 3, 0, 4)  # (G, m_tile, chunk, lane, step)
        words |= ((picked >> code_bit) & 1).to(torch.int64) << bit
    words = words.to(torch.int32)  # two's-complement view of the uint32 bits

    q_tiles = q.view(groups, m_tiles, 2, 8, chunks, 4)  # (G, m_tile, h, row pair, chunk, step)
    scale_bytes = q_tiles.permute(0, 1, 4, 3, 5, 2).reshape(groups, m_tiles, chunks, 8, 8)
    return words.contiguous(), scale_bytes.contiguous()


def _bf16_from_bits(bits: torch.Tensor) -> torch.Tensor:
    return bits.to(torch.int16).view(torch.bfloat16)


def emulate_decode(words: torch.Tensor, scale_bytes: torch.Tensor) -> torch.Tensor:
    """What the kernel computes from the decode layout, in torch integer and bf16
    operations: ``(G, N, K)`` float32 equal to ``e2m1 · s · 2^-9`` (for the tests)."""
    groups, m_tiles, chunks = words.shape[:3]
    w = words.to(torch.int64) & 0xFFFFFFFF  # (G, mt, chunk, lane, step)
    q = scale_bytes.to(torch.int64)  # (G, mt, chunk, row pair, 8): byte 2·step + h
    out = torch.zeros(groups, m_tiles, ROWS, chunks, 4, 16, dtype=torch.float32, device=words.device)
    lane = torch.arange(32, device=words.device)
    for register, terms in enumerate(TERMS):
        bits = torch.zeros_like(w)
        for shift, mask in terms:
            shifted = w >> shift if shift >= 0 else (w << -shift) & 0xFFFFFFFF
            bits |= shifted & mask
        row_offset, k_offset = REGISTER_ELEMENTS[register]
        h = row_offset // 8
        # the multiplier of row (lane//4 + row_offset) at each step: one multiply-add
        q_row = q[:, :, :, lane // 4][..., [2 * s + h for s in range(4)]]  # (G, mt, chunk, lane, step)
        multiplier = (q_row * SCALE_MULTIPLIER + SCALE_BIAS) & 0xFFFF
        for half in range(2):
            value = _bf16_from_bits((bits >> (16 * half)) & 0xFFFF) * _bf16_from_bits(multiplier)  # bf16 multiply
            rows = lane // 4 + row_offset
            ks = 2 * (lane % 4) + k_offset + half
            out[:, :, rows, :, :, ks] = value.float().permute(3, 0, 1, 2, 4)
    return out.view(groups, m_tiles * ROWS, chunks * K_CHUNK)
