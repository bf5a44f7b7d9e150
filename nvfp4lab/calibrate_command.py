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

With ``transforms`` (``--transforms``) the report also holds, per available transform of
:data:`nvfp4lab.transforms.recipes.STUDY_TRANSFORMS`, a ``max | shared static`` and a
``dynamic | per_group dynamic`` row (:func:`nvfp4lab.calibrate_transforms.evaluate_transforms`),
a ``transform`` column (field in the JSON), and the recommendation weighs deployment cost
(:func:`nvfp4lab.calibrate_transforms.recommend`). The head dimension D comes from
``(T, H, D)`` activations (H ≠ G) or ``head_dim`` (``--head-dim``, needed for ``(T, G, K)``);
without either the rotations that need it are skipped, with a note on stderr and in the report.
"""

from __future__ import annotations

import io as bytes_io
import json
import math
import sys
from pathlib import Path

import torch

from nvfp4lab import calibrate_transforms, evaluation, io, streaming
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


def stored_shape(path: str | Path, key: str | None) -> tuple[int, ...]:
    """The shape of the activations tensor as stored (read from the safetensors header; call
    it after :func:`nvfp4lab.io.load_activations` has checked the file and the key)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return tuple(handle.get_slice(key if key is not None else next(iter(handle.keys()))).get_shape())


def check_head_dim_option(head_dim, transforms: bool) -> None:
    """Refuse (``ValueError``) a ``--head-dim`` that is not a positive integer or comes
    without ``--transforms`` (it is read by nothing else)."""
    if head_dim is None:
        return
    if not transforms:
        raise ValueError(f"--head-dim {head_dim} is only used by --transforms; add --transforms or drop --head-dim")
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim <= 0:
        raise ValueError(f"--head-dim must be a positive integer; got {head_dim}")


def resolve_head_dim(shape: tuple[int, ...], groups: int, head_dim: int | None) -> int | None:
    """The head dimension D of activations stored with ``shape``: ``(T, H, D)`` with H ≠ G
    gives D (a ``head_dim`` that differs is refused); ``(T, G, K)`` gives ``head_dim``, which
    must divide K, or ``None`` when not given."""
    if shape[1] != groups:
        if head_dim is not None and head_dim != shape[2]:
            raise ValueError(f"--head-dim {head_dim} contradicts the activations' (T, H, D) shape {shape}: "
                             f"D = {shape[2]}")
        return shape[2]
    if head_dim is not None and shape[2] % head_dim:
        raise ValueError(f"--head-dim {head_dim} does not divide K = {shape[2]} of the (T, G, K) activations {shape}")
    return head_dim


def report_json(results, choice, why: str, transforms: dict | None = None) -> str:
    """The report as strict JSON. ``transforms`` (``--transforms``: ``{"head_dim": …,
    "notes": […], …}``) adds a ``transform`` field to every row and the recommendation, the
    cost rule, and that dict as ``"transforms"``."""
    as_rows = calibrate_transforms.as_rows if transforms is not None else evaluation.as_rows
    rows = [{key: _finite_or_none(value) if isinstance(value, float) else value for key, value in row.items()}
            for row in as_rows(results)]
    recommendation = {"recipe": choice.recipe, "mode": choice.mode, "why": why}
    data = {"rule": evaluation.RULE, "results": rows, "recommendation": recommendation}
    if transforms is not None:
        recommendation["transform"] = calibrate_transforms.transform_label(choice)
        data["rule"] = calibrate_transforms.RULE
        data["transforms"] = transforms
    return json.dumps(data, indent=1, allow_nan=False)


