"""``nvfp4lab.calibrate_transforms``: the transform rows of ``nvfp4lab calibrate --transforms``
(measured as the plain rows are, recomputed independently), which transforms run, and the
cost-ordered recommendation rule."""

import math

import pytest
import torch

from nvfp4lab import baselines, calibrate_transforms as ct, evaluation
from nvfp4lab.quantize import dequantize_nvfp4, global_scale_from_amax, quantize_nvfp4
from nvfp4lab.transforms.hadamard import block_hadamard_matrix
from nvfp4lab.transforms.recipes import STUDY_TRANSFORMS, Transform


def layer(tokens=128, groups=2, k=128, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, groups, k, generator=g) * torch.tensor([1.0, 0.2])[None, :groups, None]
    w = torch.randn(groups, k, n, generator=g) / k**0.5
    cut = tokens * 3 // 4
    return x[:cut], x[cut:], w


def test_a_plain_transform_reproduces_evaluates_two_rows_exactly():
    calibration, held_out, w = layer()
    plain = {(r.recipe, r.mode): r for r in evaluation.evaluate(calibration, held_out, w, progress=False)}
    rows = ct.evaluate_transforms(calibration, held_out, w, 64, transforms=[Transform()])
    assert [(r.recipe, r.mode) for r in rows] == list(ct.TRANSFORM_MODES)
    for r in rows:
        assert evaluation.Result(**{f: getattr(r, f) for f in evaluation.Result.__dataclass_fields__}) == plain[
            (r.recipe, r.mode)]
        assert (r.transform, r.cost, r.alpha) == ("none", 0, None)


def sqnr_db(reference, z):
    signal, noise = reference.square().sum(dim=(0, 2)), (reference - z).square().sum(dim=(0, 2))
    return 10 * math.log10(signal.sum() / noise.sum()), float((10 * torch.log10(signal / noise)).min())


def test_the_sqnr_of_hadamard_head_with_max_shared_static_recomputed_independently():
    calibration, held_out, w = layer()
    head_dim = 64
    rows = {(r.transform, r.recipe, r.mode): r
            for r in ct.evaluate_transforms(calibration, held_out, w, head_dim,
                                            transforms=[Transform("hadamard head"), Transform("smoothquant")],
                                            batch_tokens=16, chunk_elements=2048)}  # several chunks
    row = rows[("hadamard head", "max", "shared static")]
    # The rotation as a matrix R = I ⊗ Ĥ_64 (float64), its inverse Rᵀ folded into W before quantizing.
    r = block_hadamard_matrix(128, head_dim)
    rotate = lambda x: (x.double() @ r).float()  # noqa: E731
    scale = global_scale_from_amax(rotate(calibration).abs().amax()).expand(2)  # one static scale, shared
    x_hat = dequantize_nvfp4(quantize_nvfp4(rotate(held_out), scale)).double()
    w_hat = baselines.nvfp4_weights((r.T @ w.double()).float())
    z = torch.einsum("tgk,gkn->tgn", x_hat, w_hat).to(torch.bfloat16).double()
    overall, worst = sqnr_db(torch.einsum("tgk,gkn->tgn", held_out.double(), w.double()), z)
    assert row.sqnr_db == pytest.approx(overall, rel=1e-9) and row.worst_group_sqnr_db == pytest.approx(worst, rel=1e-9)
    assert row.cost == 2 and row.alpha is None and row.clipped_fraction == 0
    assert rows[("smoothquant", "dynamic", "per_group dynamic")].alpha in [a / 10 for a in range(11)]


def test_which_transforms_run_and_why_the_others_are_skipped():
    everything, notes = ct.available_transforms(128, 256)
    assert everything == list(STUDY_TRANSFORMS) and notes == []
    usable, notes = ct.available_transforms(64, 128)
    assert Transform("hadamard 128") not in usable and Transform("hadamard head", "gptq") in usable
    assert len(notes) == 1 and notes[0].startswith("skipped hadamard 128:") and "head dimension 64" in notes[0]
    usable, notes = ct.available_transforms(None, 128)
    assert {t.activation for t in usable} == {"hadamard 16", "smoothquant", "none"}
    assert len(notes) == 1 and "hadamard head, hadamard 128, hadamard head + gptq" in notes[0]
    assert "--head-dim" in notes[0]
    with pytest.raises(ValueError, match="needs the head dimension"):
        ct.evaluate_transforms(*layer(), None, transforms=[Transform("hadamard head")])


