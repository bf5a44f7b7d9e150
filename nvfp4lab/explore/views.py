"""One seaborn figure of an explorer :class:`~nvfp4lab.explore.compute.View`.

Six panels: per-group SQNR of the activations and of ``z`` (bars; the bf16 and FP8
baselines as lines), the global scale's headroom per group in octaves, the clipped
fraction per group, the distribution of the relative element error, and the histogram
of block-scale bytes with the zero and subnormal shares. The title is the one-line
summary (with the transform, its α or head dimension, and the activation statistics of
x' against x). With an activation transform every activation panel is of the transformed
x' = x·A (titles and axis labels say so), the SQNR of z is against the untransformed x·W,
and the bf16 / FP8 lines are the plain layer's. The SQNR and headroom bars take the
colour of the view's scale mode (:func:`nvfp4lab.style.scale_mode_colour`), as every
figure of nvfp4lab does.
"""

from __future__ import annotations

import io
import textwrap

import pandas as pd
import torch

from nvfp4lab.explore.compute import View, headline, notes, percent_text
from nvfp4lab.style import apply_style, scale_mode_colour

BASELINE_STYLE = {"bf16": dict(color="0.35", linestyle="--", marker="o"),
                  "fp8": dict(color="C3", linestyle="-", marker="s")}


def _scale_class(byte: int) -> str:
    if byte == 0:
        return "zero (0x00)"
    if byte < 8:
        return "subnormal (0x01–0x07)"
    if byte == 0x7E:
        return "saturated (0x7E = 448)"
    return "normal"


SCALE_CLASSES = ("zero (0x00)", "subnormal (0x01–0x07)", "normal", "saturated (0x7E = 448)")
SCALE_COLOURS = ("0.15", "C1", "C0", "C4")


def _legend_below(ax, ncol: int = 3, title: str | None = None) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, frameon=False,
                  title=title)


def _group_labels(groups: int) -> list[str]:
    return [str(g) for g in range(groups)]


def _mode(view: View) -> str:
    """The view's global-scale mode as ``ScaleMode.name`` writes it (``"per_group static"``)."""
    return f"{view.controls.sharing} {view.controls.scale_source}"


def _transformed(view: View) -> bool:
    return view.controls.activation_transform != "none"


def _sqnr_panel(ax, values: torch.Tensor, baselines: dict[str, torch.Tensor], what: str, mode: str,
                ylabel: str = "SQNR (dB)") -> None:
    labels = _group_labels(values.shape[0])
    finite = torch.isfinite(values)
    ax.bar(labels, torch.where(finite, values, torch.zeros_like(values)).tolist(), color=scale_mode_colour(mode),
           label=f"NVFP4, {mode} scales")
    for g in torch.nonzero(~finite).flatten().tolist():  # inf: exact; NaN: an all-zero group
        ax.text(g, 0, "exact" if values[g] > 0 else "no signal", ha="center", va="bottom", rotation=90)
    for name, line in baselines.items():
        finite = torch.where(torch.isfinite(line), line, torch.full_like(line, float("nan")))
        label = name if bool(torch.isfinite(line).all()) else f"{name} (∞ dB where missing)"
        ax.plot(labels, finite.tolist(), label=label, **BASELINE_STYLE.get(name, {}))
    ax.set(xlabel="group", ylabel=ylabel, title=f"SQNR of {what} per group")
    _legend_below(ax, ncol=2)


def _headroom_panel(ax, view: View) -> None:
    labels = _group_labels(view.groups)
    headroom = view.headroom_octaves
    ax.bar(labels, headroom.tolist(), color=scale_mode_colour(_mode(view)))
    low, high = min(float(headroom.min()), 0.0), max(float(headroom.max()), 0.0)
    pad = 0.1 * (high - low) + 0.2  # keep the 0 line clear of the frame
    ax.set_ylim(low - pad, high + pad)
    ax.axhline(0.0, color="C3", linewidth=1.2, label="below 0: the group's largest blocks clip")
    x = "x′" if _transformed(view) else "x"
    ax.set(xlabel="group", ylabel=f"log2(gs · 2688 / amax of the group's {x})", title="global-scale headroom (octaves)")
    _legend_below(ax, ncol=1)


