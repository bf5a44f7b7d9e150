"""E2M1 and E4M3 conversions against independent oracles (ml_dtypes, the bit formula)."""

import ml_dtypes
import numpy as np
import pytest
import torch

from nvfp4lab import formats as f


def all_finite_bf16() -> torch.Tensor:
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    values = bits.view(torch.bfloat16)
    return values[torch.isfinite(values)]


def ml_dtypes_e2m1_codes(y: torch.Tensor) -> torch.Tensor:
    codes = y.numpy().astype(np.float32).astype(ml_dtypes.float4_e2m1fn).view(np.uint8) & 0x0F
    return torch.from_numpy(codes.astype(np.uint8))


def test_every_bf16_bit_pattern_rounds_like_ml_dtypes():
    values = all_finite_bf16().to(torch.float32).clamp(-6, 6)  # the quantizer clamps first
    assert values.numel() == 2**16 - 2 * 2**7  # all but the 256 Inf/NaN patterns
    assert torch.equal(f.e2m1_code_from_float(values), ml_dtypes_e2m1_codes(values))


@pytest.mark.parametrize(
    "tie, even_code",
    [(0.25, 0), (0.75, 2), (1.25, 2), (1.75, 4), (2.5, 4), (3.5, 6), (5.0, 6)],
)
def test_ties_go_to_the_even_code_and_neighbours_to_the_nearest(tie, even_code):
    t = torch.tensor(tie, dtype=torch.float32)
    below = torch.nextafter(t, torch.tensor(0.0))
    above = torch.nextafter(t, torch.tensor(10.0))
    lower_code = int(torch.bucketize(t, torch.tensor(f.E2M1_GRID))) - 1
    for sign, sign_bit in ((1.0, 0), (-1.0, 8)):
        codes = f.e2m1_code_from_float(sign * torch.stack([below, t, above])).tolist()
        assert codes == [lower_code | sign_bit, even_code | sign_bit, (lower_code + 1) | sign_bit]


def test_saturation_sign_and_negative_zero():
    y = torch.tensor([6.0, 6.5, 1e30, -7.0, -0.0, -0.1, 0.0])
    assert f.e2m1_code_from_float(y).tolist() == [7, 7, 7, 15, 8, 8, 0]


def test_decode_table_is_the_grid():
    codes = torch.arange(16, dtype=torch.uint8)
    expected = list(f.E2M1_GRID) + [-v for v in f.E2M1_GRID]
    assert f.e2m1_float_from_code(codes).tolist() == expected
    assert torch.equal(f.e2m1_code_from_float(f.e2m1_float_from_code(codes)), codes)


def test_packing_puts_even_elements_in_the_low_nibble():
    codes = torch.tensor([[1, 2, 15, 8]], dtype=torch.uint8)
    packed = f.pack_e2m1(codes)
    assert packed.dtype == torch.float4_e2m1fn_x2 and packed.shape == (1, 2)
    assert packed.view(torch.uint8).tolist() == [[0x21, 0x8F]]
    assert torch.equal(f.unpack_e2m1(packed), codes)
    with pytest.raises(ValueError, match="even"):
        f.pack_e2m1(torch.zeros(3, dtype=torch.uint8))


def test_all_256_e4m3_bytes_decode_like_torch_and_ml_dtypes():
    byte = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    ours = f.e4m3_float_from_byte(byte)
    from_torch = byte.view(torch.float8_e4m3fn).to(torch.float32)
    from_ml = torch.from_numpy(byte.numpy().view(ml_dtypes.float8_e4m3fn).astype(np.float32))
    nan = torch.isnan(ours)
    assert nan.nonzero().flatten().tolist() == [0x7F, 0xFF]
    assert torch.equal(nan, torch.isnan(from_torch)) and torch.equal(nan, torch.isnan(from_ml))
    assert torch.equal(ours[~nan], from_torch[~nan]) and torch.equal(ours[~nan], from_ml[~nan])
    assert ours[0x7E] == 448 and ours[0x08] == 2.0**-6 and ours[0x01] == 2.0**-9


def test_e4m3_rounding_matches_ml_dtypes_over_its_whole_range():
    # Every float32 between the ±1/2-ulp neighbourhoods of all E4M3 values, plus random.
    grid = f.e4m3_float_from_byte(torch.arange(0x7F, dtype=torch.int32).to(torch.uint8))
    mids = (grid[1:] + grid[:-1]) / 2  # exact ties (float32 holds them)
    candidates = torch.cat([grid, mids, torch.nextafter(mids, torch.zeros(1)), torch.nextafter(mids, torch.full((1,), 1e9))])
    randoms = torch.exp(torch.empty(100_000).uniform_(-12, 7, generator=torch.Generator().manual_seed(0)))
    values = torch.cat([candidates, randoms, torch.tensor([448.0, 460.0, 464.0, 479.0, 480.0, 1e6, 3e38])])
    ours = f.e4m3_from_float(values).view(torch.uint8)
    oracle = np.minimum(values.numpy(), 448.0).astype(ml_dtypes.float8_e4m3fn).view(np.uint8)
    assert torch.equal(ours, torch.from_numpy(oracle))
    assert f.e4m3_from_float(torch.tensor([1e6])).view(torch.uint8).item() == 0x7E  # saturates
    assert f.e4m3_from_float(torch.tensor([2.0**-10])).view(torch.uint8).item() == 0x00  # tie -> even 0
    assert f.e4m3_from_float(torch.tensor([1.5 * 2.0**-9])).view(torch.uint8).item() == 0x02  # tie -> even
