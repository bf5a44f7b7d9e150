"""Findings on the transforms beyond the global scale (rotations, smoothing, weight-side
recipes) measured on real decoder LMs; see notebook 08.

Every number comes from :func:`nvfp4lab.models.evaluate.transform_evaluations`: fast mode is
SmolLM2-135M-Instruct on the KJV (the windows of the scale study, 1008 held-out predictions in
16 windows of 64), full mode three models × three texts on 8192 held-out tokens
(``docs/transforms-full-*.md``). Every layer's ``o_proj`` runs the transform and NVFP4 W4A4 at
once, with two global-scale recipes: static shared max scales (the cheapest to serve) and
per-group dynamic scales. A transform of the activations is fitted per layer on the
calibration tokens and applied to ``x`` in the hook, which is what folding it into the value
projection computes (tests/test_transform_folds.py).

Every comparison is a paired KL ratio with its 95 % window-bootstrap interval, as in
:mod:`nvfp4lab.study.findings_decoder`; a claim orders two recipes only where the interval
excludes 1, otherwise it states the bound.
"""

from __future__ import annotations

import statistics

from nvfp4lab.study.finding import Finding
from nvfp4lab.study.findings_decoder import FP8, _ci, _conditions, _put, _ratio

MODES = {"static": "max | shared static", "dynamic": "dynamic | per_group dynamic"}
#: a rotation "does not help" when its KL ratio to no rotation is above this at 95 % (1008
#: predictions resolve about ±18 % here)
ROTATION_FLOOR = 0.80
#: smoothing "does not help" when its KL ratio to none is above this at 95 % (a perturbation of
#: one float32 ulp per layer moved the static ratio from 1.07 [0.87, 1.27] to 1.17 [0.95, 1.36])
SMOOTHING_FLOOR = 0.80


def _evaluation(fast):
    from nvfp4lab.models.evaluate import transform_evaluations

    return transform_evaluations(fast)[0]


def _on_transform_evaluation(numbers_of):
    return lambda fast, data_dir: numbers_of(_evaluation(fast))


def _label(mode: str, transform: str) -> str:
    return MODES[mode] + ("" if transform == "none" else f" | {transform}")


def _vs_plain(n: dict, e, transform: str, key: str) -> dict:
    for mode in MODES:
        _put(n, f"{key}_{mode}", _ratio(e, _label(mode, transform), _label(mode, "none")))
    return n


def _mean_stat(e, activation: str, stat: str) -> float:
    return statistics.mean(layer[stat] for layer in e.activation_stats[activation])


def _rotations(e):
    n = _conditions(e)
    _vs_plain(n, e, "hadamard head", "head")
    _vs_plain(n, e, "hadamard 16", "h16")
    for activation, key in (("none", "none"), ("hadamard head", "head"), ("hadamard 16", "h16")):
        n[f"kurtosis_{key}"] = _mean_stat(e, activation, "kurtosis")
        n[f"block_ratio_{key}"] = _mean_stat(e, activation, "block_max_over_mean")
        n[f"zero_codes_{key}"] = _mean_stat(e, activation, "zero_code_fraction")
        n[f"x_sqnr_{key}_db"] = _mean_stat(e, activation, "sqnr_db")
    n["head_dim"] = e.head_dim
    return n


def _smoothing(e):
    n = _conditions(e)
    _vs_plain(n, e, "smoothquant", "smooth")
    n["alpha_median"] = statistics.median(e.smoothing_alpha)
    n["alpha_min"], n["alpha_max"] = min(e.smoothing_alpha), max(e.smoothing_alpha)
    n["kurtosis_none"] = _mean_stat(e, "none", "kurtosis")
    n["kurtosis_smooth"] = _mean_stat(e, "smoothquant", "kurtosis")
    n["x_sqnr_none_db"] = _mean_stat(e, "none", "sqnr_db")
    n["x_sqnr_smooth_db"] = _mean_stat(e, "smoothquant", "sqnr_db")
    return n


