"""The full-mode transform record: rotations, smoothing and weight recipes on three models ×
three texts (a GPU), kept as raw per-window sums like :mod:`nvfp4lab.study.decoder_record`.

``python -m nvfp4lab.study.transform_record run OUT.json [--gguf NAME=PATH ...] [--small]``
evaluates :data:`nvfp4lab.models.evaluate.FULL_TRANSFORMS` (``--small``: the same at 1024
held-out tokens, for a CPU) and writes ``{"meta": {...}, "evaluations": [...]}``.

``python -m nvfp4lab.study.transform_record render STEM`` writes ``STEM.md`` from ``STEM.json``:
the transform × model × text table (KL with its 95 % interval, the paired ratio to the same
global-scale recipe without a transform, the ratio to FP8), what each activation transform does
to the activations, each model's recommendation and deployment, and findings D08–D11
re-checked on every model × text (:data:`nvfp4lab.study.findings_transforms.NUMBERS_OF`).
"""

from __future__ import annotations

import statistics
import sys

from nvfp4lab.study.decoder_record import _cell, command_line, evaluations, findings_matrix

FP8 = "fp8 (1x128 act, 128x128 wt)"


def configurations(small: bool) -> tuple[dict, ...]:
    """:data:`~nvfp4lab.models.evaluate.FULL_TRANSFORMS`, or the CPU variant (1024 tokens in 16 windows of 64)."""
    from nvfp4lab.models.evaluate import FULL_TRANSFORMS

    if not small:
        return FULL_TRANSFORMS
    return tuple({**c, "tokens": 1024, "calibration_tokens": 512, "seq_len": 64, "batch_sequences": 4}
                 for c in FULL_TRANSFORMS)


def _plain_label(row) -> str:
    return f"{row.recipe} | {row.mode}"


def transform_table(evals) -> list[dict]:
    """One record per (model / text, NVFP4 row): KL and its interval, the paired ratio to the
    same scales without a transform and to FP8 (intervals as ``[low, high]``)."""
    from nvfp4lab.models.intervals import paired_ratio, row_intervals

    records = []
    for e in evals:
        intervals = row_intervals(e)
        for r in e.rows:
            if r.operands != "W4A4":
                continue
            ci = intervals[r.label]
            to_none = paired_ratio(e, r.label, _plain_label(r)) if r.transform != "none" else None
            records.append({"model / text": f"{e.model} / {e.text}", "scales": _plain_label(r),
                            "transform": r.transform, "kl": ci.kl, "to_none": to_none,
                            "to_fp8": ci.ratio_to_reference})
    return records


def _ratio_cell(interval) -> str:
    if interval is None:
        return "–"
    mark = " **R**" if interval.excludes(1.0) else ""
    return f"{interval.value:.3f} [{interval.low:.3f}, {interval.high:.3f}]{mark}"


