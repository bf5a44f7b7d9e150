"""The model-level evaluation, its intervals and the recommendation: known answers that a
wrong KL direction, an off-by-one target or a wrong residual stream would miss, and
``calibrate-model``'s outputs."""

import json
import math

import pytest
import torch

from gguf_tiny import write_tiny
from nvfp4lab.bootstrap import Interval, PairedBootstrap, resample_weights, tokens_to_resolve
from nvfp4lab.cli import main
from nvfp4lab.models import corpus
from nvfp4lab.models.decoder import Decoder
from nvfp4lab.models.evaluate import ModelEvaluation, Row, compare, evaluate_model, from_dict
from nvfp4lab.models.intervals import cross_ratio, paired_ratio, row_intervals, sensitivity_intervals
from nvfp4lab.models.projection import LayerWeights, Recipe, RecipeProjection, all_recipes
from nvfp4lab.models.recommendation import EQUIVALENCE_MARGIN, deployment_cost, recommend

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-eval")
    return {arch: write_tiny(directory / f"{arch}.gguf", arch) for arch in ("llama", "qwen2")}


@pytest.fixture(scope="module")
def texts():
    return corpus.calibration_text()[:4000], corpus.held_out_text()[:4000]


@pytest.fixture(scope="module")
def evaluation(tiny, texts):
    # one batch of all 4 windows: the independent recomputations below run the same shapes
    return evaluate_model(tiny["qwen2"], groups=2, tokens=48, seq_len=12, texts=texts, progress=False,
                          batch_sequences=4)


# --- compare: a hand-computed known answer on a vocabulary of three -------------------------

