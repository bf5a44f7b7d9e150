"""One plotting style for every figure nvfp4lab draws."""

from __future__ import annotations


def apply_style() -> None:
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.9)


def save_figure(fig, name: str, directory=None) -> None:
    """Save ``fig`` as ``<directory>/<name>.png`` and ``.svg``; ``directory`` defaults to
    :func:`nvfp4lab.study.paths.figures_dir`. The figure stays open, so a notebook also
    shows it inline."""
    from pathlib import Path

    from nvfp4lab.study.paths import figures_dir

    directory = Path(directory) if directory is not None else figures_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for suffix in ("png", "svg"):
        fig.savefig(directory / f"{name}.{suffix}", dpi=120, bbox_inches="tight")
