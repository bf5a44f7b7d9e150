"""The study's figure files. The plotting style and the scale-mode colours live below the
study, in :mod:`nvfp4lab.style` (``apply_style`` is re-exported here for older imports)."""

from __future__ import annotations

import os
from pathlib import Path

from nvfp4lab.style import apply_style  # noqa: F401  (re-exported)


def save_figure(fig, name: str, directory=None) -> Path | None:
    """Save ``fig`` as ``<directory>/<name>.png`` and ``.svg`` and return the PNG's path.
    Without ``directory``, only while ``nvfp4lab study`` runs (it sets
    ``$NVFP4LAB_FIGURES``) into :func:`nvfp4lab.study.paths.figures_dir`; a notebook run by
    hand saves nothing (returns ``None``), so it never overwrites the study's figures.
    The figure stays open, so a notebook also shows it inline."""
    from nvfp4lab.study.paths import figures_dir

    if directory is None and not os.environ.get("NVFP4LAB_FIGURES"):
        return None
    directory = Path(directory) if directory is not None else figures_dir()
    directory.mkdir(parents=True, exist_ok=True)
    for suffix in ("png", "svg"):
        fig.savefig(directory / f"{name}.{suffix}", dpi=120, bbox_inches="tight")
    return directory / f"{name}.png"