def _clipped_panel(ax, view: View) -> None:
    labels = _group_labels(view.groups)
    percent = (view.clipped_fraction * 100).tolist()
    ax.bar(labels, percent, color="C3")
    if max(percent) == 0:
        ax.set_ylim(0, 1)
        ax.text(0.5, 0.5, "no element clipped", transform=ax.transAxes, ha="center", va="center")
    ax.set(xlabel="group", ylabel="clipped elements (%)",
           title=f"clipped fraction (all groups: {percent_text(view.clipped_fraction_total)})")


def _error_panel(ax, view: View) -> None:
    import seaborn as sns

    centres = ((view.error_edges[1:] + view.error_edges[:-1]) / 2).tolist()
    frame = pd.DataFrame({
        "log10 relative error": centres * view.groups,
        "share of elements": (view.error_fraction * 100).flatten().tolist(),
        "group": [str(g) for g in range(view.groups) for _ in centres],
    })
    sns.lineplot(frame, x="log10 relative error", y="share of elements", hue="group", ax=ax, palette="viridis")
    ax.set(ylabel="share of the group's elements (%)",
           xlabel=("log10 |x̂′ − x′| / |x′|" if _transformed(view) else "log10 |x̂ − x| / |x|")
           + "  (−5: at most 1e-5, 0: flushed to zero)",
           title="relative element error of the " + ("transformed activations x′" if _transformed(view)
                                                     else "activations"))
    ax.get_legend().remove()
    _legend_below(ax, ncol=min(view.groups, 6), title="group")


def _scale_panel(ax, view: View) -> None:
    counts = view.scale_byte_counts[:128].double()  # block scales are never negative
    share = counts / counts.sum() * 100
    classes = [_scale_class(b) for b in range(128)]
    used = torch.nonzero(counts).flatten().tolist() or [0]
    for name, colour in zip(SCALE_CLASSES, SCALE_COLOURS):
        mask = torch.tensor([c == name for c in classes])
        if bool((counts * mask).sum() > 0):
            ax.stairs((share * mask).tolist(), [b - 0.5 for b in range(129)], fill=True, color=colour, label=name)
    ax.set_xlim(min(used) - 2, max(used) + 2)
    ax.set(xlabel="E4M3 block-scale byte", ylabel="share of blocks (%)",
           title=f"block scales: zero {view.zero_scale_share:.1%}, subnormal {view.subnormal_scale_share:.1%}")
    _legend_below(ax, ncol=2)


def draw(view: View):
    """The figure of ``view``: a ``matplotlib.figure.Figure`` outside pyplot (nothing to
    close, and Jupyter's inline backend does not show it by itself)."""
    from matplotlib.figure import Figure

    apply_style()
    fig = Figure(figsize=(15, 9))
    axes = fig.subplots(2, 3)
    fig.subplots_adjust(left=0.05, right=0.94, top=0.86, bottom=0.14, wspace=0.3, hspace=0.62)
    if _transformed(view):  # x' is what is quantized; the baselines quantize the plain x
        _sqnr_panel(axes[0, 0], view.sqnr_x_db, view.baseline_x_db, f"x′ = x·A ({view.controls.activation_transform})",
                    _mode(view), ylabel="SQNR (dB); lines: bf16 / FP8 of x")
    else:
        _sqnr_panel(axes[0, 0], view.sqnr_x_db, view.baseline_x_db, "the activations x", _mode(view))
    _sqnr_panel(axes[0, 1], view.sqnr_z_db, view.baseline_z_db, "z = x·W", _mode(view))  # transform: in the title
    _headroom_panel(axes[0, 2], view)
    _error_panel(axes[1, 0], view)
    _scale_panel(axes[1, 1], view)
    _clipped_panel(axes[1, 2], view)
    # the summary's control state and results, then the activation statistics, then the data
    lines = [*textwrap.wrap(headline(view), 160), *textwrap.wrap(notes(view), 160), view.description]
    fig.suptitle("\n".join(lines), fontsize=10)
    return fig


def png_bytes(fig, dpi: int = 80) -> bytes:
    """``fig`` rendered as PNG bytes (what the live UI and the static report show)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
