"""SmoothQuant smoothing: the scale formula and its zero guards, exactness, the GQA fold into
the value projection, the α search on the W4A4 output error, bad input."""

import math

import pytest
import torch
from helpers import gqa_attention, gqa_layer

from nvfp4lab import baselines
from nvfp4lab.quantize import dynamic_global_scale
from nvfp4lab.transforms import smoothing as sm


def test_scales_follow_the_formula_and_keep_1_where_a_channel_is_zero():
    a = torch.tensor([[4.0, 0.0, 9.0, 1.0]])
    w = torch.tensor([[1.0, 2.0, 0.0, 16.0]])
    s = sm.smoothing_scales(a, w, 0.5)
    assert s.dtype == torch.float32
    assert torch.equal(s, torch.tensor([[2.0, 1.0, 1.0, 0.25]]))  # √4/√1, zero x, zero w, √1/√16
    assert torch.equal(sm.smoothing_scales(a, w, 1.0), torch.tensor([[4.0, 1.0, 1.0, 1.0]]))
    assert torch.equal(sm.smoothing_scales(a, w, 0.0), torch.tensor([[1.0, 1.0, 1.0, 1 / 16]]))
    general = sm.smoothing_scales(torch.tensor([[3.0]]), torch.tensor([[0.7]]), 0.3)
    assert math.isclose(float(general), 3.0**0.3 / 0.7**0.7, rel_tol=1e-7)
    p2 = sm.smoothing_scales(torch.tensor([[3.0, 100.0]]), torch.tensor([[0.7, 0.01]]), 0.3, power_of_two=True)
    assert torch.equal(p2, torch.exp2(torch.round(torch.log2(p2))))
    assert float(p2[0, 0]) == 2.0 ** round(math.log2(3.0**0.3 / 0.7**0.7))


def test_smoothing_is_exact_in_float64_and_bitwise_with_power_of_two_scales(rng):
    channel_scale = 10 * torch.rand(64, generator=rng, dtype=torch.float64)
    x = torch.randn(20, 3, 64, generator=rng, dtype=torch.float64) * channel_scale
    w = torch.randn(3, 64, 24, generator=rng, dtype=torch.float64)
    a, m = sm.activation_channel_amax(x), sm.weight_channel_amax(w)
    reference = torch.einsum("tgk,gkn->tgn", x, w)
    xs, ws = sm.smooth(x, w, sm.smoothing_scales(a, m, 0.5))
    assert xs.dtype == ws.dtype == torch.float64
    assert torch.allclose(torch.einsum("tgk,gkn->tgn", xs, ws), reference, rtol=0, atol=1e-13 * reference.abs().max())
    x32, w32 = x.float(), w.float()
    xs, ws = sm.smooth(x32, w32, sm.smoothing_scales(a, m, 0.5, power_of_two=True))
    assert torch.equal(xs.double()[..., None] * ws.double(), x32.double()[..., None] * w32.double())  # every product


def test_tied_amax_is_the_max_over_heads_that_share_a_kv_head():
    amax = torch.arange(2 * 24, dtype=torch.float32).reshape(2, 24)  # heads=6, D=8: 3 heads per group
    amax[0, 3] = 1000.0  # head 0, d = 3
    tied = sm.tie_shared_kv_heads(amax, heads=6, kv_heads=2).reshape(6, 8)
    flat = amax.reshape(6, 8)
    assert torch.equal(tied[0], tied[2]) and torch.equal(tied[3], tied[5])
    assert torch.equal(tied[0], flat[:3].amax(0)) and torch.equal(tied[4], flat[3:].amax(0))
    assert float(tied[1, 3]) == 1000.0


def test_scales_fold_into_a_gqa_value_projection_and_the_output_projection(rng):
    heads, kv_heads, d, hidden, seq, groups = 6, 2, 16, 24, 9, 3
    x, w_q, w_k, w_v, b_v, w_o = gqa_layer(rng, heads, kv_heads, d, hidden, seq, qk_scale=6)
    o = gqa_attention(x, w_q, w_k, w_v, b_v, heads, kv_heads, d)
    grouped_o = o.reshape(seq, groups, -1)
    grouped_w = w_o.T.reshape(groups, -1, hidden)
    a = sm.tie_shared_kv_heads(sm.activation_channel_amax(grouped_o), heads, kv_heads)
    m = sm.tie_shared_kv_heads(sm.weight_channel_amax(grouped_w), heads, kv_heads)
    s = sm.smoothing_scales(a, m, 0.5)
    o_smooth = gqa_attention(x, w_q, w_k, sm.fold_scales_into_value_projection(w_v, s, heads),
                         sm.fold_scales_into_value_projection(b_v, s, heads), heads, kv_heads, d)
    xs, ws = sm.smooth(grouped_o, grouped_w, s)
    assert torch.allclose(o_smooth.reshape(seq, groups, -1), xs, rtol=0, atol=1e-13)
    w_o_folded = sm.fold_scales_into_output_projection(w_o, s)
    assert torch.equal(w_o_folded.T.reshape(groups, -1, hidden), ws)
    y = o @ w_o.T
    assert torch.allclose(o_smooth @ w_o_folded.T, y, rtol=0, atol=1e-12 * y.abs().max())
    untied = sm.smoothing_scales(sm.activation_channel_amax(grouped_o), sm.weight_channel_amax(grouped_w), 0.5)
    with pytest.raises(ValueError, match="share a KV head"):
        sm.fold_scales_into_value_projection(w_v, untied, heads)


