"""Baselines (bf16, FP8 recipe, W4A16), recipe evaluation, drift and the recommendation."""

import torch

from nvfp4lab import baselines, drift, evaluation
from nvfp4lab.calibration import MaxCalibrator
from nvfp4lab.demo import synthetic_attention_output


def test_fp8_activation_scales_are_powers_of_two_per_token_and_128_channels():
    x = torch.zeros(2, 1, 256)
    x[0, 0, :128] = 0.75  # exactly representable: amax/448 -> scale 2^-9, 0.75/2^-9 = 384 exact
    x[0, 0, 128:] = 960.0  # scale 2^ceil(log2(960/448)) = 4 -> 240, an E4M3 value
    x[1, 0, 5] = 3.3
    out = baselines.fp8_activations(x)
    assert torch.equal(out[0], x[0].double())
    e4m3_steps = torch.tensor(3.3 / 2.0 ** -7).to(torch.float8_e4m3fn).double() * 2.0 ** -7
    assert out[1, 0, 5] == e4m3_steps  # 3.3 in block scale 2^-7 (448·2^-7 = 3.5 >= 3.3)


def test_fp8_weights_use_128x128_blocks():
    w = torch.full((1, 256, 128), 1.75)  # block scale 1.75/448 = 2^-8 (exact)
    w[0, 128:] = 112.0  # 2^-2
    w[0, 128, 0] = 0.5  # 0.5 / 2^-2 = 2: exact in its block
    out = baselines.fp8_weights(w)
    assert torch.equal(out, w.double())
    w[0, 0, 0] = 1.6  # 1.6 / 2^-8 = 409.6 -> E4M3 416 (step 32 above 256)
    assert baselines.fp8_weights(w)[0, 0, 0] == 416 * 2.0**-8


def small_problem(tokens=256, seed=0):
    """Tokens drawn with ``seed``; head gains and weights fixed (the same model)."""
    g = torch.Generator().manual_seed(0)
    gain = 10 ** (-2 * torch.rand(4, generator=g))
    w = torch.randn(2, 256, 128, generator=g) / 16
    x = synthetic_attention_output(tokens, gain, 128, seed + 1).view(tokens, 2, 256).float()
    return x, w


def test_baseline_ordering_on_gaussian_like_data():
    x, w = small_problem()
    reference = baselines.reference_output(x, w)
    from nvfp4lab.metrics import sqnr_db

    bf16 = sqnr_db(reference, baselines.bf16_output(x, w))
    fp8 = sqnr_db(reference, baselines.fp8_output(x, w))
    w4a16 = sqnr_db(reference, baselines.w4a16_output(x, w))
    assert bf16 > fp8 > w4a16 > 15  # bf16 ~50 dB, fp8 ~28 dB, NVFP4 weights ~20 dB


def test_evaluate_reports_every_mode_and_recipe_and_recommends_a_clean_one():
    calibration, _ = small_problem(512, seed=3)
    held_out, w = small_problem(256, seed=4)  # another seed: another token stream of the same model
    tokens = lambda t: {tuple(row) for row in t.reshape(t.shape[0], -1).tolist()}  # noqa: E731
    assert not tokens(calibration) & tokens(held_out)  # no held-out token was seen in calibration
    results = evaluation.evaluate(calibration, held_out, w, progress=False)
    recipes = {(r.recipe, r.mode) for r in results}
    assert ("bf16", "-") in recipes and ("w4a16", "-") in recipes
    for sharing in ("shared", "per_group"):
        for recipe in ("max", "headroom x4", "percentile 99.99", "mse activations", "mse output"):
            assert (recipe, f"{sharing} static") in recipes
        assert ("dynamic", f"{sharing} dynamic") in recipes
    choice, why = evaluation.recommend(results)
    assert choice.clipped_fraction == 0 and choice.mode != "-" and "SQNR" in why
    best_clean = max(r.worst_group_sqnr_db for r in results if r.mode != "-" and r.clipped_fraction == 0)
    assert choice.worst_group_sqnr_db >= best_clean - 0.1
    assert "| recipe | mode |" in evaluation.markdown_table(results)


def test_drift_scaling_up_clips_every_group_and_scaling_down_none():
    calibration, w = small_problem(512, seed=5)
    held_out, _ = small_problem(256, seed=6)
    rows = drift.drift_report(MaxCalibrator("per_group"), calibration, held_out, w)
    by = {(r["scenario"], r["group"]): r for r in rows}
    assert all(by[("scaled x4", g)]["clipped_fraction"] > 0 for g in range(2))
    assert all(by[("scaled x1/4", g)]["clipped_fraction"] == 0 for g in range(2))
    assert by[("group 0 x8", 0)]["clipped_fraction"] > 0 and by[("group 0 x8", 1)]["clipped_fraction"] == 0
    assert by[("scaled x4", 0)]["sqnr_db"] < by[("same distribution", 0)]["sqnr_db"]