def render(record: dict) -> str:
    from nvfp4lab.models.recommendation import deployment, recommend
    from nvfp4lab.study.findings import by_id
    from nvfp4lab.study.findings_transforms import NUMBERS_OF

    meta = record["meta"]
    evals = evaluations(record)
    first = evals[0]
    panels = [f"{e.model} / {e.text}" for e in evals]
    table = transform_table(evals)
    lines = [f"# Transforms beyond the global scale, full mode: {len(evals)} model × text evaluations, {meta['card']}",
             "", f"Computed on the lent {meta['card']} (torch {meta['torch']}) on {meta['date']} from commit "
             f"`{meta['commit'][:12]}` by `python -m nvfp4lab.study.transform_record run` in {meta['wall_s']:.0f} s; "
             "`python -m nvfp4lab.study.transform_record render` writes this file from the JSON beside it "
             "(tests/findings/test_transform_record.py re-checks it).", "",
             f"Conditions: every layer's o_proj replaced at once by NVFP4 W4A4, heads grouped like wo_a; "
             f"{first.tokens} held-out predictions per model and text in {len(first.window_positions)} windows of "
             f"{first.seq_len} tokens; transforms and static scales fitted on {first.calibration_tokens} calibration "
             "tokens of the text's other part. Each transform runs with static shared max scales and with per-group "
             "dynamic scales. Ratios are paired (same windows) with 95 % percentile-bootstrap intervals over the "
             "windows; **R** marks a ratio whose interval excludes 1. A transform is compared with the same "
             "global-scale recipe without it (÷ none).", ""]
    matrix = findings_matrix(evals, NUMBERS_OF)
    lines += ["## Findings D08–D11 re-checked on every model × text", "",
              "| finding | " + " | ".join(panels) + " |", "|---|" + "---|" * len(panels)]
    for finding_id, cells in matrix.items():
        lines.append(f"| {finding_id} | " + " | ".join("holds" if cells[p]["holds"] else "**does not hold**"
                                                      for p in panels) + " |")
    for finding_id, cells in matrix.items():
        lines += ["", f"**{finding_id}** ({panels[0]}): {by_id(finding_id).statement(cells[panels[0]]['numbers'])}"]
    for scales in ("max | shared static", "dynamic | per_group dynamic"):
        lines += ["", f"## KL ratio to no transform, {scales} scales", "",
                  "| transform | " + " | ".join(panels) + " |", "|---|" + "---|" * len(panels)]
        transforms = list(dict.fromkeys(t["transform"] for t in table if t["transform"] != "none"))
        for transform in transforms:
            cells = {t["model / text"]: t["to_none"] for t in table
                     if t["scales"] == scales and t["transform"] == transform}
            lines.append(f"| {transform} | " + " | ".join(_ratio_cell(cells.get(p)) for p in panels) + " |")
    lines += ["", "## What the activation transforms do to the activations (calibration tokens, mean over layers)", "",
              "kurtosis (3 for a Gaussian) · mean block max/mean |x| · zero-code fraction · NVFP4 SQNR of x (dB), "
              "per-group dynamic scales.", "",
              "| model / text | transform | kurtosis | block max/mean | zero codes | SQNR of x (dB) |",
              "|---|---|---|---|---|---|"]
    for e in evals:
        for activation, layers in e.activation_stats.items():
            mean = {k: statistics.mean(layer[k] for layer in layers) for k in layers[0]}
            lines.append(f"| {e.model} / {e.text} | {activation} | {mean['kurtosis']:.2f} | "
                         f"{mean['block_max_over_mean']:.3f} | {mean['zero_code_fraction']:.3f} | "
                         f"{mean['sqnr_db']:.2f} |")
        if e.smoothing_alpha:
            alphas = sorted(e.smoothing_alpha)
            lines.append(f"| {e.model} / {e.text} | smoothquant α per layer | median {alphas[len(alphas) // 2]:.1f}, "
                         f"range {alphas[0]:.1f}–{alphas[-1]:.1f} | | | |")
    lines += ["", "## Recommendations (`calibrate-model`'s rule, transforms included)", "",
              "| model / text | recommended | to deploy | equivalent to the best | best | best ÷ FP8 |",
              "|---|---|---|---|---|---|"]
    for e in evals:
        rec = recommend(e)
        best = next(t for t in table if t["model / text"] == f"{e.model} / {e.text}"
                    and f"{t['scales']}{'' if t['transform'] == 'none' else ' | ' + t['transform']}" == rec.best.label)
        lines.append(f"| {e.model} / {e.text} | {_cell(rec.row.label)} | {deployment(rec.row, e.head_dim) or '–'} | "
                     f"{len(rec.equivalent)} of {sum(r.operands == 'W4A4' for r in e.rows)} | {_cell(rec.best.label)} "
                     f"| {_ratio_cell(best['to_fp8'])} |")
    lines += ["", "## Every row: KL (nats) with its 95 % interval, ratio to no transform and to FP8", "",
              "| model / text | scales | transform | KL | ÷ none | ÷ FP8 |", "|---|---|---|---|---|---|"]
    for t in table:
        kl = t["kl"]
        lines.append(f"| {t['model / text']} | {_cell(t['scales'])} | {t['transform']} | {kl.value:.4f} "
                     f"[{kl.low:.4f}, {kl.high:.4f}] | {_ratio_cell(t['to_none'])} | {_ratio_cell(t['to_fp8'])} |")
    lines += ["", "FP8 KL per model / text: " + "; ".join(f"{e.model} / {e.text} {e.row(FP8).kl:.4f}" for e in evals)
              + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return command_line(argv, "python -m nvfp4lab.study.transform_record", __doc__, configurations, render,
                        "docs/transforms-full-H100", "1024 held-out tokens per model and text (a CPU)")


if __name__ == "__main__":
    sys.exit(main())