def _weights(e):
    n = _conditions(e)
    for transform, key in (("gptq", "gptq"), ("four-over-six weights", "four6"), ("mse weights", "mse"),
                           ("16x16 weights", "tile")):
        _vs_plain(n, e, transform, key)
    for mode in MODES:
        _put(n, f"head_gptq_{mode}", _ratio(e, _label(mode, "hadamard head + gptq"), _label(mode, "gptq")))
    return n


def _gap(e):
    n = _conditions(e)
    nvfp4 = [r for r in e.rows if r.operands == "W4A4"]
    best = min(nvfp4, key=lambda r: r.kl)
    plain = e.row("dynamic", "per_group dynamic")
    n["best_kl"], n["plain_kl"], n["fp8_kl"] = best.kl, plain.kl, e.row(FP8).kl
    n["rows"] = len(nvfp4)
    _put(n, "best_to_fp8", _ratio(e, best.label, FP8))
    _put(n, "plain_to_fp8", _ratio(e, plain.label, FP8))
    _put(n, "best_to_plain", _ratio(e, best.label, plain.label))
    _put(n, "w4a16_to_fp8", _ratio(e, "w4a16", FP8))
    return n, best.label


def _gap_numbers(e):
    return _gap(e)[0]


_WHERE = ("On SmolLM2-135M-Instruct (every o_proj NVFP4 W4A4, 3 groups of 3 heads of {head_dim:.0f}; KJV, "
          "{tokens:.0f} held-out predictions in {windows:.0f} windows; 95 % intervals by a paired window bootstrap)")
_WHERE_PLAIN = _WHERE.replace(" of {head_dim:.0f}", "")


