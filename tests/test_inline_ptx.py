"""The kernels' inline PTX for E2M1, run on the CPU by a small interpreter of the very text
the GPU compiles (``tests/ptx_interpreter.py``); mutated texts must fail the same checks:

* the decode (``_ptx.decode_word_bf16x2``): every word must become the bf16 pairs
  ``(e2m1(c_2p), e2m1(c_2p+1)) · 2^-126`` (the pattern the block-scale multiply expects),
  for every byte value at every position, and the multiply by ``s · 2^117`` must then give
  ``e2m1 · s · 2^-9`` exactly for every finite E4M3 scale;
* the quantizer's rounding (``_ptx.e2m1_code_biased``): the code of every clamped value
  must equal the CPU reference's ``formats.e2m1_code_from_float``."""

import numpy as np
import pytest
import ptx_interpreter
import torch

from nvfp4lab.formats import (
    E2M1_GRID,
    E2M1_ROUNDING_THRESHOLDS,
    e2m1_code_from_float,
    e2m1_float_from_code,
    e4m3_float_from_byte,
)
from nvfp4lab.kernels import _ptx
from nvfp4lab.kernels._ptx import _DECODE_WORD, _E2M1_CODE, E2M1_CODE_BIAS
from nvfp4lab.kernels.quantize_activations import WORD_BIAS

MASK = np.uint64(0xFFFFFFFF)


def run_decode_text(words: np.ndarray, text: str = _DECODE_WORD) -> list[np.ndarray]:
    """The four bf16x2 operands ``_DECODE_WORD``'s ``mul.rn.bf16x2`` instructions receive
    (before the scale), in output order, for uint32 ``words``."""
    _, multiplies = ptx_interpreter.run(text, {"$4": words})
    assert [dst for _, dst, _, _ in multiplies] == ["$0", "$1", "$2", "$3"]
    assert all(names[1] == "$5" for _, _, names, _ in multiplies), "each pair is multiplied by the scale operand $5"
    return [values[0].astype(np.uint32) for _, _, _, values in multiplies]


def bf16_pair_values(pattern: np.ndarray) -> torch.Tensor:
    """(n, 2) float64: the low and high bf16 of each 32-bit pattern."""
    p = torch.from_numpy(pattern.astype(np.int64))
    low = ((p & 0xFFFF) << 16).to(torch.int32).view(torch.float32)
    high = (p & 0xFFFF0000).to(torch.int32).view(torch.float32)
    return torch.stack([low, high], dim=1).double()


def every_byte_at_every_position() -> np.ndarray:
    rng = np.random.default_rng(0)
    words = []
    for position in range(4):
        background = rng.integers(0, 2**32, size=256, dtype=np.uint64)
        byte = np.arange(256, dtype=np.uint64) << np.uint64(8 * position)
        words.append((background & ~(np.uint64(0xFF) << np.uint64(8 * position)) & MASK) | byte)
    words.append(rng.integers(0, 2**32, size=4096, dtype=np.uint64))
    return np.concatenate(words).astype(np.uint32)


def test_the_decode_text_gives_every_code_pair_times_two_to_the_minus_126(text=_DECODE_WORD):
    words = every_byte_at_every_position()
    pairs = run_decode_text(words, text)
    codes = torch.from_numpy(words.astype(np.int64))
    for p in range(4):
        want_low = e2m1_float_from_code(((codes >> (8 * p)) & 0xF).to(torch.uint8)).double() * 2.0**-126
        want_high = e2m1_float_from_code(((codes >> (8 * p + 4)) & 0xF).to(torch.uint8)).double() * 2.0**-126
        got = bf16_pair_values(pairs[p])
        assert torch.equal(got[:, 0], want_low) and torch.equal(got[:, 1], want_high), f"pair {p}"
        assert torch.equal(torch.signbit(got[:, 0]), torch.signbit(want_low)), "the sign of -0 is kept"


def test_the_scale_multiply_is_exact_for_every_finite_scale_and_code():
    words = np.array([0x76543210, 0xFEDCBA98], dtype=np.uint32)  # codes 0..7, then 8..15
    decoded = torch.stack([bf16_pair_values(p) for p in run_decode_text(words)], dim=1)  # (word, pair, half)
    finite = torch.tensor([b for b in range(128) if b != 0x7F], dtype=torch.uint8)  # block scales are >= 0
    scale = e4m3_float_from_byte(finite).double()
    multiplier = (scale * 2.0**117).float().bfloat16().double()
    assert torch.equal(multiplier, scale * 2.0**117), "s·2^117 is exact in bf16"
    product = decoded.reshape(-1)[:, None] * multiplier[None, :]
    assert torch.equal(product.float().bfloat16().double(), product), "every product fits bf16: mul.rn is exact"
    want = e2m1_float_from_code(torch.arange(16, dtype=torch.uint8)).double()[:, None] * scale[None, :] * 2.0**-9
    assert torch.equal(product, want)


