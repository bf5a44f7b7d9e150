"""The decode kernel's weight layout and its bit tricks, emulated on the CPU: the decode
of each 32-bit word, the one-multiply-add scale re-encoding and the layout together must
give back ``e2m1 · s · 2^-9`` exactly, for every finite E4M3 scale byte and every code."""

import pytest
import torch

from nvfp4lab.formats import e2m1_float_from_code, e4m3_float_from_byte, pack_e2m1, unpack_e2m1
from nvfp4lab.kernels.decode_layout import emulate_decode, pack_decode_weights, reencode_scales
from nvfp4lab.quantize import dynamic_global_scale, quantize_nvfp4


def exact_values(data, scales):
    """The oracle: e2m1(code) · E4M3(byte) · 2^-9, from the bits (formats' decoders)."""
    codes = unpack_e2m1(data)
    per_element = e4m3_float_from_byte(scales.view(torch.uint8)).repeat_interleave(16, dim=-1)
    return e2m1_float_from_code(codes).double() * per_element.double() * 2.0**-9


def test_every_finite_scale_byte_times_every_code_is_exact():
    finite = [b for b in range(256) if b & 0x7F != 0x7F]  # 254 bytes: zeros, subnormals, negatives
    blocks = torch.tensor(finite + [0x01, 0x80], dtype=torch.uint8)  # 256 blocks = 16 rows × 16 blocks
    scales = blocks.view(1, 16, 16)
    codes = torch.arange(16, dtype=torch.uint8).repeat(1, 16, 16)  # every code in every block
    data = pack_e2m1(codes).view(torch.uint8)
    words, scale_bytes = pack_decode_weights(data, scales.view(torch.float8_e4m3fn))
    got = emulate_decode(words, scale_bytes).double()
    want = exact_values(data, scales)
    assert torch.equal(got, want), f"{(got != want).sum().item()} of {want.numel()} values differ"
    assert torch.equal(torch.signbit(got[want != 0]), torch.signbit(want[want != 0]))


def test_quantized_weights_round_trip_through_the_layout():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(3, 48, 192, generator=g) * torch.logspace(-6, 2, 48)[None, :, None]  # subnormal scales too
    q = quantize_nvfp4(w, dynamic_global_scale(w, per_group=True, group_dim=0), group_dim=0)
    words, scale_bytes = pack_decode_weights(q.data, q.scales)
    assert words.shape == (3, 3, 3, 32, 4) and scale_bytes.shape == (3, 3, 3, 8, 8)
    assert torch.equal(emulate_decode(words, scale_bytes).double(), exact_values(q.data, q.scales))


def test_the_re_encoded_scale_is_a_normal_number_with_a_small_exponent():
    q, negative, zero = reencode_scales(torch.arange(0x7F, dtype=torch.uint8))  # all non-negative finite bytes
    assert not negative.any() and zero.sum() == 1
    assert int(q.max()) >> 3 == 17 and int(q[1:].min()) == 0  # 448 -> E'=17; 2^-9 -> E'=0, m'=0
    assert int(q.max()) * 16 + 0x7580 < 0x7F80  # the multiplier's bf16 exponent stays finite


@pytest.mark.parametrize("byte", [0x7F, 0xFF])
def test_nan_scales_are_rejected(byte):
    with pytest.raises(ValueError, match="NaN"):
        reencode_scales(torch.tensor([byte], dtype=torch.uint8))


def test_shapes_the_layout_cannot_hold_are_rejected():
    with pytest.raises(ValueError, match="N % 16"):
        pack_decode_weights(torch.zeros(1, 8, 32, dtype=torch.uint8), torch.zeros(1, 8, 4, dtype=torch.uint8))
