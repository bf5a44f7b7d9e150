"""``nvfp4lab calibrate``: run every recipe and mode on a user's tensors, recommend one.

The activations are split in time order: the first 75 % of tokens calibrate, the last
25 % are held out for evaluation (at least ``MIN_TOKENS`` each). Without weights, a
random Gaussian ``W (G, K, 512)`` stands in (the SQNR of z then reflects the activations
only), and a warning on stderr says so. Every input check runs before the evaluation. The evaluation streams over tokens
(:func:`nvfp4lab.evaluation.evaluate`) on the GPU when there is one; the MSE searches
use a sample of at most ``MSE_SAMPLE_ELEMENTS`` activation elements. On success it
writes ``calibration.md``, ``calibration.json`` (strict JSON: an infinite SQNR, i.e. no
error at all, is ``null``), ``calibration.png`` and ``calibration.svg`` to the output
folder and prints the table and the recommendation; a failed run leaves no output. An
output folder that already holds a report (any ``calibration.*`` file written here) is
refused unless ``force`` is set.
"""

from __future__ import annotations

import io as bytes_io
import json
import math
import sys
from pathlib import Path

import torch

from nvfp4lab import evaluation, io, streaming
from nvfp4lab import validation as v
from nvfp4lab.output_folder import OutputFolder

MIN_TOKENS = 16
HELD_OUT_FRACTION = 0.25
#: The MSE calibrators' sample: at most this many elements (2^22: 16 MiB as float32).
MSE_SAMPLE_ELEMENTS = 1 << 22
STAND_IN_WIDTH = 512
#: The files a run writes into its output folder.
REPORT_FILES = ("calibration.md", "calibration.json", "calibration.png", "calibration.svg")


def stand_in_weights(groups: int, k: int) -> torch.Tensor:
    """The weights used when none are given: ``(G, K, STAND_IN_WIDTH)`` float32 Gaussian / √K,
    seeded (the same every run)."""
    return torch.randn(groups, k, STAND_IN_WIDTH, generator=torch.Generator().manual_seed(0)) / k**0.5


def check_no_previous_report(out: str | Path, force: bool) -> None:
    """Refuse (``ValueError``) an output folder that already holds one of
    :data:`REPORT_FILES`, unless ``force``: a run never overwrites a report silently."""
    existing = [name for name in REPORT_FILES if (Path(out) / name).exists()]
    if existing and not force:
        raise ValueError(f"the output folder {out} already holds {', '.join(existing)}; "
                         "pass --force to overwrite them, or choose another --out")


def stand_in_warning(groups: int, k: int) -> str:
    """The console line said when no weights are given."""
    return (f"nvfp4lab calibrate: warning: no --weights given: z is computed with random Gaussian stand-in "
            f"weights (G={groups}, K={k}, N={STAND_IN_WIDTH}), so the SQNR of z reflects the activations only")


def split_held_out(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    held = int(round(x.shape[0] * HELD_OUT_FRACTION))
    if x.shape[0] - held < MIN_TOKENS or held < MIN_TOKENS:
        raise ValueError(
            f"too few tokens for a held-out split: {x.shape[0]} tokens; need at least "
            f"{int(MIN_TOKENS / HELD_OUT_FRACTION)} ({MIN_TOKENS} held out)"
        )
    return x[: x.shape[0] - held], x[x.shape[0] - held :]


def pick_device(name: str) -> torch.device:
    """``"auto"``: CUDA when torch sees a GPU, else the CPU; otherwise the named device
    (a clear error when it is not there)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return v.normalize_device(name)


def _finite_or_none(value: float):
    return value if math.isfinite(value) else None


def report_json(results, choice, why: str) -> str:
    rows = [{key: _finite_or_none(value) if isinstance(value, float) else value for key, value in row.items()}
            for row in evaluation.as_rows(results)]
    return json.dumps({"rule": evaluation.RULE, "results": rows,
                       "recommendation": {"recipe": choice.recipe, "mode": choice.mode, "why": why}},
                      indent=1, allow_nan=False)


def plot(results, choice) -> dict[str, bytes]:
    """The worst-group SQNR of every NVFP4 W4A4 row as horizontal bars from 0 dB, coloured
    by clipping, the recommended row marked, the baselines as dashed lines. Returns
    ``{"png": ..., "svg": ...}`` (nothing is written here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from nvfp4lab.style import apply_style

    apply_style()
    rows = [r for r in results if r.mode != "-"]
    finite = [r.worst_group_sqnr_db for r in results if math.isfinite(r.worst_group_sqnr_db)]
    labels = [f"{r.recipe} | {r.mode}" + ("  ◀ recommended" if r is choice else "") for r in rows]
    clipping = ["clips" if r.clipped_fraction > 0 else "clips nothing" for r in rows]
    palette = {"clips nothing": sns.color_palette("colorblind")[0], "clips": sns.color_palette("colorblind")[3]}

    height = 0.3 * len(rows) + 2.0
    fig, ax = plt.subplots(figsize=(11, height))
    sns.barplot(x=[min(r.worst_group_sqnr_db, 1e3) for r in rows], y=labels, hue=clipping, palette=palette,
                dodge=False, ax=ax, legend=False)
    index = rows.index(choice)
    for patch in ax.patches:  # the recommended bar: outlined and hatched
        if patch.get_width() > 0 and abs(patch.get_y() + patch.get_height() / 2 - index) < 1e-6:
            patch.set(edgecolor="black", linewidth=1.5, hatch="//")
    for i, r in enumerate(rows):
        end = r.worst_group_sqnr_db if math.isfinite(r.worst_group_sqnr_db) else 0.0
        ax.text(end - 0.3, i, f"{r.worst_group_sqnr_db:.2f} dB", ha="right", va="center", fontsize=7, color="white",
                fontweight="bold", bbox=dict(boxstyle="square,pad=0.1", facecolor=palette[clipping[i]], linewidth=0))
        if r.clipped_fraction > 0:
            ax.text(end + 0.3, i, f"clips {r.clipped_fraction:.1e} of elements", va="center", fontsize=7, zorder=5,
                    bbox=dict(boxstyle="square,pad=0.2", facecolor="white", edgecolor="none"))
    ax.get_yticklabels()[index].set_fontweight("bold")
    handles = [matplotlib.patches.Patch(color=palette[k], label=f"NVFP4 W4A4 that {k} on held-out tokens")
               for k in ("clips nothing", "clips") if k in clipping]
    handles.append(matplotlib.patches.Patch(facecolor="white", edgecolor="black", hatch="//", label="recommended"))
    top = max([r.worst_group_sqnr_db for r in rows if math.isfinite(r.worst_group_sqnr_db)] or [1.0])
    shown = [r for r in results if r.mode == "-" and math.isfinite(r.worst_group_sqnr_db)
             and r.worst_group_sqnr_db < 2 * top]
    far = [f"{r.recipe} {r.worst_group_sqnr_db:.1f} dB" for r in results if r.mode == "-" and r not in shown]
    for r, style in zip(shown, ["--", ":", "-."]):
        handles.append(ax.axvline(r.worst_group_sqnr_db, color="0.25", linestyle=style, linewidth=1.2,
                                  label=f"baseline {r.recipe}: {r.worst_group_sqnr_db:.1f} dB"))
    ax.set_xlim(0, max([top] + [r.worst_group_sqnr_db for r in shown]) * 1.3)
    ax.set_xlabel("worst-group SQNR of z on held-out tokens (dB; the axis starts at 0)")
    ax.set_ylabel("calibration recipe | global activation scale mode")
    ax.set_title("nvfp4lab calibrate: worst-group SQNR of each NVFP4 W4A4 recipe"
                 + (f"\n(off the axis: {', '.join(far)})" if far else ""))
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1))
    images = {}
    for kind in ("png", "svg"):
        buffer = bytes_io.BytesIO()
        fig.savefig(buffer, format=kind, dpi=120, bbox_inches="tight")
        images[kind] = buffer.getvalue()
    plt.close(fig)
    return images


