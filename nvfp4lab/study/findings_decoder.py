"""Findings measured on real decoder language models; see notebook 07.

Every number comes from :func:`nvfp4lab.models.evaluate.study_evaluations`: fast mode is
SmolLM2-135M (Llama, 30 layers, 9 heads in 3 groups of 3, K = 192) on 128 held-out tokens of
the King James Bible, static scales calibrated on 256 other tokens, MSE-search recipes left
out (their calibration is the slowest part); full mode the same model on 8192 held-out tokens
with every recipe (Gemma-3-270M is evaluated beside it in notebook 07). Every layer's
``o_proj`` is replaced at once; KL is mean KL(bf16 ‖ recipe) of the next-token distribution in
nats. The GGUF weights are already 4-bit (Q4_1); the activations are real.
"""

from __future__ import annotations

import statistics

import torch

from nvfp4lab.study.finding import Finding

NVFP4_MAX6 = ("dynamic", "max", "headroom x4", "percentile 99.99", "percentile 99.9 of blocks",
              "mse activations", "mse output")


def _evaluation(fast):
    from nvfp4lab.models.evaluate import study_evaluations

    return study_evaluations(fast)[0]


def _ranks(values: list[float]) -> torch.Tensor:
    """Ranks 1..n, ties sharing their average rank."""
    x = torch.tensor(values, dtype=torch.float64)
    order = x.argsort()
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=torch.float64)
    for value in x.unique():  # a handful of values: average the ranks of ties
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (Pearson correlation of the ranks, ties averaged)."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def _sharing(fast, data_dir):
    e = _evaluation(fast)
    return {
        "shared_kl": e.row("max", "shared static").kl, "per_group_kl": e.row("max", "per_group static").kl,
        "shared_dynamic_kl": e.row("dynamic", "shared dynamic").kl,
        "per_group_dynamic_kl": e.row("dynamic", "per_group dynamic").kl,
        "max_spread_decades": max(e.group_spread_decades), "median_spread_decades": statistics.median(e.group_spread_decades),
    }


def _static_dynamic(fast, data_dir):
    e = _evaluation(fast)
    static = [r for r in e.rows if r.mode.endswith("static") and r.recipe in NVFP4_MAX6]
    best = min(static, key=lambda r: r.kl)
    return {"dynamic_kl": e.row("dynamic", "per_group dynamic").kl, "max_static_kl": e.row("max", "per_group static").kl,
            "best_static_kl": best.kl, "dynamic_ppl": e.row("dynamic", "per_group dynamic").perplexity,
            "max_static_ppl": e.row("max", "per_group static").perplexity}


def _percentile_headroom(fast, data_dir):
    e = _evaluation(fast)
    return {"max_kl": e.row("max", "per_group static").kl, "headroom_kl": e.row("headroom x4", "per_group static").kl,
            "percentile_kl": e.row("percentile 99.99", "per_group static").kl,
            "percentile_blocks_kl": e.row("percentile 99.9 of blocks", "per_group static").kl,
            "percentile_ppl": e.row("percentile 99.99", "per_group static").perplexity,
            "max_ppl": e.row("max", "per_group static").perplexity}


def _four_over_six(fast, data_dir):
    e = _evaluation(fast)
    plain, four = e.row("dynamic", "per_group dynamic"), e.row("dynamic + four-over-six", "per_group dynamic")
    return {"max6_kl": plain.kl, "four_over_six_kl": four.kl, "max6_ppl": plain.perplexity,
            "four_over_six_ppl": four.perplexity, "max6_sqnr_db": plain.mean_layer_sqnr_db,
            "four_over_six_sqnr_db": four.mean_layer_sqnr_db,
            "static_max6_kl": e.row("max", "per_group static").kl,
            "static_four_over_six_kl": e.row("max + four-over-six", "per_group static").kl}


def _sqnr_ranks(fast, data_dir):
    e = _evaluation(fast)
    rows = [r for r in e.rows if r.mode != "-"]
    sqnr = [r.mean_layer_sqnr_db for r in rows]
    return {"rho_kl": spearman(sqnr, [-r.kl for r in rows]), "rho_ppl": spearman(sqnr, [-r.perplexity for r in rows]),
            "rho_kl_ppl": spearman([r.kl for r in rows], [r.perplexity for r in rows]), "recipes": len(rows),
            "sqnr_spread_db": max(sqnr) - min(sqnr)}


def _sensitive_layers(fast, data_dir):
    e = _evaluation(fast)
    kl = e.sensitivity_kl
    top = max(range(len(kl)), key=kl.__getitem__)
    others = [i for i in range(len(kl)) if i != top]
    return {
        "layer": top, "layer_kl": kl[top], "median_kl": statistics.median(kl),
        "top_share": kl[top] / sum(kl),
        "layer_outlier_ratio": e.outlier_token_ratio[top],
        "median_outlier_ratio": statistics.median(e.outlier_token_ratio[i] for i in others),
        "layer_outliers_at_first": e.outliers_at_first_position[top],
        "mean_outliers_at_first": statistics.mean(e.outliers_at_first_position),
        "layer_first_attention": e.first_token_attention[top],
        "median_first_attention": statistics.median(e.first_token_attention),
    }


def _formats(fast, data_dir):
    e = _evaluation(fast)
    nvfp4 = e.row("dynamic", "per_group dynamic")
    return {"bf16_ppl": e.row("bf16").perplexity, "fp8_kl": e.row("fp8 (1x128 act, 128x128 wt)").kl,
            "w4a16_kl": e.row("w4a16").kl, "nvfp4_kl": nvfp4.kl, "nvfp4_ppl": nvfp4.perplexity,
            "nvfp4_top1": nvfp4.top1_agreement, "fp8_top1": e.row("fp8 (1x128 act, 128x128 wt)").top1_agreement}


DECODER_FINDINGS: list[Finding] = []
