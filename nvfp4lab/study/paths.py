"""Where the study's files live, resolved from the project root, never from the current
directory: a notebook opened in JupyterLab started from ``notebooks/`` writes its figures
to ``<root>/reports/figures`` and reads ``<root>/data/generated/minilm``, as the study does.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The checkout nvfp4lab is imported from (the folder holding ``pyproject.toml`` and
    ``notebooks/``)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise RuntimeError(f"nvfp4lab is not imported from a checkout ({root} has no pyproject.toml): "
                           "the study's notebooks and reports need the source tree")
    return root


def from_root(path: str | os.PathLike) -> Path:
    """``path`` if absolute, else ``project_root() / path``."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def figures_dir() -> Path:
    """Where figures go: ``$NVFP4LAB_FIGURES`` (set by ``nvfp4lab study`` to its
    ``<out>/figures``; relative values count from the root), else ``<root>/reports/figures``."""
    return from_root(os.environ.get("NVFP4LAB_FIGURES") or "reports/figures")
