"""Property-based tests (hypothesis) of the quantizer and the layouts."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvfp4lab import dequantize_nvfp4, quantize_nvfp4
from nvfp4lab.formats import E2M1_GRID
from nvfp4lab.layouts import swizzle_scales, unswizzle_scales

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def tensors(draw, max_rows=40, max_blocks=12):
    rows = draw(st.integers(1, max_rows))
    blocks = draw(st.integers(1, max_blocks))
    seed = draw(st.integers(0, 2**31 - 1))
    log_scale = draw(st.floats(-30, 30))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, blocks * 16, generator=g) * 2.0**log_scale
    x = x * torch.exp(2 * torch.randn(rows, blocks, 1, generator=g)).repeat_interleave(16, dim=2).reshape(rows, -1)
    zero_blocks = torch.rand(rows, blocks, generator=g) < draw(st.floats(0, 0.3))
    x = x.masked_fill(zero_blocks.repeat_interleave(16, dim=1), 0.0)
    return x.to(draw(st.sampled_from([torch.float32, torch.bfloat16])))


def block_view(t, q):
    return t.reshape(*q.scales.shape, 16)


@SETTINGS
@given(tensors())
def test_dequantized_values_lie_on_the_scaled_grid(x):
    q = quantize_nvfp4(x)
    unit = block_view(dequantize_nvfp4(q, apply_global_scale=False), q)
    scale = q.scales.to(torch.float32)[..., None]
    grid = torch.tensor(E2M1_GRID + tuple(-v for v in E2M1_GRID))
    on_grid = torch.where(scale > 0, unit / torch.where(scale > 0, scale, torch.ones_like(scale)), torch.zeros_like(unit))
    assert torch.isin(on_grid, grid).all()


@SETTINGS
@given(tensors())
def test_error_is_at_most_half_a_grid_step_or_the_saturation_error(x):
    q = quantize_nvfp4(x)
    xf = block_view(x.to(torch.float64), q)
    x_hat = block_view(dequantize_nvfp4(q).double(), q)
    step = q.scales.double()[..., None] * q.global_scale.double()  # value of one E2M1 unit
    magnitude = xf.abs() / step
    # half a grid step where |y| falls: 0.25 below 2, 0.5 up to 4, 1 above (4 -> 6)
    half_step = torch.where(magnitude <= 2, 0.25, torch.where(magnitude <= 4, 0.5, 1.0)) * step
    saturation = (xf.abs() - 6 * step).clamp(min=0)
    slack = 1e-6 * xf.abs() + 1e-300  # the final rounding of (e2m1·s)·gs to float32
    underflow = q.scales.view(torch.uint8)[..., None] == 0  # the whole block rounds to zero
    bound = torch.where(underflow, xf.abs(), half_step + saturation + slack)
    assert ((x_hat - xf).abs() <= bound).all()


@SETTINGS
@given(tensors())
def test_quantizing_the_dequantized_tensor_gives_the_same_bytes_where_the_block_max_is_6(x):
    # Requantization is idempotent for blocks whose largest code is ±6: their amax is
    # recovered as 6·s·gs and gives back the scale s. A block whose largest element
    # rounded to ±4 (its scale rounded up) gets a new, smaller scale: NVFP4 is not
    # idempotent in general, and this test pins exactly where it is.
    q = quantize_nvfp4(x)
    again = quantize_nvfp4(dequantize_nvfp4(q), q.global_scale)
    codes = q.data.view(torch.uint8)
    magnitude = torch.stack([codes & 7, (codes >> 4) & 7], dim=-1).reshape(*q.scales.shape, 16)
    top_is_six = (magnitude.amax(dim=-1) == 7) & (q.scales.view(torch.uint8) != 0)
    assert torch.equal(again.scales.view(torch.uint8)[top_is_six], q.scales.view(torch.uint8)[top_is_six])
    data, data_again = (t.data.view(torch.uint8).reshape(*q.scales.shape, 8) for t in (q, again))
    assert torch.equal(data[top_is_six], data_again[top_is_six])
    nonzero = q.scales.view(torch.uint8) != 0
    assert top_is_six.sum() >= 0.5 * nonzero.sum()  # the property covers most blocks (~85 % here)


@SETTINGS
@given(tensors())
def test_negation_flips_only_the_sign_bits(x):
    q, q_neg = quantize_nvfp4(x), quantize_nvfp4(-x)
    assert torch.equal(q.scales.view(torch.uint8), q_neg.scales.view(torch.uint8))
    assert torch.equal(q.data.view(torch.uint8) ^ 0x88, q_neg.data.view(torch.uint8))


@SETTINGS
@given(tensors(), st.integers(-20, 20))
def test_scaling_by_a_power_of_two_scales_only_the_global_scale(x, exponent):
    # A dynamic global scale absorbs the power of two exactly (while it stays normal), so
    # block scales and codes are unchanged: the two-level scaling is scale-invariant.
    x = x.to(torch.float32)
    scaled = x * 2.0**exponent
    q, q_scaled = quantize_nvfp4(x), quantize_nvfp4(scaled)
    if float(q.global_scale) * 2.0**exponent >= 2.0**-126 and float(q.global_scale) > 2.0**-126:
        assert q_scaled.global_scale == q.global_scale * 2.0**exponent
        assert torch.equal(q.scales.view(torch.uint8), q_scaled.scales.view(torch.uint8))
        assert torch.equal(q.data.view(torch.uint8), q_scaled.data.view(torch.uint8))


@SETTINGS
@given(tensors(), st.integers(-6, 6))
def test_static_global_scale_times_a_power_of_two_scales_the_block_scales(x, exponent):
    # With a fixed global scale, multiplying x by 2^e multiplies each block scale by 2^e
    # while the block scale stays in E4M3's normal range (no saturation, no subnormals).
    x = x.to(torch.float32)
    gs = float(x.abs().max()) / 2688 * 2.0**8 if float(x.abs().max()) > 0 else 1.0
    q, q_scaled = quantize_nvfp4(x, gs), quantize_nvfp4(x * 2.0**exponent, gs)
    s, s_scaled = q.scales.to(torch.float32), q_scaled.scales.to(torch.float32)
    unrounded = x.reshape(*s.shape, 16).abs().amax(dim=-1) / 6 / gs  # before the E4M3 rounding
    both = torch.stack([unrounded, unrounded * 2.0**exponent])
    normal = ((both >= 2.0**-6) & (both < 448)).all(dim=0)
    assert torch.equal(s_scaled[normal], s[normal] * 2.0**exponent)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 3), st.integers(1, 400), st.integers(1, 70), st.integers(0, 2**31 - 1))
def test_swizzle_then_unswizzle_is_the_identity(batch, rows, cols, seed):
    shape = (batch, rows, cols) if batch else (rows, cols)
    scales = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.int32).to(torch.uint8)
    assert torch.equal(unswizzle_scales(swizzle_scales(scales), rows, cols), scales)
