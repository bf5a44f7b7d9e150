"""The reference quantizer: against the independent oracle, edge cases and bad input."""

import math

import pytest
import torch
from helpers import heavy_tailed, oracle_dequantize, oracle_quantize

from nvfp4lab import dequantize_nvfp4, dynamic_global_scale, global_scale_from_amax, quantize_nvfp4
from nvfp4lab.quantize import NVFP4Tensor
from nvfp4lab.formats import E2M1_GRID, unpack_e2m1


def codes_of(q):
    return unpack_e2m1(q.data)


def assert_matches_oracle(x, q):
    rows = x.reshape(-1, x.shape[-1]).to(torch.float32).numpy()
    gs = q.global_scale_per_block().reshape(rows.shape[0], -1)[:, 0].numpy()
    codes, scales = oracle_quantize(rows, gs)
    assert torch.equal(codes_of(q).reshape(codes.shape), torch.from_numpy(codes))
    assert torch.equal(q.scales.view(torch.uint8).reshape(scales.shape), torch.from_numpy(scales))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_bytes_equal_the_independent_oracle(rng, dtype):
    x = heavy_tailed((64, 256), rng, dtype)
    q = quantize_nvfp4(x)
    assert q.data.shape == (64, 128) and q.data.dtype == torch.float4_e2m1fn_x2
    assert q.scales.shape == (64, 16) and q.scales.dtype == torch.float8_e4m3fn
    assert q.shape == x.shape and q.dtype == dtype
    assert_matches_oracle(x, q)


def test_dynamic_global_scale_is_amax_over_2688_and_the_max_block_gets_448(rng):
    x = heavy_tailed((16, 64), rng)
    amax = x.float().abs().max()
    q = quantize_nvfp4(x)
    assert q.global_scale.item() == (amax / 2688).item()
    block_amax = x.float().abs().reshape(16, 4, 16).amax(-1)
    top = block_amax == amax
    assert (q.scales.to(torch.float32)[top] == 448).all()


def test_per_group_global_scale_broadcasts_over_dim_minus_2(rng):
    x = heavy_tailed((5, 3, 32), rng) * torch.tensor([1.0, 1e-3, 50.0])[None, :, None].to(torch.bfloat16)
    gs = dynamic_global_scale(x, per_group=True)
    assert gs.shape == (3,)
    for g in range(3):  # per group equals quantizing that group alone
        assert gs[g] == dynamic_global_scale(x[:, g])
    q = quantize_nvfp4(x, gs)
    assert_matches_oracle(x, q)
    for g in range(3):
        alone = quantize_nvfp4(x[:, g].contiguous(), gs[g])
        assert torch.equal(q.scales[:, g].view(torch.uint8), alone.scales.view(torch.uint8))


def test_dequantized_values_are_grid_times_scale_times_global_scale(rng):
    """Every code (0..15) with every finite scale byte and a per-row global scale, against
    the independent numpy/ml_dtypes dequantizer, bit for bit."""
    scale_bytes = torch.tensor([b for b in range(256) if b not in (0x7F, 0xFF)], dtype=torch.uint8)
    rows, blocks = 4, scale_bytes.numel()
    packed = torch.randint(0, 256, (rows, blocks * 8), generator=rng, dtype=torch.uint8)
    packed[0, :8] = torch.tensor([0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE], dtype=torch.uint8)  # codes 0..15
    scales = scale_bytes[torch.randperm(blocks, generator=rng)].repeat(rows, 1)
    gs = torch.tensor([1.0, 2.0**-20, 3.7e-3, 1.0 / 2688], dtype=torch.float32)
    q = NVFP4Tensor(packed.view(torch.float4_e2m1fn_x2), scales.view(torch.float8_e4m3fn), gs,
                    torch.Size((rows, blocks * 16)), torch.float32, group_dim=0)
    expected = oracle_dequantize(packed.numpy(), scales.numpy(), gs.numpy())
    assert torch.equal(dequantize_nvfp4(q), torch.from_numpy(expected))
    assert torch.equal(dequantize_nvfp4(q, apply_global_scale=False),
                       torch.from_numpy(oracle_dequantize(packed.numpy(), scales.numpy(), 1.0)))
    first_scale = float(scales[0, 0].view(torch.float8_e4m3fn))  # row 0 has gs = 1
    assert dequantize_nvfp4(q)[0, :16].tolist() == [v * first_scale for v in E2M1_GRID + tuple(-v for v in E2M1_GRID)]