def channel_outliers(rng, tokens=256, groups=2, k=128, n=64):
    """Activations whose channels differ by log-normal factors (σ = 1.5 in ln), Gaussian weights."""
    x = torch.randn(tokens, groups, k, generator=rng) * torch.exp(1.5 * torch.randn(k, generator=rng))
    return x, torch.randn(groups, k, n, generator=rng) / math.sqrt(k)


def test_search_alpha_measures_each_candidate_and_smoothing_helps_on_channel_outliers(rng):
    x, w = channel_outliers(rng)
    result = sm.search_alpha(x, w, alphas=(0.0, 0.25, 0.5, 0.75, 1.0))
    assert result.errors.shape == (5, 2) and result.unsmoothed_error.shape == (2,)
    best = result.alphas.index(result.alpha)
    assert int(result.errors.sum(1).argmin()) == best
    # recompute the chosen row independently of the search
    s = sm.smoothing_scales(sm.activation_channel_amax(x), sm.weight_channel_amax(w), result.alpha)
    assert torch.equal(s, result.scales)
    xs, ws = x / s, w * s[..., None]
    z, _ = baselines.nvfp4_output(xs, ws, dynamic_global_scale(xs, per_group=True))
    error = ((baselines.reference_output(x, w) - z) ** 2).sum(dim=(0, 2))
    assert torch.allclose(error, result.errors[best], rtol=1e-12)
    # NVFP4's block scales cannot absorb channel outliers inside a block; smoothing can
    assert result.gain_db > 1.0, result.gain_db
    assert 0.0 < result.alpha < 1.0


def test_search_alpha_hands_the_smoothed_operands_to_a_custom_quantizer(rng):
    x, w = channel_outliers(rng, tokens=32, k=32, n=16)
    seen = []

    def quantized_output(xs, ws):
        seen.append((xs, ws))
        return baselines.reference_output(xs, ws).to(torch.bfloat16).double()

    result = sm.search_alpha(x, w, alphas=(0.5,), quantized_output=quantized_output, shared_kv=(4, 2))
    assert len(seen) == 2 and seen[0][0] is x  # the unsmoothed run first
    s = result.scales
    assert torch.equal(s.reshape(2, 2, 16)[:, 0], s.reshape(2, 2, 16)[:, 1])  # tied: heads 0-1, 2-3 share
    assert torch.equal(seen[1][0], x / s) and torch.equal(seen[1][1], w * s[..., None])


def test_bad_input_is_rejected_with_a_clear_message(rng):
    x, w = channel_outliers(rng, tokens=8, k=32, n=16)
    a, m = sm.activation_channel_amax(x), sm.weight_channel_amax(w)
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]"):
        sm.smoothing_scales(a, m, 1.5)
    with pytest.raises(ValueError, match="non-negative"):
        sm.smoothing_scales(-a, m, 0.5)
    with pytest.raises(ValueError, match="must have shape"):
        sm.smoothing_scales(a, m[:, :16], 0.5)
    with pytest.raises(ValueError, match="normal range"):
        sm.smoothing_scales(torch.tensor([[1.0]]), torch.tensor([[1e-44]]), 0.0)  # 1/w overflows
    with pytest.raises(ValueError, match="disagree on G, K"):
        sm.smooth(x, w[:, :16], torch.ones(2, 32))
    with pytest.raises(ValueError, match="positive"):
        sm.smooth(x, w, torch.zeros(2, 32))
    bad = x.clone()
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        sm.search_alpha(bad, w)
    with pytest.raises(ValueError, match="no tokens"):
        sm.activation_channel_amax(x[:0])
    with pytest.raises(ValueError, match="kv_heads=3 must divide heads=4"):
        sm.tie_shared_kv_heads(a, 4, 3)
    with pytest.raises(ValueError, match="returned"):
        sm.search_alpha(x, w, alphas=(0.5,), quantized_output=lambda xs, ws: torch.zeros(1))
    with pytest.raises(ValueError, match="alphas must not be empty"):
        sm.search_alpha(x, w, alphas=())
