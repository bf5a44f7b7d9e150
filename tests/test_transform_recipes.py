"""The transform recipes (nvfp4lab.transforms.recipes) and their place in the model-level
study: labels, availability and cost; what fit_transforms fits (RTN bit for bit, GPTQ on
the transformed activations' Hessian, SmoothQuant's α from the tied search); the activation
statistics against hand-computed values; the transform rows of the table; the hook's
output against an independent recomputation; and evaluate_model(recipe_set="transforms")."""

import math

import pytest
import torch

from gguf_tiny import write_tiny
from nvfp4lab import baselines
from nvfp4lab.models import corpus
from nvfp4lab.models.decoder import Decoder
from nvfp4lab.models.evaluate import evaluate_model, fit_layer_transforms, token_windows
from nvfp4lab.models.projection import (BASELINES, TRANSFORM_MODES, LayerWeights, Recipe, RecipeProjection,
                                         recipe_output, transform_recipes)
from nvfp4lab.quantize import dequantize_nvfp4, quantize_nvfp4
from nvfp4lab.transforms.gptq import gptq_quantize, hessian
from nvfp4lab.transforms.hadamard import fold_into_weights, rotate_activations
from nvfp4lab.transforms.recipes import STUDY_TRANSFORMS, Transform, activation_statistics, fit_transforms
from nvfp4lab.transforms.smoothing import DEFAULT_ALPHAS, search_alpha

HEADS, KV_HEADS, HEAD_DIM, GROUPS = 4, 2, 32, 2
K = HEADS * HEAD_DIM // GROUPS  # 64: two heads per group


# --- Transform: labels, availability, cost ----------------------------------------------------

@pytest.mark.parametrize("transform", [Transform(), *STUDY_TRANSFORMS], ids=lambda t: t.label)
def test_label_and_parse_are_inverses(transform):
    """Every study transform and the plain one survive label -> parse; the label names
    only what differs from plain (``"none"`` for no transform with RTN weights)."""
    assert Transform.parse(transform.label) == transform
    assert transform.label == " + ".join(p for p in (transform.activation, transform.weights)
                                         if p not in ("none", "rtn")) or transform.is_plain
    assert (transform.label == "none") == transform.is_plain


def test_the_study_transforms_are_each_activation_transform_each_weight_recipe_and_rotation_with_gptq():
    """The study's list, in table order: what the notebook's rows and the findings name."""
    labels = [t.label for t in STUDY_TRANSFORMS]
    assert labels == ["hadamard 16", "hadamard head", "hadamard 128", "smoothquant", "mse weights",
                      "four-over-six weights", "16x16 weights", "gptq", "hadamard head + gptq"]
    assert len(set(STUDY_TRANSFORMS)) == len(STUDY_TRANSFORMS) and Transform() not in STUDY_TRANSFORMS


@pytest.mark.parametrize("make, message", [
    (lambda: Transform("rotate"), "unknown activation transform 'rotate'"),
    (lambda: Transform("none", "awq"), "unknown weight recipe 'awq'"),
    (lambda: Transform.parse("hadamard 32"), "'hadamard 32' is neither"),
    (lambda: Transform.parse("hadamard head + hadamard 16"), "'hadamard 16' is neither .* or repeats a kind"),
    (lambda: Transform.parse("gptq + mse weights"), "'mse weights' is neither .* or repeats a kind"),
    (lambda: Transform.parse("hadamard head+gptq"), "'hadamard head\\+gptq'"),
    (lambda: Transform.parse(""), "cannot read the transform ''"),
])
def test_unknown_names_raise_a_value_error_naming_the_problem(make, message):
    """A typo in a transform (constructor or label) fails loudly, naming the bad part."""
    with pytest.raises(ValueError, match=message):
        make()


def test_unavailable_says_why_a_rotation_cannot_fold():
    """``hadamard 128`` needs 128 | head_dim (a block spanning heads does not fold into w_v):
    refused for D = 64 with the reason, fine for D = 256 (K = 512); ``hadamard head`` needs a
    power-of-two D; blocks must divide K; non-rotations are always available."""
    why = Transform("hadamard 128").unavailable(64, 192)
    assert "head dimension 64" in why and "block 128" in why and "value projection" in why
    assert Transform("hadamard 128").unavailable(256, 512) is None
    assert Transform("hadamard head").unavailable(64, 192) is None
    assert "power-of-two block" in Transform("hadamard head").unavailable(96, 192)
    assert "does not divide K = 200" in Transform("hadamard 16").unavailable(64, 200)
    for t in (Transform(), Transform("smoothquant"), Transform("none", "gptq")):
        assert t.unavailable(24, 48) is None, t.label
    assert Transform("hadamard head").block(64) == 64 and Transform("hadamard 16").block(64) == 16
    assert Transform("smoothquant").block(64) is None