def test_zero_blocks_get_scale_byte_0_and_zero_codes():
    x = torch.randn(2, 48).to(torch.bfloat16)
    x[0, 16:32] = 0.0
    x[1, 0:16] = -0.0
    q = quantize_nvfp4(x)
    assert q.scales.view(torch.uint8)[0, 1] == 0 and q.scales.view(torch.uint8)[1, 0] == 0
    assert (codes_of(q)[0, 16:32] == 0).all()
    assert (codes_of(q)[1, 0:16] == 8).all()  # -0.0 keeps its sign bit, as E2M1 -0
    assert (dequantize_nvfp4(q)[0, 16:32] == 0).all() and (dequantize_nvfp4(q)[1, :16] == 0).all()


def test_all_zero_tensor_floors_the_global_scale_and_gives_zeros():
    x = torch.zeros(4, 32, dtype=torch.bfloat16)
    q = quantize_nvfp4(x)
    assert q.global_scale.item() == 2.0**-126
    assert (q.data.view(torch.uint8) == 0).all() and (q.scales.view(torch.uint8) == 0).all()
    assert (dequantize_nvfp4(q) == 0).all()
    assert global_scale_from_amax(torch.tensor(0.0)).item() == 2.0**-126


def test_subnormal_block_scales_are_kept_and_error_stays_within_half_a_step():
    # One loud block fixes gs; quieter blocks get block scales below 2^-6 (E4M3 subnormals).
    x = torch.zeros(1, 64)
    x[0, :16] = 2688.0  # gs = 1
    x[0, 16:32] = torch.linspace(-0.03, 0.03, 16)  # amax/6 = 0.005 -> subnormal scale 0.00488
    x[0, 32:48] = torch.linspace(-0.001, 0.0005, 16)  # 0.00017: rounds to scale 0 -> zeros
    q = quantize_nvfp4(x)
    scale_bytes = q.scales.view(torch.uint8)[0].tolist()
    assert scale_bytes[0] == 0x7E  # 448
    assert 0 < scale_bytes[1] < 0x08  # subnormal: exponent field 0
    assert scale_bytes[2] == 0 and scale_bytes[3] == 0
    assert_matches_oracle(x, q)
    d = dequantize_nvfp4(q)
    step = q.scales.to(torch.float32)[0, 1] * 2  # widest E2M1 step (4 -> 6) in that block
    assert (d[0, 16:32] - x[0, 16:32]).abs().max() <= step / 2 * 1.07  # + scale rounding (1/16)
    assert (d[0, 32:48] == 0).all()


def test_static_global_scale_too_small_clips_at_6_x_448_x_gs():
    x = torch.tensor([[100.0] * 8 + [-3.0] * 8])
    q = quantize_nvfp4(x, 1.0 / 2688)  # amax 1 calibrated, data 100
    assert q.scales.view(torch.uint8)[0, 0] == 0x7E
    assert dequantize_nvfp4(q)[0, 0] == 1.0 and dequantize_nvfp4(q)[0, 15] == -1.0
    assert codes_of(q)[0].tolist() == [7] * 8 + [15] * 8


def test_multiplier_is_capped_so_tiny_tensors_do_not_make_nan():
    x = torch.zeros(1, 32)
    x[0, 0] = 1e-38  # gs floors at 2^-126, block scale ~0.14 -> (1/gs)/s overflows float32
    q = quantize_nvfp4(x)
    assert q.global_scale.item() == 2.0**-126
    # capped at FLT_MAX: y = 1e-38 · 3.4028e38 = 3.40 -> code 5 (value 3); an Inf multiplier
    # would saturate it to code 7 and turn the block's zeros into 0·Inf = NaN
    y = torch.tensor(1e-38) * torch.finfo(torch.float32).max
    assert 3.0 < y.item() < 3.5
    assert codes_of(q)[0].tolist() == [5] + [0] * 31
    d = dequantize_nvfp4(q)
    assert d[0, 0].item() == 3.0 * q.scales.to(torch.float32)[0, 0].item() * 2.0**-126 and (d[0, 1:] == 0).all()
    assert_matches_oracle(x, q)


def test_nan_poisons_only_its_block_when_checks_are_off():
    x = torch.ones(1, 32)
    x[0, 3] = math.nan
    q = quantize_nvfp4(x, 1.0 / 2688, check_finite=False)
    assert q.scales.view(torch.uint8)[0, 0] == 0x7F
    d = dequantize_nvfp4(q)
    assert torch.isnan(d[0, :16]).all() and (d[0, 16:] == 1).all()


@pytest.mark.parametrize("bad", [math.inf, -math.inf])
def test_inf_with_a_static_scale_saturates_its_block_and_is_clipped_when_checks_are_off(bad):
    x = torch.ones(1, 32)
    x[0, 3] = bad
    q = quantize_nvfp4(x, 1.0 / 2688, check_finite=False)
    assert q.scales.view(torch.uint8).tolist() == [[0x7E, 0x7E]]  # 448, like the finite block
    d = dequantize_nvfp4(q)
    assert d[0, 3] == math.copysign(6 * 448 / 2688, bad)  # clipped to ±6·448·gs = ±1
    assert torch.equal(d, x.clamp(-1, 1))


