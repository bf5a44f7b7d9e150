"""One plotting style for every figure nvfp4lab draws."""

from __future__ import annotations


def apply_style() -> None:
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.9)


def save_figure(fig, name: str, directory=None) -> None:
    """Save ``fig`` as ``<directory>/<name>.png`` and ``.svg`` (directory defaults to the
    ``NVFP4LAB_FIGURES`` environment variable, else ``reports/figures``)."""
    import os
    from pathlib import Path

    directory = Path(directory or os.environ.get("NVFP4LAB_FIGURES", "reports/figures"))
    directory.mkdir(parents=True, exist_ok=True)
    for suffix in ("png", "svg"):
        fig.savefig(directory / f"{name}.{suffix}", dpi=120, bbox_inches="tight")
