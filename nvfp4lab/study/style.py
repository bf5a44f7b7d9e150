"""One plotting style for every figure nvfp4lab draws."""

from __future__ import annotations


def apply_style() -> None:
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.9)