def test_compare_is_nll_of_the_next_token_kl_from_the_reference_and_top1():
    p_ref = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]])  # (B=1, S-1=2, V=3)
    q = torch.tensor([[[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [1 / 3, 1 / 3, 1 / 3]]])  # (1, S=3, V): last dropped
    targets = torch.tensor([[1, 2]])
    sums = compare(p_ref.log(), q.log(), targets)
    nll = -(math.log(0.25) + math.log(0.2))
    kl = sum(p * math.log(p / qq) for p, qq in zip([0.7, 0.2, 0.1], [0.5, 0.25, 0.25])) + \
        sum(p * math.log(p / qq) for p, qq in zip([0.1, 0.1, 0.8], [0.2, 0.6, 0.2]))
    reverse = sum(qq * math.log(qq / p) for p, qq in zip([0.7, 0.2, 0.1], [0.5, 0.25, 0.25]))
    assert sums.shape == (1, 3) and sums.dtype == torch.float64
    assert sums[0, 0].item() == pytest.approx(nll, rel=1e-6)
    assert sums[0, 1].item() == pytest.approx(kl, rel=1e-6) and abs(kl - reverse) > 0.05
    assert sums[0, 2].item() == 1  # argmax 0 vs 0 agrees, 2 vs 1 does not


# --- evaluate_model against independent recomputations on a tiny model --------------------

def _held_out_ids(path, text, tokens, seq_len):
    from nvfp4lab.models.evaluate import token_windows

    return token_windows(path, text, tokens, seq_len, "held-out")


def test_perplexity_is_of_the_next_token(tiny, texts, evaluation):
    decoder = Decoder.from_gguf(tiny["qwen2"])
    ids = decoder.with_bos(_held_out_ids(tiny["qwen2"], texts[1], 48, 12))
    bf16 = RecipeProjection(Recipe("bf16", "-"), LayerWeights(decoder, 2))
    logp = torch.log_softmax(decoder.logits(ids, bf16), dim=-1)
    nll = -logp[:, :-1].gather(-1, ids[:, 1:, None]).mean().item()
    assert math.log(evaluation.row("bf16").perplexity) == pytest.approx(nll, rel=1e-5)
    shifted = -logp[:, 1:].gather(-1, ids[:, 1:, None]).mean().item()  # an off-by-one would give this
    assert abs(shifted - nll) > 0.01 * nll


@pytest.fixture(scope="module")
def recomputation(tiny, texts):
    """An independent recomputation's inputs: the tiny decoder, its grouped weights, the
    evaluation's held-out ids (BOS added), the per-group dynamic recipe and the bf16 model's
    next-token log-probabilities ``p (B, S−1, V)``."""
    decoder = Decoder.from_gguf(tiny["qwen2"])
    weights = LayerWeights(decoder, 2)
    ids = decoder.with_bos(_held_out_ids(tiny["qwen2"], texts[1], 48, 12))
    recipe = next(r for r in all_recipes() if r.label == "dynamic | per_group dynamic")
    p = torch.log_softmax(decoder.logits(ids, RecipeProjection(Recipe("bf16", "-"), weights)), -1)[:, :-1]
    return decoder, weights, ids, recipe, p


def test_kl_is_from_bf16_to_the_recipe(recomputation, evaluation):
    decoder, weights, ids, recipe, p = recomputation
    q = torch.log_softmax(decoder.logits(ids, RecipeProjection(recipe, weights, call_tokens=ids.shape[1])), -1)[:, :-1]
    forward = (p.exp() * (p - q)).sum(-1).mean().item()
    backward = (q.exp() * (q - p)).sum(-1).mean().item()
    assert evaluation.row("dynamic", "per_group dynamic").kl == pytest.approx(forward, rel=1e-4)
    assert abs(forward - backward) > 1e-3 * forward


def test_sensitivity_restarts_from_the_bf16_stream_entering_the_layer(recomputation, evaluation):
    decoder, weights, ids, recipe, p = recomputation
    for layer in range(decoder.config.layers):  # from the embeddings, only this layer quantized: independent path
        one = RecipeProjection(recipe, weights, layers=[layer], measure=False, call_tokens=ids.shape[1])
        q = torch.log_softmax(decoder.logits(ids, one), -1)[:, :-1]
        expected = (p.exp() * (p - q)).sum(-1).mean().item()
        assert evaluation.sensitivity_kl[layer] == pytest.approx(expected, rel=1e-4), layer
    assert evaluation.sensitivity_kl[0] != pytest.approx(evaluation.sensitivity_kl[1], rel=1e-3)


def test_every_recipe_is_measured_per_window_on_the_same_windows(evaluation):
    labels = {r.label for r in evaluation.rows}
    assert labels == {r.label for r in all_recipes()}
    assert {r.operands for r in evaluation.rows} == {"-", "W4A4", "W16A4"}
    assert len(evaluation.window_positions) == 4 and sum(evaluation.window_positions) == evaluation.tokens == 44
    for row in evaluation.rows:
        assert len(row.window_kl) == len(row.window_nll) == len(row.window_top1) == 4
        assert sum(row.window_kl) / evaluation.tokens == pytest.approx(row.kl, rel=1e-9)
        assert sum(row.window_top1) / evaluation.tokens == pytest.approx(row.top1_agreement, rel=1e-9)
    bf16 = evaluation.row("bf16")
    assert bf16.kl == 0 and bf16.top1_agreement == 1
    nvfp4 = [r for r in evaluation.rows if r.is_nvfp4]
    assert min(r.kl for r in nvfp4) > 0, "quantizing every o_proj must move the distribution"
    for r in nvfp4:  # activation-only rows keep the weights: they differ from W4A4
        if r.operands == "W4A4":
            assert evaluation.row(r.recipe, r.mode, "W16A4").kl != r.kl
    assert len(evaluation.sensitivity_window_kl) == 2 and all(len(w) == 4 for w in evaluation.sensitivity_window_kl)
    assert from_dict(json.loads(json.dumps(evaluation.as_dict()))) == evaluation


def test_window_grouping_does_not_change_the_per_window_sums_beyond_float_noise(tiny, texts, evaluation):
    other = evaluate_model(tiny["qwen2"], groups=2, tokens=48, seq_len=12, texts=texts, progress=False,
                           batch_sequences=1, sensitivity=False, activation_only=False, include_mse=False)
    for row in other.rows:  # a window's sums belong to the window, whatever batch it ran in
        mine = evaluation.row(row.recipe, row.mode, row.operands)
        # quantized rows: another batch shape reorders float sums, which flips some roundings
        assert row.window_nll == pytest.approx(mine.window_nll, rel=1e-4 if row.recipe == "bf16" else 2e-2)


def test_static_scales_come_from_the_calibration_text_only(tiny):
    held_out = corpus.held_out_text()[:3000]
    quiet = evaluate_model(tiny["llama"], groups=2, tokens=32, seq_len=16,
                           texts=(corpus.calibration_text()[:3000], held_out), sensitivity=False, include_mse=False, progress=False, activation_only=False)
    loud = evaluate_model(tiny["llama"], groups=2, tokens=32, seq_len=16,
                          texts=("0 1 2 3 4 5 6 7 8 9 ~ ^ | " * 40, held_out), sensitivity=False, include_mse=False, progress=False, activation_only=False)
    for recipe, mode in (("dynamic", "per_group dynamic"), ("w4a16", "-"), ("fp8 (1x128 act, 128x128 wt)", "-")):
        assert quiet.row(recipe, mode) == loud.row(recipe, mode), "rows without static scales ignore the calibration text"
    assert quiet.row("max", "per_group static").kl != loud.row("max", "per_group static").kl
    assert not any(r.recipe.startswith("mse") for r in quiet.rows)
    ratio = cross_ratio(loud, quiet, "max | per_group static")
    assert ratio.value == pytest.approx(loud.row("max", "per_group static").kl / quiet.row("max", "per_group static").kl)


def test_model_evaluation_rejects_a_text_too_short(tiny):
    with pytest.raises(ValueError, match="held-out text is too short"):
        evaluate_model(tiny["llama"], groups=2, tokens=64, texts=("a long enough text " * 100, "short"), progress=False)


# --- the bootstrap -------------------------------------------------------------------------

def test_resamples_draw_units_with_replacement_reproducibly():
    w = resample_weights(7, 500, seed=3)
    assert w.shape == (500, 7) and torch.all(w.sum(1) == 7) and torch.equal(w, resample_weights(7, 500, seed=3))
    assert (w == 0).any() and (w >= 2).any()


def test_identical_units_give_a_point_interval_and_a_ratio_of_one():
    sums = torch.tensor([[2.0, 4.0]] * 5)
    boot = PairedBootstrap(sums, [10] * 5)
    assert boot.mean(0) == Interval(0.2, pytest.approx(0.2), pytest.approx(0.2))
    r = boot.ratio(1, 0)
    assert (r.value, r.low, r.high) == pytest.approx((2.0, 2.0, 2.0)) and r.excludes(1.0)


def test_paired_ratio_is_resolved_when_one_recipe_is_worse_in_every_window():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(20, generator=g) + 0.5  # windows differ a lot, recipes differ by a steady 5 %
    boot = PairedBootstrap(torch.stack((base, 1.05 * base), 1), [64] * 20)
    assert boot.ratio(1, 0).low == pytest.approx(1.05) and boot.ratio(1, 0).excludes(1.0)
    assert not boot.mean(1).excludes(boot.mean(0).value), "unpaired means overlap; only the pairing resolves it"


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    g = torch.Generator().manual_seed(1)
    covered = 0
    for trial in range(200):
        sums = torch.randn(30, 1, generator=g) + 1.0  # mean 1 per window of 1 position
        covered += not PairedBootstrap(sums, [1] * 30, resamples=1000, seed=trial).mean(0).excludes(1.0)
    assert 0.88 <= covered / 200 <= 0.99


def test_tokens_to_resolve_follows_the_square_root_law():
    assert tokens_to_resolve(1.1, 0.05, 1000) == pytest.approx(1000 * (1.959964 * 0.05 / math.log(1.1)) ** 2, rel=1e-6)
    assert tokens_to_resolve(1.0, 0.05, 1000) == math.inf
    assert tokens_to_resolve(1 / 1.1, 0.05, 1000) == pytest.approx(tokens_to_resolve(1.1, 0.05, 1000))
    with pytest.raises(ValueError, match="positive"):
        tokens_to_resolve(-1, 0.05, 10)


@pytest.mark.parametrize("sums, counts, message", [
    (torch.ones(3), [1, 1, 1], "sums must be"),
    (torch.ones(3, 2), [1, 1], "counts must be"),
    (torch.ones(1, 2), [1], "at least 2 units"),
    (torch.tensor([[1.0], [math.nan]]), [1, 1], "finite"),
    (torch.ones(2, 1), [1, 0], "counts > 0"),
])
def test_bootstrap_rejects_bad_input(sums, counts, message):
    with pytest.raises(ValueError, match=message):
        PairedBootstrap(sums, counts)


# --- intervals of an evaluation and the recommendation -------------------------------------

def _row(recipe, mode, kl_windows, operands="W4A4", transform="none"):
    n = 50.0
    kl = sum(kl_windows) / (n * len(kl_windows))
    return Row(recipe, mode, 10.0, kl, 0.9, [20.0], operands if mode != "-" else "-",
               [2.3 * n] * len(kl_windows), list(kl_windows), [0.9 * n] * len(kl_windows), transform)


def _evaluation(rows, windows):
    return ModelEvaluation("m", "llama", 4, 2, 50 * windows, 100, 50, rows, "dynamic | per_group dynamic", [], [0.1],
                           [], [], [], window_positions=[50] * windows)


def _window_kl(level, noise, seed, windows=16):
    g = torch.Generator().manual_seed(seed)
    return (level * 50 * (1 + noise * torch.randn(windows, generator=g))).clamp_min(0.01).tolist()


def test_recommend_picks_the_cheapest_row_not_resolved_as_worse():
    common = _window_kl(0.05, 0.3, 0)
    rows = [_row("bf16", "-", [0.0] * 16), _row("fp8 (1x128 act, 128x128 wt)", "-", [0.25] * 16),
            _row("dynamic", "per_group dynamic", common),
            _row("max", "shared static", [k * 1.01 for k in common]),  # 1 % worse in every window: equivalent
            _row("percentile 99.99", "shared static", [k * 1.5 for k in common])]  # resolved as worse
    recommendation = recommend(_evaluation(rows, 16))
    assert recommendation.row.label == "max | shared static"
    assert recommendation.best.label == "dynamic | per_group dynamic"
    assert set(recommendation.equivalent) == {"dynamic | per_group dynamic", "max | shared static"}
    assert "cheapest" in recommendation.reason and "16 windows" in recommendation.reason
    assert recommendation.top_resolved  # a steady 1 % is resolved, just not worth paying for


def test_recommend_says_when_the_top_is_not_resolved_and_how_many_tokens_would_resolve_it():
    rows = [_row("bf16", "-", [0.0] * 16), _row("fp8 (1x128 act, 128x128 wt)", "-", [0.25] * 16),
            _row("dynamic", "per_group dynamic", _window_kl(0.050, 0.3, 1)),
            _row("max", "per_group static", _window_kl(0.052, 0.3, 2))]
    recommendation = recommend(_evaluation(rows, 16))
    assert not recommendation.top_resolved and "not resolved" in recommendation.reason
    assert recommendation.tokens_to_resolve > recommendation.tokens
    assert recommendation.row.label == "max | per_group static", "equivalent and cheaper than dynamic"


def test_deployment_cost_orders_static_before_dynamic_and_plain_before_four_over_six():
    def cost(recipe, mode):
        return deployment_cost(_row(recipe, mode, [1.0, 1.0]))

    assert cost("max", "shared static") < cost("max", "per_group static") < cost("dynamic", "shared dynamic") \
        < cost("dynamic", "per_group dynamic")
    assert cost("max", "per_group static") < cost("max + four-over-six", "per_group static")
    assert cost("dynamic", "per_group dynamic") < cost("max + four-over-six", "shared static"), \
        "four-over-six activations run in no serving stack: after every plain row"
    assert EQUIVALENCE_MARGIN == 0.02


def test_row_intervals_of_a_real_evaluation(evaluation):
    intervals = row_intervals(evaluation)
    for row in evaluation.rows:
        ci = intervals[row.label]
        assert ci.kl.low <= row.kl <= ci.kl.high and ci.perplexity.low <= row.perplexity <= ci.perplexity.high
        assert (ci.ratio_to_best is None) == (not row.is_nvfp4)
    best = min((r for r in evaluation.rows if r.operands == "W4A4"), key=lambda r: r.kl)
    assert intervals[best.label].ratio_to_best.value == 1.0
    ratio = paired_ratio(evaluation, "dynamic | per_group dynamic", "fp8 (1x128 act, 128x128 wt)")
    assert ratio.value == pytest.approx(intervals["dynamic | per_group dynamic"].ratio_to_reference.value)
    assert len(sensitivity_intervals(evaluation)) == 2


# --- calibrate-model ------------------------------------------------------------------------

def test_calibrate_model_writes_intervals_and_equivalents(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.txt").write_text(corpus.held_out_text()[:8000])
    assert main(["calibrate-model", "--gguf", str(tiny["llama"]), "--text", "text.txt", "--groups", "2",
                 "--tokens", "192", "--out", "report"]) == 0
    record = json.loads((tmp_path / "report" / "model_calibration.json").read_text(),
                        parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert record["model"] == "tiny-llama" and record["windows"] == 3 and record["bf16"]["perplexity"] > 1
    rows = record["recipes"]
    assert {(r["recipe"], r["mode"], r["operands"]) for r in rows} == \
        {(r.name, r.mode, r.operands) for r in all_recipes()}
    for r in rows:
        low, high = r["kl_ci95"]
        assert low <= r["kl"] <= high
        if r["operands"] != "-":
            assert r["kl_ratio_to_best_ci95"][0] <= r["kl_ratio_to_best"] <= r["kl_ratio_to_best_ci95"][1]
    recommended = record["recommended"]
    chosen = next(r for r in rows if (r["recipe"], r["mode"], r["operands"]) ==
                  (recommended["recipe"], recommended["mode"], "W4A4"))
    assert f"{chosen['recipe']} | {chosen['mode']}" in recommended["equivalent"]
    assert chosen["kl_ratio_to_best_ci95"][0] <= 1 + EQUIVALENCE_MARGIN
    report = (tmp_path / "report" / "model_calibration.md").read_text()
    assert "Recommended:" in report and "95 %" in report and "W16A4" in report
    assert (tmp_path / "report" / "model_calibration.png").stat().st_size > 10_000
    capsys.readouterr()


def test_calibrate_model_with_transforms_adds_their_rows_and_weighs_them(tiny, tmp_path, monkeypatch, capsys):
    from nvfp4lab.models.projection import transform_recipes

    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.txt").write_text(corpus.held_out_text()[:8000])
    assert main(["calibrate-model", "--gguf", str(tiny["llama"]), "--text", "text.txt", "--groups", "2",
                 "--tokens", "192", "--out", "report", "--transforms"]) == 0
    record = json.loads((tmp_path / "report" / "model_calibration.json").read_text())
    labels = {(r["recipe"], r["mode"], r["operands"], r["transform"]) for r in record["recipes"]}
    decoder = Decoder.from_gguf(tiny["llama"])
    expected = {(r.name, r.mode, r.operands, r.transform.label)
                for r in transform_recipes(decoder.config.head_dim, decoder.config.attention_width // 2)}
    assert expected <= labels and {(r.name, r.mode, r.operands, "none") for r in all_recipes()} <= labels
    assert len(labels) == len(record["recipes"]), "every row once"
    assert "transform" in record["recommended"]
    report = (tmp_path / "report" / "model_calibration.md").read_text()
    assert "| transform |" in report and "hadamard head" in report and "folds into v_proj" in report
    capsys.readouterr()


def test_calibrate_model_without_transforms_says_how_to_get_them(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.txt").write_text(corpus.held_out_text()[:8000])
    assert main(["calibrate-model", "--gguf", str(tiny["llama"]), "--text", "text.txt", "--groups", "2",
                 "--tokens", "128", "--out", "report"]) == 0
    report = (tmp_path / "report" / "model_calibration.md").read_text()
    assert "`--transforms` adds them" in report
    assert {r["transform"] for r in json.loads((tmp_path / "report" / "model_calibration.json").read_text())["recipes"]} \
        == {"none"}
    capsys.readouterr()


@pytest.mark.parametrize("argv, message", [
    (["--gguf", "missing.gguf"], "GGUF file not found"),
    (["--gguf", "{falcon}"], "unsupported architecture"),
    (["--gguf", "{llama}", "--groups", "3"], "must divide the model's 4 attention heads"),
    (["--gguf", "{llama}", "--text", "short.txt"], "text is too short"),
    (["--gguf", "{llama}", "--text", "missing.txt"], "text file not found"),
    (["--gguf", "{llama}", "--text", "long.txt", "--tokens", "64"], "intervals need at least 2"),
])
def test_calibrate_model_rejects_bad_input_with_exit_2_and_no_folder(tiny, tmp_path, monkeypatch, capsys, argv,
                                                                     message):
    monkeypatch.chdir(tmp_path)
    write_tiny(tmp_path / "falcon.gguf", "falcon")
    (tmp_path / "short.txt").write_text("In the beginning.")
    (tmp_path / "long.txt").write_text(corpus.held_out_text()[:8000])
    argv = [a.format(llama=tiny["llama"], falcon=tmp_path / "falcon.gguf") for a in argv]
    if "--tokens" not in argv:
        argv += ["--tokens", "32"]
    assert main(["calibrate-model", *argv, "--out", "report"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert message in error[-1] and "Traceback" not in "\n".join(error)
    assert not (tmp_path / "report").exists()


def test_a_failed_calibrate_model_leaves_nested_and_existing_folders_as_it_found_them(tiny, tmp_path, monkeypatch,
                                                                                     capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "short.txt").write_text("In the beginning.")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for out in ("a/b/report", "mine"):
        assert main(["calibrate-model", "--gguf", str(tiny["llama"]), "--text", "short.txt", "--tokens", "32",
                     "--out", out]) == 2
    assert "text is too short" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"


def test_dynamic_scales_are_per_call_so_batching_does_not_change_them(tiny):
    decoder = Decoder.from_gguf(tiny["llama"])
    weights = LayerWeights(decoder, 2)
    recipe = next(r for r in all_recipes() if r.label == "dynamic | per_group dynamic")
    o = torch.randn(2 * 8, decoder.config.attention_width)
    o[8:] *= 100  # the second call is much louder: a batch-wide amax would starve the first
    batched = RecipeProjection(recipe, weights, measure=False, call_tokens=8)(0, o, decoder.o_proj_weight(0))
    single = RecipeProjection(recipe, weights, measure=False, call_tokens=8)(0, o[:8], decoder.o_proj_weight(0))
    whole = RecipeProjection(recipe, weights, measure=False)(0, o, decoder.o_proj_weight(0))
    assert torch.equal(batched[:8], single)
    assert not torch.equal(whole[:8], single)
    with pytest.raises(ValueError, match="call_tokens must be positive"):
        RecipeProjection(recipe, weights, call_tokens=0)


def test_calibrate_model_exports_the_served_row_and_says_what_it_costs(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.txt").write_text(corpus.held_out_text()[:8000])
    assert main(["calibrate-model", "--gguf", str(tiny["llama"]), "--text", "text.txt", "--groups", "2",
                 "--tokens", "192", "--out", "report", "--export", "served", "--format", "modelopt"]) == 0
    out = capsys.readouterr().out
    assert "served as " in out and "measured KL" in out
    record = json.loads((tmp_path / "served" / "nvfp4lab_export.json").read_text())
    assert record["recipe"].endswith("| shared static") and (tmp_path / "served" / "hf_quant_config.json").is_file()


def test_calibrate_model_refuses_a_non_empty_export_folder_before_the_long_work(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "x").write_text("mine")
    assert main(["calibrate-model", "--gguf", str(tiny["llama"]), "--tokens", "192", "--out", "report",
                 "--export", "served"]) == 2
    assert "served" in capsys.readouterr().err and not (tmp_path / "report").exists()


def test_deployment_cost_puts_runtime_costs_before_the_offline_work_of_a_transform():
    def cost(recipe, mode, transform="none"):
        return deployment_cost(_row(recipe, mode, [1.0, 1.0], transform=transform))

    assert cost("max", "shared static") < cost("max", "shared static", "gptq") \
        < cost("max", "shared static", "hadamard head") == cost("max", "shared static", "hadamard head + gptq")
    assert cost("max", "shared static", "hadamard head + gptq") < cost("dynamic", "per_group dynamic"), \
        "a folded transform is free at inference: a dynamic amax pass is not"
    assert cost("dynamic", "per_group dynamic", "smoothquant") < cost("max + four-over-six", "shared static")


def test_recommend_prefers_a_transform_only_when_it_is_resolved_better_and_says_how_to_deploy_it():
    common = _window_kl(0.05, 0.3, 4)
    base = [_row("bf16", "-", [0.0] * 16), _row("fp8 (1x128 act, 128x128 wt)", "-", [0.25] * 16)]
    plain = _row("max", "shared static", common)
    rotated = _row("max", "shared static", [k * 0.8 for k in common], transform="hadamard head")
    e = _evaluation(base + [plain, rotated], 16)
    e.head_dim = 64
    recommendation = recommend(e)
    assert recommendation.row.label == "max | shared static | hadamard head"
    assert "v_proj" in recommendation.reason and "size 64" in recommendation.reason
    equal = _row("max", "shared static", [k * 1.005 for k in common], transform="hadamard head")
    recommendation = recommend(_evaluation(base + [plain, equal], 16))
    assert recommendation.row.label == "max | shared static", "equivalent: the row without a transform is cheaper"
    assert "To deploy" not in recommendation.reason


def test_a_recommended_transform_is_served_as_the_best_row_without_one():
    from nvfp4lab.models.command import served_row

    common = _window_kl(0.05, 0.3, 5)
    rows = [_row("bf16", "-", [0.0] * 16), _row("fp8 (1x128 act, 128x128 wt)", "-", [0.25] * 16),
            _row("max", "shared static", [k * 1.2 for k in common]),
            _row("headroom x4", "shared static", [k * 1.1 for k in common]),
            _row("max", "shared static", common, transform="gptq")]
    e = _evaluation(rows, 16)
    recommendation = recommend(e)
    assert recommendation.row.label == "max | shared static | gptq"
    row, why = served_row(e, recommendation)
    assert row.label == "headroom x4 | shared static" and "gptq" in why and "not written" in why


def test_the_served_row_is_what_a_checkpoint_can_hold():
    from nvfp4lab.models.command import served_row

    common = _window_kl(0.05, 0.3, 3)
    rows = [_row("bf16", "-", [0.0] * 16), _row("fp8 (1x128 act, 128x128 wt)", "-", [0.25] * 16),
            _row("dynamic", "per_group dynamic", common), _row("max", "per_group static", [k * 1.01 for k in common]),
            _row("max", "shared static", [k * 1.30 for k in common]),  # resolved worse: not equivalent
            _row("headroom x4", "shared static", [k * 1.25 for k in common])]
    e = _evaluation(rows, 16)
    recommendation = recommend(e)
    assert recommendation.row.label == "max | per_group static"
    row, why = served_row(e, recommendation)  # per-group scales travel as their max: the shared row
    assert row.label == "max | shared static" and "max over the" in why
    dynamic_only = _evaluation([rows[0], rows[1], rows[2], rows[5]], 16)
    row, why = served_row(dynamic_only, recommend(dynamic_only))
    assert row.label == "headroom x4 | shared static" and "cannot travel" in why