def test_nan_with_the_dynamic_global_scale_makes_the_whole_tensor_nan_when_checks_are_off():
    x = torch.ones(2, 3, 32)
    x[0, 1, 3] = math.nan
    q = quantize_nvfp4(x, check_finite=False)  # gs = amax / 2688 = NaN
    assert torch.isnan(q.global_scale)
    assert (q.scales.view(torch.uint8) & 0x7F == 0x7F).all()  # every scale byte NaN
    assert torch.isnan(dequantize_nvfp4(q)).all()


@pytest.mark.parametrize("bad", [math.inf, -math.inf])
def test_inf_with_the_dynamic_global_scale_makes_every_value_nan_when_checks_are_off(bad):
    x = torch.ones(2, 3, 32)
    x[0, 1, 3] = bad
    q = quantize_nvfp4(x, check_finite=False)  # gs = Inf
    scale_bytes = q.scales.view(torch.uint8)
    assert torch.isinf(q.global_scale)
    assert scale_bytes[0, 1, 0] & 0x7F == 0x7F  # Inf / Inf: NaN
    others = torch.ones_like(scale_bytes, dtype=torch.bool)
    others[0, 1, 0] = False
    assert (scale_bytes[others] == 0).all()  # finite / Inf: scale 0, and 0 · Inf is NaN
    assert torch.isnan(dequantize_nvfp4(q)).all()


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("sharing", ["shared", "per_group"])
def test_a_non_finite_dynamic_scale_from_scale_modes_is_rejected_by_name(bad, sharing):
    from nvfp4lab.scale_modes import ScaleMode

    x = torch.ones(2, 3, 32)
    x[0, 1, 3] = bad
    gs = ScaleMode(sharing, "dynamic").global_scale(x)
    assert not torch.isfinite(gs[1])
    if sharing == "per_group":  # only the group holding the value gets a non-finite scale
        assert torch.isfinite(gs[[0, 2]]).all()
    with pytest.raises(ValueError, match="global_scale must be finite"):
        quantize_nvfp4(x, gs, check_finite=False)


@pytest.mark.parametrize(
    "x, kwargs, error, message",
    [
        (torch.ones(2, 24), {}, ValueError, "multiple of 16"),
        (torch.ones(2, 16, dtype=torch.int32), {}, TypeError, "dtype"),
        (torch.tensor([[math.inf] + [0.0] * 15]), {}, ValueError, "non-finite"),
        (torch.ones(2, 16), {"global_scale": 0.0}, ValueError, "2\\^-126"),
        (torch.ones(2, 16), {"global_scale": -1.0}, ValueError, "2\\^-126"),
        (torch.ones(2, 16), {"global_scale": math.nan}, ValueError, "finite"),
        (torch.ones(2, 16), {"global_scale": torch.ones(3)}, ValueError, "per-group"),
        (torch.ones(2, 16), {"global_scale": torch.ones(2, dtype=torch.float64)}, TypeError, "float32"),
        (torch.tensor(1.0), {}, ValueError, "at least one dimension"),
        ([1.0] * 16, {}, TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(x, kwargs, error, message):
    with pytest.raises(error, match=message):
        quantize_nvfp4(x, **kwargs)


def test_four_over_six_picks_the_block_scale_with_the_lower_error():
    # {0,1,2,3,4}·c is exact when the block max maps to 4, lossy when it maps to 6 (4.5 -> 4).
    block = torch.tensor([0, 1, 2, 3, 4, 4, 3, 2, 1, 0, 1, 2, 3, 4, 0, 1]) * 0.375
    noisy = torch.randn(16, generator=torch.Generator().manual_seed(2))
    x = torch.stack([block, noisy])[:, None, :].repeat(1, 1, 1).reshape(2, 16)
    six = quantize_nvfp4(x, 1.0)
    best = quantize_nvfp4(x, 1.0, block_rule="four_over_six")
    error = lambda q: (dequantize_nvfp4(q) - x).square().sum(dim=1)  # noqa: E731
    assert error(best)[0] == 0 and error(six)[0] > 0
    assert (error(best) <= error(six)).all()
    dynamic = quantize_nvfp4(x, block_rule="four_over_six")
    assert dynamic.global_scale.item() == (x.abs().max() / 1536).item()
    with pytest.raises(ValueError, match="block_rule"):
        quantize_nvfp4(x, block_rule="five")