def test_the_fits_see_an_evenly_spaced_sample_of_the_calibration_tokens():
    x = torch.arange(100.0)[:, None, None].expand(100, 1, 16)
    assert ct.fit_sample_tokens(100, 16, 16 * 34) == 34 and ct.fit_sample_tokens(100, 16, 10**9) == 100
    sample = ct._fit_sample(x, 16 * 34)
    assert sample[:, 0, 0].tolist() == [round(i * 99 / 33) for i in range(34)]
    assert ct._fit_sample(x, 10**9) is x


def result(recipe, mode, worst, transform="none", clipped=0.0, alpha=None):
    cost = Transform.parse(transform).cost
    if cost == 0:
        return evaluation.Result(recipe, mode, worst + 0.1, worst, clipped, 0.0)
    return ct.TransformResult(recipe, mode, worst + 0.1, worst, clipped, 0.0, transform, cost, alpha)


PLAIN = [result("bf16", "-", 50.0), result("dynamic", "per_group dynamic", 17.5),
         result("max", "shared static", 17.45), result("max", "per_group static", 17.2)]


def test_without_transform_rows_the_choice_is_evaluations():
    assert ct.recommend(PLAIN)[0] is evaluation.recommend(PLAIN)[0] is PLAIN[2]


def test_a_transform_that_helps_by_less_than_the_margin_is_not_chosen():
    below = ct.COSTLIER_MARGIN_DB - 0.05
    rows = PLAIN + [result("dynamic", "per_group dynamic", 17.5 + below, "hadamard head"),
                    result("max", "shared static", 17.5 + below, "gptq")]
    choice, why = ct.recommend(rows)
    assert choice is PLAIN[2]
    assert why.startswith(f"Rule: {ct.RULE}. Chosen: max, shared static (plain)")
    assert f"short of the {ct.COSTLIER_MARGIN_DB} dB margin" in why and "Deploy:" not in why


def test_a_rotation_that_beats_every_cheaper_row_by_the_margin_is_chosen_and_runs_online():
    rotated = [result("max", "shared static", 18.3, "hadamard head"),
               result("dynamic", "per_group dynamic", 18.35, "hadamard head")]
    choice, why = ct.recommend(PLAIN + rotated)
    assert choice is rotated[0]  # static, within 0.1 dB of the best row of its cost
    assert "Chosen: hadamard head · max, shared static (activation transform)" in why
    assert "it beats the best plain row, dynamic, per_group dynamic (17.50 dB), by 0.80 dB" in why
    assert ("Deploy: fold Rᵀ (block-D (one per head) Hadamard) into wo_a's weights offline; rotate o online in the "
            "quantizer (no projection to fold it into in DeepSeek V4") in why


def test_an_activation_transform_must_beat_the_weight_only_rows_too():
    weights_only = result("max", "shared static", 18.1, "four-over-six weights")
    rows = PLAIN + [weights_only, result("max", "shared static", 18.4, "smoothquant", alpha=0.5)]
    choice, why = ct.recommend(rows)
    assert choice is weights_only  # 18.4 beats plain by 0.9 dB but four-over-six weights by only 0.3
    assert why.endswith("Deploy: quantize wo_a's weights offline with four-over-six weights; the served graph is "
                        "unchanged")
    smoothed = result("max", "shared static", 18.7, "smoothquant", alpha=0.5)
    choice, why = ct.recommend(rows + [smoothed])
    assert choice is smoothed and "divide o by s online in the quantizer (α = 0.5; no projection" in why


def test_clipping_rows_do_not_compete_and_undefined_ones_are_refused():
    clipping = result("max", "shared static", 30.0, "hadamard 16", clipped=1e-4)
    assert ct.recommend(PLAIN + [clipping])[0] is PLAIN[2]
    with pytest.raises(ValueError, match="undefined"):
        ct.recommend(PLAIN + [result("max", "shared static", float("nan"), "gptq")])


def test_the_table_has_a_transform_column_and_marks_the_choice():
    rows = PLAIN + [result("max", "shared static", 17.0, "smoothquant", alpha=0.3)]
    table = ct.markdown_table(rows, chosen=PLAIN[2])
    lines = table.splitlines()
    assert lines[0].startswith("| recipe | mode | transform | SQNR of z (dB) |")
    assert "| max | shared static | smoothquant (α = 0.3) | 17.10 | 17.00 |" in table
    assert [line for line in lines if "◀ recommended" in line] == [
        "| max | shared static | none | 17.55 | 17.45 | 0.00e+00 | 0.00% | ◀ recommended |"]
    assert [row["transform"] for row in ct.as_rows(rows)] == ["none"] * 4 + ["smoothquant"]
