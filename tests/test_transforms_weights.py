"""Weight recipes: per-block scale candidates (four-over-six on weights), the global-scale
MSE search, 16×16 2-D scales; bytes against nvfp4lab's quantizer, bad input."""

import pytest
import torch

from nvfp4lab import baselines
from nvfp4lab.formats import e4m3_from_float
from nvfp4lab.quantize import FOUR_OVER_SIX_DIVISOR, dequantize_nvfp4, dynamic_global_scale, quantize_nvfp4
from nvfp4lab.transforms import weights as wt


def weights(rng, g=3, k=64, n=48):
    w = torch.randn(g, k, n, generator=rng) * torch.exp(torch.randn(g, 1, 1, generator=rng))
    w[0, 5, 7] = 9.0  # an outlier: its block's scale and the group's global scale
    return w


def per_block_error(w, w_hat, importance=None):
    """(G, K/16, N) float64 squared error of each block of 16 along K."""
    g, k, n = w.shape
    e = (w.double() - w_hat.double()) ** 2
    if importance is not None:
        e = e * importance.double()[..., None]
    return e.reshape(g, k // 16, 16, n).sum(dim=2)


def test_max6_weights_are_nvfp4lab_weights_bit_for_bit(rng):
    w = weights(rng)
    q = wt.quantize_weights(w)
    assert torch.equal(q.dequantized.double(), baselines.nvfp4_weights(w))
    w_nk = w.transpose(1, 2).contiguous()
    ref = quantize_nvfp4(w_nk, dynamic_global_scale(w_nk, per_group=True, group_dim=0), group_dim=0)
    assert torch.equal(q.tensor.data.view(torch.uint8), ref.data.view(torch.uint8))
    assert torch.equal(q.tensor.scales.view(torch.uint8), ref.scales.view(torch.uint8))
    assert torch.equal(dequantize_nvfp4(q.tensor).transpose(1, 2), q.dequantized)
    g, k, n = w.shape
    elements, scales = g * n * k // 2, g * n * k // 16
    assert (q.data_bytes, q.scale_bytes, q.nbytes) == (elements, scales, elements + scales + 4 * g)


def test_four_over_six_on_weights_equals_the_activation_block_rule_bytes(rng):
    w = weights(rng)
    q = wt.four_over_six_weights(w)
    w_nk = w.transpose(1, 2).contiguous()
    gs = dynamic_global_scale(w_nk, per_group=True, group_dim=0, divisor=FOUR_OVER_SIX_DIVISOR)
    ref = quantize_nvfp4(w_nk, gs, group_dim=0, block_rule="four_over_six")
    assert torch.equal(q.tensor.global_scale, gs)
    assert torch.equal(q.tensor.scales.view(torch.uint8), ref.scales.view(torch.uint8))
    assert torch.equal(q.tensor.data.view(torch.uint8), ref.data.view(torch.uint8))
    # it chose 4 somewhere and lowered the error against plain max-6 scales
    max6 = wt.quantize_weights(w, gs)
    assert not torch.equal(q.tensor.scales.view(torch.uint8), max6.tensor.scales.view(torch.uint8))
    assert wt.weight_error(w, q.dequantized).sum() < wt.weight_error(w, max6.dequantized).sum()


def test_more_block_candidates_never_lose_on_any_block_and_importance_weights_the_choice(rng):
    w = weights(rng)
    gs = wt.max_global_scale(w, wt.FOUR_OVER_SIX)
    two = wt.quantize_weights(w, gs, block_maxima=(6.0, 4.0))
    five = wt.quantize_weights(w, gs, block_maxima=(6.0, 5.5, 5.0, 4.5, 4.0))
    assert bool((per_block_error(w, five.dequantized) <= per_block_error(w, two.dequantized)).all())
    assert per_block_error(w, five.dequantized).sum() < per_block_error(w, two.dequantized).sum()
    importance = torch.rand(w.shape[0], w.shape[1], generator=rng) ** 4
    weighted = wt.quantize_weights(w, gs, block_maxima=(6.0, 5.0, 4.0), importance=importance)
    unweighted = wt.quantize_weights(w, gs, block_maxima=(6.0, 5.0, 4.0))
    assert bool((per_block_error(w, weighted.dequantized, importance)
                 <= per_block_error(w, unweighted.dequantized, importance)).all())


def test_global_scale_search_takes_the_lowest_error_factor_per_group(rng):
    w = weights(rng)
    factors = (1.0, 0.9, 1.07, 1.3, 1.6)
    result = wt.mse_global_scale(w, factors)
    w_nk = w.transpose(1, 2).contiguous()
    base = dynamic_global_scale(w_nk, per_group=True, group_dim=0)
    errors = []
    for f in factors:  # independently: nvfp4lab's quantizer at each candidate scale
        w_hat = dequantize_nvfp4(quantize_nvfp4(w_nk, base * f, group_dim=0)).transpose(1, 2)
        errors.append(((w.double() - w_hat.double()) ** 2).sum(dim=(1, 2)))
    errors = torch.stack(errors)
    assert torch.allclose(result.errors, errors, rtol=1e-12)
    assert torch.equal(result.choice, errors.argmin(0))
    assert torch.equal(result.global_scale, base * torch.tensor(factors)[result.choice])
    chosen = wt.quantize_weights(w, result.global_scale)
    assert bool((wt.weight_error(w, chosen.dequantized) <= errors[0]).all())
    assert bool((wt.weight_error(w, chosen.dequantized) < errors[0]).any())  # the grid found something better


def test_2d_scales_are_one_per_tile_and_shared_by_the_transpose(rng):
    w = weights(rng)
    q = wt.quantize_weights_2d(w)
    g, k, n = w.shape
    gs = q.tensor.global_scale
    tile_amax = w.reshape(g, k // 16, 16, n // 16, 16).abs().amax(dim=(2, 4))
    assert torch.equal(q.tile_scales.view(torch.uint8),
                       e4m3_from_float((tile_amax / 6) / gs[:, None, None]).view(torch.uint8))
    # the NVFP4 tensor holds each tile scale on its 16 rows: any NVFP4 kernel reads it
    assert torch.equal(q.tensor.scales.view(torch.uint8),
                       q.tile_scales.transpose(1, 2).repeat_interleave(16, dim=1).view(torch.uint8))
    assert torch.equal(dequantize_nvfp4(q.tensor).transpose(1, 2), q.dequantized)
    qt = wt.quantize_weights_2d(w.transpose(1, 2))
    assert torch.equal(qt.dequantized, q.dequantized.transpose(1, 2))
    assert torch.equal(qt.tile_scales.view(torch.uint8), q.tile_scales.transpose(1, 2).view(torch.uint8))
    assert q.scale_bytes == g * k * n // 256 and q.nbytes == g * k * n // 2 + g * k * n // 256 + 4 * g
    # coarser scales cost accuracy: more error than 1-D block scales
    assert wt.weight_error(w, q.dequantized).sum() > wt.weight_error(w, wt.quantize_weights(w).dequantized).sum()
    # where a tile's amax sits in one 16-block the 1-D and 2-D scales of that block agree
    assert (q.tensor.scales.view(torch.uint8) == wt.quantize_weights(w).tensor.scales.view(torch.uint8)).any()


def test_bad_input_is_rejected_with_a_clear_message(rng):
    w = weights(rng)
    with pytest.raises(ValueError, match="K=40 must be a positive multiple of 16"):
        wt.quantize_weights(torch.randn(2, 40, 16))
    with pytest.raises(ValueError, match="N=24 must be a multiple of 16"):
        wt.quantize_weights_2d(torch.randn(2, 32, 24))
    with pytest.raises(ValueError, match="3-D"):
        wt.quantize_weights(torch.randn(32, 16))
    with pytest.raises(TypeError, match="dtype"):
        wt.quantize_weights(torch.ones(1, 16, 16, dtype=torch.int64))
    bad = w.clone()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        wt.quantize_weights(bad)
    with pytest.raises(ValueError, match=r"block_maxima .* \[4, 6\]"):
        wt.quantize_weights(w, block_maxima=(6.0, 3.0))
    with pytest.raises(ValueError, match="global_scale must have shape"):
        wt.quantize_weights(w, torch.ones(2))
    with pytest.raises(ValueError, match="finite and >= 2"):
        wt.quantize_weights(w, torch.zeros(3))
    with pytest.raises(ValueError, match="importance must be non-negative"):
        wt.quantize_weights(w, importance=-torch.ones(3, 64))
    with pytest.raises(ValueError, match="factors"):
        wt.mse_global_scale(w, (1.0, 0.0))