@pytest.mark.parametrize("op", ["cvt", "ex2", "approx"])
def test_the_decode_has_no_conversion_or_approximate_instruction(op):
    assert op not in _DECODE_WORD


# ------------------------------------------------------------------ the quantizer's E2M1 rounding
def run_code_text(y: np.ndarray, text: str = _E2M1_CODE) -> np.ndarray:
    regs, _ = ptx_interpreter.run(text, {"$1": np.asarray(y, dtype=np.float32).view(np.uint32)})
    return (regs["$0"].astype(np.int64) - E2M1_CODE_BIAS)


def unclamped_floats() -> np.ndarray:
    """Every bf16 value in (-7, 7) with several low halves (ties and their neighbours sit
    there), the exact rounding thresholds ± 1 ulp, and random float32 in [-7, 7): the
    kernel's input range (a clamped value, or one below 7 by the quantizer's scale bound)."""
    high = np.arange(0, 0x40E0, dtype=np.uint32) << 16
    lows = np.array([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF], dtype=np.uint32)
    positive = (high[:, None] | lows[None, :]).reshape(-1).view(np.float32)
    thresholds = np.array([t for t, _ in E2M1_ROUNDING_THRESHOLDS] + list(E2M1_GRID), dtype=np.float32)
    below, above = np.nextafter(thresholds, np.float32(0)), np.nextafter(thresholds, np.float32(7))
    around = np.concatenate([thresholds, below, above])
    rng = np.random.default_rng(1)
    values = np.concatenate([positive, around, rng.uniform(0, 7, 1 << 20).astype(np.float32)])
    values = values[values < 7]
    return np.concatenate([values, -values])


def test_the_code_text_rounds_every_value_below_7_like_the_clamping_reference(text=_E2M1_CODE):
    y = unclamped_floats()
    want = e2m1_code_from_float(torch.from_numpy(y).clamp(-6, 6)).numpy().astype(np.int64)
    assert (np.abs(y) > 6).sum() > 1000, "values above 6 are tested"
    got = run_code_text(y, text)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"{bad.size} of {y.size} differ, e.g. y={y[bad[:5]]}: {got[bad[:5]]} vs {want[bad[:5]]}"


def test_the_code_text_keeps_the_sign_of_zero_and_of_tiny_values():
    y = np.array([0.0, -0.0, 1e-45, -1e-45, 0.25, -0.25], dtype=np.float32)
    assert run_code_text(y).tolist() == [0, 8, 0, 8, 0, 8]


# ------------------------------------------------------------------ the checks can fail
@pytest.mark.parametrize("old, new", [("0x0B000000", "0x0B800000"), ("0f3F800000", "0f3F000000"),
                                      ("add.rn.f32", "sub.u32"), ("shr.u32 s, $1, 31", "shr.u32 s, $1, 30"),
                                      ("shr.u32 e, c, 22", "shr.u32 e, c, 21")])
def test_a_mutated_code_text_fails_the_rounding_check(old, new):
    assert old in _E2M1_CODE
    with pytest.raises(AssertionError):
        test_the_code_text_rounds_every_value_below_7_like_the_clamping_reference(_E2M1_CODE.replace(old, new, 1))


@pytest.mark.parametrize("old, new", [("0x80008000", "0x80808000"), ("0xF8", "0xFE"),
                                      ("shr.b32 m, m, 6", "shr.b32 m, m, 5"), (_ptx.DECODE_SELECTORS[1], "0x5001"),
                                      ("shl.b32 shifted, $4, 4", "shl.b32 shifted, $4, 3")])
def test_a_mutated_decode_text_fails_the_decode_check(old, new):
    assert old in _DECODE_WORD
    with pytest.raises(AssertionError):
        test_the_decode_text_gives_every_code_pair_times_two_to_the_minus_126(_DECODE_WORD.replace(old, new, 1))


def test_the_word_bias_leaves_exactly_the_packed_codes():
    """The quantizer sums eight ``code + E2M1_CODE_BIAS`` at 4-bit offsets (carries cross the
    nibbles) and subtracts ``WORD_BIAS`` once: modulo 2^32 that is the packed word."""
    codes = np.random.default_rng(2).integers(0, 16, size=(100_000, 8), dtype=np.uint64)
    codes[:16] = np.arange(16, dtype=np.uint64)[:, None]  # all-equal words, 0x00000000 ... 0xFFFFFFFF
    shifts = np.arange(8, dtype=np.uint64) * np.uint64(4)
    biased = ((codes + np.uint64(E2M1_CODE_BIAS)) << shifts).sum(axis=1)
    packed = (codes << shifts).sum(axis=1)
    assert np.array_equal((biased - np.uint64(WORD_BIAS)) % np.uint64(2**32), packed)