def test_cost_orders_plain_then_weights_only_then_activation_transforms():
    """Cost rank (what the recommendation prefers on a tie): plain 0, weight recipes 1 (offline,
    same served graph), activation transforms 2 (folded or online) whatever the weights."""
    assert Transform().cost == 0
    weights_only = [t for t in STUDY_TRANSFORMS if t.activation == "none"]
    activation = [t for t in STUDY_TRANSFORMS if t.activation != "none"]
    assert len(weights_only) == 4 and len(activation) == 5
    assert {t.cost for t in weights_only} == {1} and {t.cost for t in activation} == {2}
    assert Transform("hadamard head", "gptq").cost == Transform("hadamard head").cost


# --- fit_transforms ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def layer():
    """One grouped layer: ``x (T, G, K)`` with correlated channels and channel outliers
    (so GPTQ's Hessian is far from diagonal and smoothing has something to do), ``W (G, K, N)``
    float32; G = 2 groups of 2 heads of D = 32."""
    g = torch.Generator().manual_seed(11)
    mixing = torch.randn(GROUPS, K, K, generator=g) / math.sqrt(K) + 0.5 * torch.eye(K)
    x = torch.einsum("tgk,gkj->tgj", torch.randn(192, GROUPS, K, generator=g), mixing)
    x = x * torch.exp(1.2 * torch.randn(K, generator=g))
    w = torch.randn(GROUPS, K, 48, generator=g) / math.sqrt(K)
    return x, w


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def test_plain_rtn_weights_are_the_baselines_nvfp4_weights_bit_for_bit(layer):
    """The plain transform is the plain NVFP4 row: its weights are baselines.nvfp4_weights
    bit for bit (float64), its activations untouched."""
    x, w = layer
    fitted = fit_transforms([Transform()], x, w, HEAD_DIM)[Transform()]
    assert same(fitted.w_hat, baselines.nvfp4_weights(w)) and fitted.w_hat.dtype == torch.float64
    assert same(fitted.weights, w) and fitted.block is None and fitted.smoothing is None
    assert torch.equal(fitted.activations(x), x)


@pytest.mark.parametrize("order", ["gptq first", "rotation first"])
def test_gptq_uses_the_hessian_of_the_transformed_activations(layer, order):
    """``hadamard head + gptq`` is GPTQ of ``Rᵀ W`` with the Hessian of ``x R``; ``gptq``
    alone that of ``x`` — whichever is fitted first (the Hessians are cached per activation
    transform). The mutated expectations (the other Hessian) give other weights, so a
    shared or untransformed Hessian would be caught."""
    x, w = layer
    rotated, plain = Transform("hadamard head", "gptq"), Transform("none", "gptq")
    transforms = [plain, rotated] if order == "gptq first" else [rotated, plain]
    fitted = fit_transforms(transforms, x, w, HEAD_DIM)
    w_rot, x_rot = fold_into_weights(w, HEAD_DIM), rotate_activations(x, HEAD_DIM)
    rotated_gptq = gptq_quantize(w_rot, hessian(x_rot))
    expected_rotated = rotated_gptq.dequantized.double()
    expected_plain = gptq_quantize(w, hessian(x)).dequantized.double()
    assert same(fitted[rotated].w_hat, expected_rotated)
    assert same(fitted[plain].w_hat, expected_plain)
    mutated = gptq_quantize(w_rot, hessian(x))  # the untransformed Hessian: other bytes, other weights
    assert not torch.equal(mutated.tensor.data.view(torch.uint8), rotated_gptq.tensor.data.view(torch.uint8))
    assert not torch.equal(fitted[rotated].w_hat, mutated.dequantized.double())
    assert not torch.equal(fitted[plain].w_hat, gptq_quantize(w, hessian(x_rot)).dequantized.double())
    assert not torch.equal(expected_plain, baselines.nvfp4_weights(w)), "GPTQ must differ from RTN here"
    assert fitted[rotated].block == HEAD_DIM and same(fitted[rotated].weights, w_rot)