TRANSFORM_FINDINGS: list[Finding] = [
    Finding(
        "D08-rotations-on-decoders", "08_transforms",
        _WHERE + " a Hadamard rotation of each head (free at inference: it folds into the value projection) "
        "against none, KL ratio " + _ci("head_static") + " with static shared max scales and " + _ci("head_dynamic")
        + " with per-group dynamic ones; a Hadamard over each 16-element block " + _ci("h16_static") + " and "
        + _ci("h16_dynamic") + ". No rotation is resolved better; at 95 % each lowers KL by at most "
        f"{1 - ROTATION_FLOOR:.0%}, and the 16-element rotation is resolved worse with per-group dynamic scales. Why: it does what it is known for — the activations' kurtosis falls from "
        "{kurtosis_none:.1f} to {kurtosis_head:.1f} and the blocks' max/mean from {block_ratio_none:.2f} to "
        "{block_ratio_head:.2f} — but NVFP4's 16-element blocks with their own E4M3 scale already absorb the "
        "outliers (a block's largest element maps exactly to 6), so the activations' NVFP4 SQNR moves from "
        "{x_sqnr_none_db:.2f} to {x_sqnr_head_db:.2f} dB (per-group dynamic scales): flatter blocks are not "
        "better-quantized blocks. (On 8160 predictions per model and text, docs/transforms-full-H100.md, both "
        "rotations are resolved worse in most of the 9 cells, by 7–22 %; only on SmolLM2 / prose is the per-head "
        "one resolved 8 % better.)",
        _on_transform_evaluation(_rotations),
        lambda n: all(ROTATION_FLOOR < n[f"{r}_{m}_lo"] and n[f"{r}_{m}_hi"] >= 1 for m in MODES for r in ("head", "h16"))
        and n["h16_dynamic_lo"] > 1 and n["kurtosis_head"] < n["kurtosis_none"] and n["x_sqnr_head_db"] < n["x_sqnr_none_db"] + 0.25,
        figure="08_transform_kl",
    ),
    Finding(
        "D09-smoothing-on-decoders", "08_transforms",
        _WHERE_PLAIN + " SmoothQuant smoothing (α searched per layer on the calibration tokens, median "
        "{alpha_median:.1f}, range {alpha_min:.1f}–{alpha_max:.1f}; scales tied across the heads that share a KV "
        "head, so they fold into the value projection) against none: KL ratio " + _ci("smooth_static")
        + " with static shared max scales and " + _ci("smooth_dynamic") + " with per-group dynamic ones. No gain is "
        f"resolved: at 95 % smoothing lowers KL by at most {1 - SMOOTHING_FLOOR:.0%}, although it lowers the "
        "activations' kurtosis from {kurtosis_none:.1f} to {kurtosis_smooth:.1f} "
        "(their NVFP4 SQNR {x_sqnr_none_db:.2f} → {x_sqnr_smooth_db:.2f} dB): the range it moves into the weights "
        "is re-quantized there (llm-compressor measured SmoothQuant hurting NVFP4 on Qwen3-30B-A3B). This is "
        "SmolLM2's answer: on 8160 predictions per model and text (docs/transforms-full-H100.md) smoothing is "
        "resolved 13–17 % lower on Gemma-3-270M (every text, both scale recipes) and 5–8 % lower in 4 of 6 Qwen2.5 "
        "cells, with the activations' SQNR falling there too — the gain comes through the weights.",
        _on_transform_evaluation(_smoothing),
        lambda n: all(n[f"smooth_{m}_lo"] > SMOOTHING_FLOOR and n[f"smooth_{m}_hi"] >= 1 for m in MODES),
        figure="08_transform_kl",
    ),
    Finding(
        "D10-weight-recipes-on-decoders", "08_transforms",
        _WHERE_PLAIN + " weight-side recipes against round-to-nearest NVFP4 weights (KL ratio, static shared | "
        "per-group dynamic activation scales): GPTQ " + _ci("gptq_static") + " | " + _ci("gptq_dynamic")
        + "; four-over-six on the weights only " + _ci("four6_static") + " | " + _ci("four6_dynamic")
        + "; MSE search of the weights' global scale " + _ci("mse_static") + " | " + _ci("mse_dynamic")
        + "; 16×16 weight scales (NVIDIA's training recipe) " + _ci("tile_static") + " | " + _ci("tile_dynamic")
        + ". GPTQ is resolved lower with static scales (its upper bound < 1); 16×16 tiles are resolved higher in "
        "both — the inference cost of sharing scales between W and Wᵀ. A per-head rotation before GPTQ: "
        + _ci("head_gptq_static") + " | " + _ci("head_gptq_dynamic") + " against GPTQ alone. All of these change "
        "only the weight bytes: any NVFP4 kernel serves them.",
        _on_transform_evaluation(_weights),
        lambda n: n["gptq_static_hi"] < 1 and n["tile_static_lo"] > 1 and n["tile_dynamic_lo"] > 1,
        figure="08_transform_kl",
    ),
    Finding(
        "D11-transforms-vs-fp8-gap", "08_transforms",
        _WHERE_PLAIN + " the lowest-KL NVFP4 recipe among {rows:.0f} (global-scale recipes × transforms; "
        "{best_kl:.4f} nats) still moves the next-token distribution " + _ci("best_to_fp8") + "× as far as FP8 "
        "does ({fp8_kl:.4f}); plain NVFP4 with per-group dynamic scales " + _ci("plain_to_fp8") + "×, so the best "
        "transform keeps " + _ci("best_to_plain") + " of plain NVFP4's KL (chosen on these windows: the ratio "
        "flatters it). The weights alone re-quantized to NVFP4 (W4A16) cost " + _ci("w4a16_to_fp8") + "× FP8: "
        "no transform measured here brings NVFP4 W4A4 within a factor of 4 of FP8 on o_proj.",
        _on_transform_evaluation(_gap_numbers),
        lambda n: n["best_to_fp8_lo"] > 4 and n["best_to_plain_hi"] <= 1.0 + 1e-12,
        figure="08_transform_kl",
    ),
]

#: finding id → the function computing its numbers from one evaluation (the full-mode record
#: applies each to every model × text)
NUMBERS_OF = {finding.id: fn for finding, fn in zip(TRANSFORM_FINDINGS, (
    _rotations, _smoothing, _weights, _gap_numbers))}