def plot_label(row) -> str:
    """``recipe | mode``, prefixed by ``transform ·`` for a transform row."""
    cost = calibrate_transforms.row_cost(row)
    return (f"{calibrate_transforms.transform_label(row)} · " if cost else "") + f"{row.recipe} | {row.mode}"


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
    labels = [plot_label(r) + ("  ◀ recommended" if r is choice else "") for r in rows]
    clipping = ["clips" if r.clipped_fraction > 0 else "clips nothing" for r in rows]
    palette = {"clips nothing": sns.color_palette("colorblind")[0], "clips": sns.color_palette("colorblind")[3]}

    height = 0.3 * len(rows) + 2.0
    fig, ax = plt.subplots(figsize=(11, height))
    sns.barplot(x=[min(r.worst_group_sqnr_db, 1e3) for r in rows], y=labels, hue=clipping, palette=palette,
                dodge=False, ax=ax, legend=False)
    index = next(i for i, r in enumerate(rows) if r is choice)
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
    ax.set_ylabel(("[transform ·] " if any(calibrate_transforms.row_cost(r) for r in rows) else "")
                  + "calibration recipe | global activation scale mode")
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
        device: str = "auto", progress: bool = True, force: bool = False, transforms: bool = False,
        head_dim: int | None = None) -> int:
    """The command (see the module docstring); bad input raises ``ValueError``/``TypeError``
    before any long work, and nothing is left in ``out`` unless the run succeeds. ``force``
    overwrites a previous report in ``out``; ``transforms`` adds the transform rows, with
    ``head_dim`` the head dimension of ``(T, G, K)`` activations."""
    check_head_dim_option(head_dim, transforms)
    check_no_previous_report(out, force)
    with OutputFolder(out) as folder:
        target = pick_device(device)
        x = io.load_activations(activations, groups, activations_key)
        if transforms:
            head_dim = resolve_head_dim(stored_shape(activations, activations_key), groups, head_dim)
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
        usable, notes = calibrate_transforms.available_transforms(head_dim, k) if transforms else ([], [])
        fit_tokens = calibrate_transforms.fit_sample_tokens(calibration.shape[0], groups * k)
        notes += calibrate_transforms.fit_notes(fit_tokens, k, usable)
        for note in notes:
            print(f"nvfp4lab calibrate: note: {note}", file=sys.stderr)
        sample_tokens = max(MIN_TOKENS, min(2048, MSE_SAMPLE_ELEMENTS // (groups * k)))
        results = evaluation.evaluate(calibration, held_out, w, device=target, progress=progress,
                                      mse_sample_tokens=sample_tokens)
        transform_info = None
        if transforms:
            results = results + calibrate_transforms.evaluate_transforms(
                calibration, held_out, w, head_dim, device=target, transforms=usable, progress=progress)
            choice, why = calibrate_transforms.recommend(results)
            table = calibrate_transforms.markdown_table(results, chosen=choice)
            transform_info = {"head_dim": head_dim, "evaluated": [t.label for t in usable], "notes": notes,
                              "fit_sample_tokens": fit_tokens, "margin_db": calibrate_transforms.COSTLIER_MARGIN_DB}
        else:
            choice, why = evaluation.recommend(results)
            table = evaluation.markdown_table(results, chosen=choice)
        headline = f"Recommended: **{choice.recipe}** with **{choice.mode}** global activation scales"
        if calibrate_transforms.row_cost(choice):
            headline += f", after the transform **{calibrate_transforms.transform_label(choice)}**"
        headline += "."
        transform_text = ""
        if transforms:
            d = f"head dimension D = {head_dim}" if head_dim is not None else "head dimension unknown"
            transform_text = (
                f"Transforms ({d}): {', '.join(t.label for t in usable) or 'none available'}, each with `max` "
                "`shared static` scales (calibrated on the transformed calibration activations) and `dynamic` "
                "`per_group dynamic` scales (the transformed held-out amax); SmoothQuant's α search and GPTQ's "
                f"Hessian use {fit_tokens} evenly spaced calibration tokens."
                + "".join(f"\n\nNote: {note}." for note in notes) + "\n\n")
        report = (
            f"# nvfp4lab calibrate\n\n"
            f"activations `{activations}` {tuple(x.shape)} (T, G, K), weights "
            f"`{weights or f'random Gaussian stand-in (G, K, {STAND_IN_WIDTH})'}`; calibrated on "
            f"{calibration.shape[0]} tokens (MSE searches on a sample of {min(sample_tokens, calibration.shape[0])}), "
            f"evaluated on the {held_out.shape[0]} held-out tokens that follow; device {target}.\n\n"
            f"{transform_text}{headline}\n\n{why}.\n\n{table}\n\n"
            "SQNR of z = 10·log10(Σ z² / Σ (z − ẑ)²) against the unquantized layer (float64); "
            "worst group = the lowest per-group SQNR; clipped = fraction of held-out activation "
            "elements whose block scale overflowed E4M3 (the static global scale was too small).\n"
        )
        outputs = {"calibration.md": report, "calibration.json": report_json(results, choice, why, transform_info)}
        outputs.update({f"calibration.{kind}": data for kind, data in plot(results, choice).items()})
        for name, data in outputs.items():
            folder.write(name, data)
    print(table)
    print(headline.replace("**", ""))
    print(f"{why}.")
    print(f"written: {folder.path / 'calibration.md'}, calibration.json, calibration.png, calibration.svg")
    return 0