def run(activations: str, groups: int, weights: str | None, out: str, activations_key=None, weights_key=None,
        device: str = "auto", progress: bool = True, force: bool = False) -> int:
    """The command (see the module docstring); bad input raises ``ValueError``/``TypeError``
    before any long work, and nothing is left in ``out`` unless the run succeeds. ``force``
    overwrites a previous report in ``out``."""
    check_no_previous_report(out, force)
    with OutputFolder(out) as folder:
        target = pick_device(device)
        x = io.load_activations(activations, groups, activations_key)
        groups, k = x.shape[1], x.shape[2]
        if weights is not None:
            w = io.load_weights(weights, groups, k, weights_key)
        else:
            w = stand_in_weights(groups, k)
        calibration, held_out = split_held_out(x)
        silent = (streaming.group_amax(held_out) == 0).nonzero().flatten().tolist()
        if silent:
            raise ValueError(f"group(s) {silent} are all zero in the held-out tokens (the last "
                             f"{held_out.shape[0]}): their SQNR is undefined; drop them or pass other tokens")
        if weights is None:
            print(stand_in_warning(groups, k), file=sys.stderr)
        sample_tokens = max(MIN_TOKENS, min(2048, MSE_SAMPLE_ELEMENTS // (groups * k)))
        results = evaluation.evaluate(calibration, held_out, w, device=target, progress=progress,
                                      mse_sample_tokens=sample_tokens)
        choice, why = evaluation.recommend(results)
        table = evaluation.markdown_table(results, chosen=choice)
        headline = f"Recommended: **{choice.recipe}** with **{choice.mode}** global activation scales."
        report = (
            f"# nvfp4lab calibrate\n\n"
            f"activations `{activations}` {tuple(x.shape)} (T, G, K), weights "
            f"`{weights or f'random Gaussian stand-in (G, K, {STAND_IN_WIDTH})'}`; calibrated on "
            f"{calibration.shape[0]} tokens (MSE searches on a sample of {min(sample_tokens, calibration.shape[0])}), "
            f"evaluated on the {held_out.shape[0]} held-out tokens that follow; device {target}.\n\n"
            f"{headline}\n\n{why}.\n\n{table}\n\n"
            "SQNR of z = 10·log10(Σ z² / Σ (z − ẑ)²) against the unquantized layer (float64); "
            "worst group = the lowest per-group SQNR; clipped = fraction of held-out activation "
            "elements whose block scale overflowed E4M3 (the static global scale was too small).\n"
        )
        outputs = {"calibration.md": report, "calibration.json": report_json(results, choice, why)}
        outputs.update({f"calibration.{kind}": data for kind, data in plot(results, choice).items()})
        for name, data in outputs.items():
            folder.write(name, data)
    print(table)
    print(headline.replace("**", ""))
    print(f"{why}.")
    print(f"written: {folder.path / 'calibration.md'}, calibration.json, calibration.png, calibration.svg")
    return 0
