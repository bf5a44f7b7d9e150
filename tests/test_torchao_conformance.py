"""nvfp4lab against torchao's ``nvfp4_quantize`` (two-level scaling), on the CPU.

nvfp4lab uses torchao's operation order, so bytes are equal for every block torchao
treats the same way. The documented differences, each pinned below:

1. torchao clamps the block scale up to 2^-6 (E4M3's smallest normal); nvfp4lab keeps
   subnormal block scales (down to 2^-9) and lets blocks underflow to scale 0.
2. Consequently an all-zero block gets scale byte 0x08 (2^-6) in torchao, 0x00 here;
   both dequantize to 0.
3. A global amax of 0 gives torchao a global scale of 0 and NaN block scales; nvfp4lab
   floors the global scale at 2^-126 and gives zeros.
4. 0 < amax < 2688·2^-126: torchao's global scale is a float32 subnormal, nvfp4lab's is
   floored at 2^-126, so every block scale byte differs.
"""

import pytest
import torch
from helpers import heavy_tailed

from nvfp4lab import NVFP4Tensor, dequantize_nvfp4, quantize_nvfp4
from nvfp4lab.formats import E4M3_MIN_NORMAL

torchao_nvfp4 = pytest.importorskip("torchao.prototype.mx_formats.nvfp4_tensor")


def torchao_quantize(x2d: torch.Tensor, global_scale: torch.Tensor):
    scales, packed = torchao_nvfp4.nvfp4_quantize(x2d, per_tensor_scale=global_scale)
    return scales.view(torch.uint8), packed.view(torch.uint8)


def unclamped_blocks(q) -> torch.Tensor:
    """Blocks torchao treats as nvfp4lab does: fp32 block scale >= 2^-6."""
    return q.scales.to(torch.float32) >= E4M3_MIN_NORMAL


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_bytes_equal_torchao_wherever_its_scale_clamp_is_inactive(rng, dtype):
    x = heavy_tailed((256, 512), rng, dtype)
    x[::7] *= 1e-3  # quiet rows: their blocks reach the subnormal range
    q = quantize_nvfp4(x)
    their_scales, their_data = torchao_quantize(x, torchao_nvfp4.per_tensor_amax_to_scale(x.float().abs().max()))
    assert their_data.shape == q.data.shape
    assert torch.equal(q.global_scale, torchao_nvfp4.per_tensor_amax_to_scale(x.float().abs().max()))

    same = unclamped_blocks(q)
    assert same.float().mean() > 0.8 and (~same).any()  # both kinds of block are present
    ours_s = q.scales.view(torch.uint8)
    assert torch.equal(ours_s[same], their_scales[same])
    ours_bytes = q.data.view(torch.uint8).reshape(256, 32, 8)
    assert torch.equal(ours_bytes[same], their_data.reshape(256, 32, 8)[same])


def test_difference_1_torchao_clamps_subnormal_block_scales_up_to_2_pow_minus_6():
    x = torch.zeros(1, 32)
    x[0, :16] = 2688.0  # gs = 1
    x[0, 16:] = torch.linspace(-0.03, 0.03, 16)  # block scale 0.005 < 2^-6
    q = quantize_nvfp4(x)
    their_scales, _ = torchao_quantize(x, torch.tensor(1.0))
    assert q.scales.view(torch.uint8)[0, 1] < 0x08  # subnormal here
    assert their_scales[0, 1] == 0x08  # 2^-6 in torchao
    # Neither choice is uniformly more accurate: torchao's larger scale uses the finer
    # bottom of the E2M1 grid. Both stay within half a grid step of their own scale.
    _, their_packed = torchao_quantize(x, torch.tensor(1.0))
    theirs = NVFP4Tensor(
        their_packed.view(torch.float4_e2m1fn_x2), their_scales.view(torch.float8_e4m3fn), torch.tensor(1.0), x.shape, x.dtype
    )
    for t in (q, theirs):
        widest_step = 2 * t.scales.to(torch.float32)[0, 1]
        assert (dequantize_nvfp4(t) - x)[0, 16:].abs().max() <= widest_step / 2


def test_difference_2_zero_blocks_store_0x00_here_and_0x08_in_torchao():
    x = torch.ones(1, 32)
    x[0, 16:] = 0
    q = quantize_nvfp4(x)
    their_scales, their_data = torchao_quantize(x, q.global_scale)
    assert q.scales.view(torch.uint8)[0, 1] == 0x00 and their_scales[0, 1] == 0x08
    assert (q.data.view(torch.uint8)[0, 8:] == 0).all() and (their_data[0, 8:] == 0).all()


def test_difference_3_all_zero_tensor_is_nan_in_torchao_and_zero_here():
    x = torch.zeros(2, 16)
    their_scales, _ = torchao_quantize(x, torchao_nvfp4.per_tensor_amax_to_scale(x.abs().max()))
    assert torch.isnan(their_scales.view(torch.float8_e4m3fn).float()).all()
    assert (dequantize_nvfp4(quantize_nvfp4(x)) == 0).all()


def test_difference_4_a_tiny_amax_floors_the_global_scale_and_changes_every_scale_byte():
    """0 < amax < 2688·2^-126: torchao's global scale amax/2688 is a float32 subnormal;
    nvfp4lab floors it at 2^-126, so every block scale is smaller than torchao's (the top
    block's is no longer 448) and every scale byte differs."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 64, generator=g) * 1e-36
    amax = x.abs().max()
    assert 0 < amax < 2688 * 2.0**-126
    theirs = torchao_nvfp4.per_tensor_amax_to_scale(amax)
    q = quantize_nvfp4(x)
    assert q.global_scale.item() == 2.0**-126 and theirs.item() == (amax / 2688).item() < 2.0**-126
    their_scales, _ = torchao_quantize(x, theirs)
    assert their_scales.max() == 0x7E  # torchao: the top block gets 448
    assert (q.scales.view(torch.uint8) < their_scales).all()
