"""``nvfp4lab calibrate``: run every recipe and mode on a user's tensors, recommend one.

The activations are split in time order: the first 75 % of tokens calibrate, the last
25 % are held out for evaluation (at least ``MIN_TOKENS`` each). Without weights, a
random Gaussian ``W (G, K, 512)`` stands in (the SQNR of z then reflects the activations
only). Writes ``calibration.md``, ``calibration.json`` and ``calibration.png`` to the
output folder and prints the table and the recommendation.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nvfp4lab import evaluation, io
from nvfp4lab.validation import check_writable_folder

MIN_TOKENS = 16
HELD_OUT_FRACTION = 0.25


def split_held_out(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    held = int(round(x.shape[0] * HELD_OUT_FRACTION))
    if x.shape[0] - held < MIN_TOKENS or held < MIN_TOKENS:
        raise ValueError(
            f"too few tokens for a held-out split: {x.shape[0]} tokens; need at least "
            f"{int(MIN_TOKENS / HELD_OUT_FRACTION)} ({MIN_TOKENS} held out)"
        )
    return x[: x.shape[0] - held], x[x.shape[0] - held :]


def plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    from nvfp4lab.study.style import apply_style

    apply_style()
    rows = [r for r in results if r.mode != "-"]
    labels = [f"{r.recipe} | {r.mode}" for r in rows]
    fig_height = 0.32 * len(rows) + 1.2
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, fig_height))
    values = [r.worst_group_sqnr_db for r in rows]
    sns.barplot(x=values, y=labels, ax=ax, color="C0")
    ax.set_xlim(min(values) - 1.0, max(values) + 0.5)  # the differences between recipes are small
    baselines = ", ".join(f"{r.recipe} {r.worst_group_sqnr_db:.1f} dB" for r in results if r.mode == "-")
    ax.set_title(f"baselines: {baselines}", fontsize=8)
    ax.set_xlabel("worst-group SQNR of z on held-out tokens (dB)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(activations: str, groups: int, weights: str | None, out: str, activations_key=None, weights_key=None) -> int:
    out_dir = Path(out)
    check_writable_folder(out_dir)
    x = io.load_activations(activations, groups, activations_key)
    if weights is not None:
        w = io.load_weights(weights, groups, x.shape[-1], weights_key)
    else:
        w = torch.randn(groups, x.shape[-1], 512, generator=torch.Generator().manual_seed(0)) / x.shape[-1] ** 0.5
    calibration, held_out = split_held_out(x)
    results = evaluation.evaluate(calibration, held_out, w)
    choice, why = evaluation.recommend(results)
    table = evaluation.markdown_table(results)
    summary = f"Recommended: **{choice.recipe}** with **{choice.mode}** global activation scales — {why}."
    report = (f"# nvfp4lab calibrate\n\nactivations `{activations}` {tuple(x.shape)} (T, G, K), "
              f"weights `{weights or 'random Gaussian stand-in'}`; calibrated on {calibration.shape[0]} tokens, "
              f"evaluated on {held_out.shape[0]} held-out tokens.\n\n{table}\n\n{summary}\n")
    (out_dir / "calibration.md").write_text(report)
    (out_dir / "calibration.json").write_text(json.dumps(
        {"results": evaluation.as_rows(results), "recommendation": {"recipe": choice.recipe, "mode": choice.mode, "why": why}},
        indent=1))
    plot(results, out_dir / "calibration.png")
    print(table)
    print(summary)
    print(f"written: {out_dir / 'calibration.md'}, calibration.json, calibration.png")
    return 0