def test_smoothquant_alpha_and_scales_are_those_of_the_tied_search(layer):
    """The fitted α and ``s`` are :func:`search_alpha`'s with ``shared_kv``: the scales are
    equal across the query heads sharing a KV head (so they fold into w_v), unlike the
    untied search's; ``x' = x / s``, ``W' = s·W``."""
    x, w = layer
    t = Transform("smoothquant")
    fitted = fit_transforms([t], x, w, HEAD_DIM, shared_kv=(HEADS, KV_HEADS))[t]
    search = search_alpha(x, w, shared_kv=(HEADS, KV_HEADS))
    assert fitted.search.alpha == search.alpha and search.alpha in DEFAULT_ALPHAS and 0 < search.alpha < 1
    assert same(fitted.smoothing, search.scales)
    per_kv = fitted.smoothing.reshape(KV_HEADS, HEADS // KV_HEADS, HEAD_DIM)
    assert torch.equal(per_kv[:, 0], per_kv[:, 1])
    untied = fit_transforms([t], x, w, HEAD_DIM)[t].smoothing
    assert not torch.equal(untied, fitted.smoothing), "shared_kv must change the scales of this layer"
    assert same(fitted.weights, w * fitted.smoothing[..., None])
    assert same(fitted.activations(x), x / fitted.smoothing)
    assert fitted.w_hat.equal(baselines.nvfp4_weights(fitted.weights))


def test_fit_transforms_refuses_an_unavailable_transform_and_mismatched_shapes(layer):
    """A rotation that cannot fold is refused with the reason, before any fitting."""
    x, w = layer
    with pytest.raises(ValueError, match="head dimension 32"):
        fit_transforms([Transform("hadamard 128")], x, w, HEAD_DIM)
    with pytest.raises(ValueError, match="disagree on G, K"):
        fit_transforms([Transform()], x[..., :32], w, HEAD_DIM)


# --- activation_statistics against hand-computed values --------------------------------------

def test_statistics_of_plus_minus_one_are_flat_and_exact():
    """±1 with mean 0: E[x⁴]/Var² = 1/1 = 1; every block flat (max/mean 1); every value
    is representable (amax → 6 on the E2M1 grid, back to 1), so no zero codes and an
    infinite SQNR."""
    x = torch.ones(4, 2, 32)
    x[..., 1::2] = -1
    stats = activation_statistics(x)
    assert stats == {"kurtosis": 1.0, "block_max_over_mean": 1.0, "zero_code_fraction": 0.0, "sqnr_db": math.inf}


def test_statistics_of_a_single_spike():
    """One spike among n = 64 elements: kurtosis (n² − 3n + 3)/(n − 1) (from μ = a/n,
    Var = a²(n−1)/n², E[(x−μ)⁴] = a⁴(n−1)((n−1)³+1)/n⁵); its block has max/mean = 16 and
    the empty blocks are left out; the 63 zeros code as zero."""
    x = torch.zeros(2, 2, 16)
    x[1, 0, 5] = -5.0
    stats = activation_statistics(x)
    n = 64
    assert stats["kurtosis"] == pytest.approx((n * n - 3 * n + 3) / (n - 1), rel=1e-12)
    assert stats["block_max_over_mean"] == 16.0
    assert stats["zero_code_fraction"] == 63 / 64


def test_statistics_count_the_values_a_block_outlier_flushes_to_zero():
    """Blocks ``[6, 0.2 ×7, 1 ×8]`` with per-group amax 6: the block scale maps 6 to 6, so the
    multiplier is 1 and 0.2 rounds to the E2M1 code 0 (|x| ≤ 0.25 does) while 6 and 1 are
    exact: 7/16 zero codes, SQNR = 10·log10(Σx² / (7·0.2²)), max/mean = 6·16/15.4."""
    block = torch.tensor([6.0] + [0.2] * 7 + [1.0] * 8)
    x = block.repeat(3, 2, 2)
    stats = activation_statistics(x)
    assert stats["zero_code_fraction"] == 7 / 16
    small = float(torch.tensor(0.2))  # the float32 value
    assert stats["sqnr_db"] == pytest.approx(10 * math.log10((36 + 7 * small**2 + 8) / (7 * small**2)), rel=1e-12)
    assert stats["block_max_over_mean"] == pytest.approx(6 * 16 / (6 + 7 * small + 8), rel=1e-12)
    mean = (6 + 7 * small + 8) / 16
    centred = [6 - mean] + [small - mean] * 7 + [1 - mean] * 8
    variance = sum(c * c for c in centred) / 16
    assert stats["kurtosis"] == pytest.approx(sum(c**4 for c in centred) / 16 / variance**2, rel=1e-12)


# --- the transform rows of the table ----------------------------------------------------------

def test_transform_recipes_rows_for_head_dim_64():
    """Baselines, then per mode (max | shared static, dynamic | per_group dynamic) the plain
    W4A4 row and every study transform that folds: no ``hadamard 128`` row for D = 64."""
    rows = transform_recipes(64, 192)
    usable = [t for t in STUDY_TRANSFORMS if t.activation != "hadamard 128"]
    expected = list(BASELINES) + [f"{name} | {mode}" + ("" if t.is_plain else f" | {t.label}")
                                  for name, mode in TRANSFORM_MODES for t in (Transform(), *usable)]
    assert [r.label for r in rows] == expected
    assert "max | shared static | hadamard head + gptq" in expected and len(rows) == 3 + 2 * 9
    assert not any(r.transform.activation == "hadamard 128" for r in rows)
    nvfp4 = [r for r in rows if r.is_nvfp4]
    assert all(r.operands == "W4A4" for r in nvfp4)
    assert {(r.job.label, r.job.mode.name) for r in nvfp4} == set(TRANSFORM_MODES) == {
        ("max", "shared static"), ("dynamic", "per_group dynamic")}
    assert all(r.transform.is_plain and r.operands == "-" for r in rows[:3])


def test_transform_recipes_rows_for_head_dim_256_include_hadamard_128():
    """With 128 | D (D = 256, K = 512) the FP8-block rotation runs: one more row per mode."""
    rows = transform_recipes(256, 512)
    labels = [r.label for r in rows]
    assert "max | shared static | hadamard 128" in labels and "dynamic | per_group dynamic | hadamard 128" in labels
    assert len(rows) == 3 + 2 * 10


# --- on a tiny decoder: the hook and the evaluation ------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Llama-layout GGUF decoder, 4 heads on 2 KV heads of D = 32 (K = 64 per group of 2)."""
    return write_tiny(tmp_path_factory.mktemp("tiny-transforms") / "llama.gguf", "llama", heads=HEADS,
                      kv_heads=KV_HEADS, head_dim=HEAD_DIM)


def attention_outputs(decoder, ids, groups=GROUPS):
    """Per layer, the attention output ``x (T, G, K)`` of the bf16-hooked decoder (as the
    calibration captures it)."""
    weights = LayerWeights(decoder, groups)
    bf16 = RecipeProjection(Recipe("bf16", "-"), weights, measure=False)
    seen = {}

    def capture(layer, o, w):
        seen.setdefault(layer, []).append(o.reshape(o.shape[0], groups, -1).float())
        return bf16(layer, o, w)

    decoder.hidden_states(ids, capture)
    return {layer: torch.cat(xs) for layer, xs in seen.items()}


def test_a_transform_recipe_must_be_fitted_before_it_runs(tiny):
    """The hook refuses a transform recipe on layers it was not fitted on (naming them and
    the function that fits), static or dynamic; a plain recipe needs no fitting."""
    decoder = Decoder.from_gguf(tiny)
    weights = LayerWeights(decoder, GROUPS)
    recipe = next(r for r in transform_recipes(HEAD_DIM, K) if r.label == "dynamic | per_group dynamic | hadamard head")
    with pytest.raises(ValueError, match=r"needs its transform fitted on layers \[0, 1\].*fit_layer_transforms"):
        RecipeProjection(recipe, weights)
    static = next(r for r in transform_recipes(HEAD_DIM, K) if r.label == "max | shared static | gptq")
    with pytest.raises(ValueError, match=r"needs its transform fitted on layers \[1\]"):
        RecipeProjection(static, weights, static={1: torch.ones(GROUPS)}, layers=[1])
    RecipeProjection(Recipe("dynamic", "per_group dynamic", recipe.job, "W4A4"), weights)  # plain: nothing to fit


def test_recipe_output_of_a_rotation_is_an_independent_recomputation(tiny):
    """``max | shared static | hadamard head`` after fit_layer_transforms equals: rotate x by
    Ĥ_D per head, quantize at the static scale (shared: the max of the (G,) scales),
    multiply (float64, bf16 output) by the NVFP4 weights of ``Rᵀ W``. The plain row's
    output differs (the rotation is applied), and so does one at the other group's scale."""
    decoder = Decoder.from_gguf(tiny)
    ids = torch.randint(0, decoder.config.vocab, (2, 16), generator=torch.Generator().manual_seed(5))
    xs = attention_outputs(decoder, ids)
    weights = LayerWeights(decoder, GROUPS)
    rows = {r.label: r for r in transform_recipes(HEAD_DIM, K)}
    recipe = rows["max | shared static | hadamard head"]
    for layer, x in xs.items():
        fit_layer_transforms(weights, layer, x, [recipe.transform])
        x_rot = rotate_activations(x, HEAD_DIM)
        amax = float(x_rot.abs().max())
        static = torch.tensor([0.3, 0.5]) * amax / 2688  # below the max calibration: some blocks clip
        z = recipe_output(recipe, x, weights, layer, static)
        gs = torch.full((GROUPS,), float(static.max()))
        x_hat = dequantize_nvfp4(quantize_nvfp4(x_rot, gs))
        w_hat = baselines.nvfp4_weights(fold_into_weights(weights.grouped(layer), HEAD_DIM))
        expected = torch.einsum("tgk,gkn->tgn", x_hat.double(), w_hat).to(torch.bfloat16).double()
        assert same(z, expected), layer
        assert not torch.equal(z, recipe_output(rows["max | shared static"], x, weights, layer, static))
        x_low = dequantize_nvfp4(quantize_nvfp4(x_rot, torch.full((GROUPS,), float(static.min()))))
        assert not torch.equal(z, baselines.grouped_matmul(x_low, w_hat))
        # the hook sums the groups' partial outputs
        hook = RecipeProjection(recipe, weights, static={layer: static}, layers=[layer], measure=False)
        y = hook(layer, x.reshape(x.shape[0], -1), decoder.o_proj_weight(layer))
        assert same(y, expected.sum(dim=1).to(torch.float32))


@pytest.fixture(scope="module")
def texts():
    return corpus.calibration_text()[:3000], corpus.held_out_text()[:3000]


SETTINGS = dict(groups=GROUPS, tokens=16, calibration_tokens=16, seq_len=8, batch_sequences=2, sensitivity=False,
                progress=False)


@pytest.fixture(scope="module")
def evaluations(tiny, texts):
    """The transform study and the scale study of the tiny decoder on the same windows."""
    transforms = evaluate_model(tiny, texts=texts, recipe_set="transforms", **SETTINGS)
    scales = evaluate_model(tiny, texts=texts, recipe_set="scales", include_mse=False, activation_only=False,
                            **SETTINGS)
    return transforms, scales


def test_the_transform_study_has_one_row_per_transform_recipe(evaluations):
    """Every row of transform_recipes(D, K) is evaluated, labelled with its transform, and a
    transform changes the row's per-window KL."""
    transforms, _ = evaluations
    assert transforms.recipe_set == "transforms" and transforms.head_dim == HEAD_DIM
    assert [r.label for r in transforms.rows] == [r.label for r in transform_recipes(HEAD_DIM, K)]
    assert {r.transform for r in transforms.rows} == {"none"} | {t.label for t in STUDY_TRANSFORMS} - {"hadamard 128"}
    plain = transforms.row("dynamic", "per_group dynamic")
    rotated = transforms.row("dynamic", "per_group dynamic", transform="hadamard head")
    assert rotated.label == "dynamic | per_group dynamic | hadamard head" and rotated.kl > 0
    assert rotated.window_kl != plain.window_kl, "the transform must change the recipe's output"
    assert len(rotated.window_kl) == len(transforms.window_positions) == 2


def test_the_transform_study_records_statistics_and_alpha_per_layer(tiny, texts, evaluations):
    """``activation_stats``: ``none`` and each activation transform evaluated, one entry per
    layer, equal to activation_statistics of the (transformed) calibration activations
    recomputed independently; ``smoothing_alpha``: the α the search tied across the shared
    KV heads picks per layer, and fit_layer_transforms fits those tied scales."""
    transforms, _ = evaluations
    layers = 2
    assert set(transforms.activation_stats) == {"none", "hadamard 16", "hadamard head", "smoothquant"}
    for name, per_layer in transforms.activation_stats.items():
        assert len(per_layer) == layers, name
        assert all(set(s) == {"kurtosis", "block_max_over_mean", "zero_code_fraction", "sqnr_db"} for s in per_layer)
    assert len(transforms.smoothing_alpha) == layers and all(a in DEFAULT_ALPHAS for a in transforms.smoothing_alpha)

    decoder = Decoder.from_gguf(tiny)
    windows = token_windows(tiny, texts[0], SETTINGS["calibration_tokens"], SETTINGS["seq_len"], "calibration")
    captured = {}
    for start in range(0, windows.shape[0], SETTINGS["batch_sequences"]):
        ids = decoder.with_bos(windows[start : start + SETTINGS["batch_sequences"]])
        for layer, x in attention_outputs(decoder, ids).items():
            captured.setdefault(layer, []).append(x)
    weights = LayerWeights(decoder, GROUPS)
    for layer in range(layers):
        x = torch.cat(captured[layer])
        assert transforms.activation_stats["none"][layer] == pytest.approx(activation_statistics(x), rel=1e-12)
        rotated = activation_statistics(rotate_activations(x, HEAD_DIM))
        assert transforms.activation_stats["hadamard head"][layer] == pytest.approx(rotated, rel=1e-12)
        assert rotated["kurtosis"] != pytest.approx(activation_statistics(x)["kurtosis"], rel=1e-3)
        fit_layer_transforms(weights, layer, x, [Transform("smoothquant")])
        fitted = weights.fitted[(layer, Transform("smoothquant"))]
        search = search_alpha(x, weights.grouped(layer), shared_kv=(HEADS, KV_HEADS))  # tied: it must fold
        assert transforms.smoothing_alpha[layer] == fitted.search.alpha == search.alpha
        assert same(fitted.smoothing, search.scales)


def test_plain_rows_of_the_transform_study_equal_the_scale_study_exactly(evaluations):
    """The plain rows (baselines and the two plain NVFP4 rows) of both studies run the same
    recipes on the same windows with the same static scales: equal per window, exactly."""
    transforms, scales = evaluations
    plain = [r for r in transforms.rows if r.transform == "none"]
    assert len(plain) == 5
    for row in plain:
        other = scales.row(row.recipe, row.mode, row.operands)
        assert row.window_kl == other.window_kl and row.window_nll == other.window_nll, row.label
        assert row.window_top1 == other.window_top1 and row.layer_sqnr_db == other.layer_sqnr_db, row.label
    assert transforms.row("max", "shared static").kl > 0


def test_evaluate_model_rejects_an_unknown_recipe_set(tiny, texts):
    """An unknown recipe_set fails before any work, naming the choices and the bad value."""
    with pytest.raises(ValueError, match="recipe_set must be one of .*'rotations'"):
        evaluate_model(tiny, texts=texts, recipe_set="rotations", **SETTINGS)


@pytest.mark.parametrize("label", ["rtn", "none + gptq", "rtn + gptq", "gptq + hadamard head", "none + none"])
def test_parse_accepts_only_the_labels_label_writes(label):
    """A row label is a key: two spellings of one transform would be two rows."""
    with pytest.raises(ValueError, match="cannot read the transform"):
        Transform.parse(label)


def test_transform_recipes_lists_the_plain_row_once_per_mode_whatever_it_is_given():
    from nvfp4lab.models.projection import transform_recipes

    rows = transform_recipes(64, 192, transforms=[Transform(), Transform("hadamard head"), Transform("hadamard head")])
    labels = [r.label for r in rows]
    assert len(labels) == len(set(labels)) == 3 + 2 * 2


@pytest.mark.parametrize("x, message", [
    (torch.ones(4, 2, 20), "multiple of 16"),
    (torch.ones(2, 32), r"\(T, G, K\)"),
    (torch.ones(0, 2, 32), "no tokens"),
    (torch.ones(4, 2, 32, dtype=torch.int32), "dtype"),
    (torch.full((4, 2, 32), float("nan")), "finite|NaN|non-finite"),
])
def test_activation_statistics_rejects_bad_input_by_name(x, message):
    with pytest.raises((ValueError, TypeError), match=message):
        activation_statistics(x)


def test_a_fitted_transform_refuses_activations_of_another_shape(layer):
    x, w = layer
    fitted = fit_transforms([Transform("hadamard head")], x, w, HEAD_DIM)[Transform("hadamard head")]
    with pytest.raises(ValueError, match=r"x must be \(T, G, K\)"):
        fitted.activations(x[:, :1])
    assert fitted.activations(x).shape == x.shape
