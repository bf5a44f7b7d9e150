"""GPTQ with NVFP4 block scales: blocked == reference, H = I is round-to-nearest, GPTQ beats
RTN on correlated inputs, the scale rule, the Hessian, bad input."""

import math

import pytest
import torch

from nvfp4lab import baselines
from nvfp4lab.quantize import dequantize_nvfp4, dynamic_global_scale, quantize_nvfp4
from nvfp4lab.transforms import gptq
from nvfp4lab.transforms.weights import FOUR_OVER_SIX


def correlated_problem(rng, tokens=384, groups=2, k=128, n=32, held_out=0):
    """Inputs with a random mixing (strongly correlated channels, unequal energies) and
    weights; with ``held_out`` > 0 also that many more tokens of the same distribution."""
    mixing = torch.randn(groups, k, k, generator=rng) / math.sqrt(k) + 0.4 * torch.eye(k)
    x = torch.einsum("tgk,gkj->tgj", torch.randn(tokens + held_out, groups, k, generator=rng), mixing)
    w = torch.randn(groups, k, n, generator=rng) / math.sqrt(k)
    return (x, w) if not held_out else (x[:tokens], w, x[tokens:])


def same_bytes(a, b):
    return (torch.equal(a.tensor.data.view(torch.uint8), b.tensor.data.view(torch.uint8))
            and torch.equal(a.tensor.scales.view(torch.uint8), b.tensor.scales.view(torch.uint8)))


@pytest.mark.parametrize("block_size", [16, 48, 128])
@pytest.mark.parametrize("maxima", [(6.0,), FOUR_OVER_SIX])
def test_blocked_float64_equals_the_one_row_at_a_time_reference(rng, block_size, maxima):
    x, w = correlated_problem(rng, tokens=160, k=96, n=12)
    x[:, 1, 20] = 0.0  # a dead input: its weights are zeroed, its H_kk set to 1
    h = gptq.hessian(x)
    reference = gptq.gptq_reference(w, h, block_maxima=maxima)
    blocked = gptq.gptq_quantize(w, h, block_size=block_size, block_maxima=maxima, dtype=torch.float64)
    assert same_bytes(blocked, reference)
    assert torch.equal(blocked.dequantized, reference.dequantized)
    assert not reference.dequantized[1, 20].any()
    assert torch.equal(dequantize_nvfp4(reference.tensor).transpose(1, 2), reference.dequantized)


def test_blocked_float32_stays_within_rounding_of_the_reference(rng):
    x, w = correlated_problem(rng)
    h = gptq.hessian(x)
    reference = gptq.gptq_reference(w, h)
    fast = gptq.gptq_quantize(w, h)
    differ = (reference.dequantized != fast.dequantized).float().mean()
    assert differ < 0.01, differ  # a float32 feedback flips only values near a rounding boundary
    e_ref, e_fast = gptq.output_error(x, w, reference.dequantized), gptq.output_error(x, w, fast.dequantized)
    assert torch.allclose(e_fast, e_ref, rtol=0.01)


def test_with_an_identity_hessian_gptq_is_round_to_nearest_exactly(rng):
    _, w = correlated_problem(rng, k=64, n=24)
    g, k, _ = w.shape
    for h in (torch.eye(k, dtype=torch.float64).expand(g, k, k), 7.5 * torch.eye(k).expand(g, k, k)):
        q = gptq.gptq_quantize(w, h, block_size=32)
        assert torch.equal(q.dequantized.double(), baselines.nvfp4_weights(w))
        w_nk = w.transpose(1, 2).contiguous()
        rtn = quantize_nvfp4(w_nk, dynamic_global_scale(w_nk, per_group=True, group_dim=0), group_dim=0)
        assert torch.equal(q.tensor.data.view(torch.uint8), rtn.data.view(torch.uint8))
        assert torch.equal(q.tensor.scales.view(torch.uint8), rtn.scales.view(torch.uint8))
        assert same_bytes(gptq.gptq_reference(w, h), q)


def test_gptq_has_lower_output_error_than_rtn_on_correlated_inputs(rng):
    x, w, held_x = correlated_problem(rng, held_out=384)
    q = gptq.gptq_quantize(w, gptq.hessian(x))
    rtn = gptq.rtn_weights(w)
    e_gptq, e_rtn = gptq.output_error(x, w, q.dequantized), gptq.output_error(x, w, rtn.dequantized)
    assert bool((e_gptq < 0.8 * e_rtn).all()), (e_gptq, e_rtn)
    # and on held-out tokens of the same distribution (not only the calibration set)
    assert bool((gptq.output_error(held_x, w, q.dequantized) < gptq.output_error(held_x, w, rtn.dequantized)).all())
    # the weights themselves move further from W than RTN's: the error is shaped, not removed
    assert ((q.dequantized - w) ** 2).sum() > ((rtn.dequantized - w) ** 2).sum()


def test_block_scales_come_from_the_updated_weights_when_the_block_starts(rng):
    x, w = correlated_problem(rng, k=64, n=16)
    h = gptq.hessian(x)
    q = gptq.gptq_quantize(w, h, block_size=64)
    rtn = gptq.rtn_weights(w)
    scales, rtn_scales = q.tensor.scales.view(torch.uint8), rtn.tensor.scales.view(torch.uint8)
    assert torch.equal(scales[..., 0], rtn_scales[..., 0])  # block 0: nothing fed back yet
    assert not torch.equal(scales[..., 1:], rtn_scales[..., 1:])  # later blocks: the updated amax
    assert torch.equal(q.tensor.global_scale, rtn.tensor.global_scale)  # fixed from the original W


def test_hessian_streams_over_batches_and_is_2_xtx(rng):
    x = torch.randn(50, 2, 32, generator=rng)
    h = gptq.hessian(x)
    assert h.dtype == torch.float64 and h.shape == (2, 32, 32)
    assert torch.allclose(h[1], 2 * x[:, 1].double().T @ x[:, 1].double(), rtol=1e-12)
    assert torch.allclose(gptq.hessian(x[20:], gptq.hessian(x[:20])), h, rtol=1e-12)


def test_bad_input_is_rejected_with_a_clear_message(rng):
    x, w = correlated_problem(rng, tokens=40, k=32, n=8)
    h = gptq.hessian(x)
    with pytest.raises(ValueError, match="block_size must be a positive multiple of 16"):
        gptq.gptq_quantize(w, h, block_size=24)
    with pytest.raises(ValueError, match=r"h must have shape \(2, 32, 32\)"):
        gptq.gptq_quantize(w, h[:, :16, :16])
    with pytest.raises(ValueError, match="K=24 must be a positive multiple of 16"):
        gptq.gptq_quantize(torch.randn(2, 24, 8), torch.eye(24).expand(2, 24, 24))
    with pytest.raises(ValueError, match="not positive definite"):
        gptq.gptq_quantize(w, -torch.eye(32).expand(2, 32, 32), damp=0.0)
    with pytest.raises(ValueError, match="damp"):
        gptq.gptq_quantize(w, h, damp=-1.0)
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        gptq.gptq_quantize(w, h, dtype=torch.bfloat16)
    bad = h.clone()
    bad[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        gptq.gptq_quantize(w, bad)
    with pytest.raises(ValueError, match=r"\(T, G, K\)"):
        gptq.hessian(x[0])
