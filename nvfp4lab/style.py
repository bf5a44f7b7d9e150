"""One plotting style for every figure nvfp4lab draws, and one colour per global
activation-scale mode, the same in every figure.

This module sits below everything that plots (``nvfp4lab.study``, ``nvfp4lab.explore``,
``nvfp4lab.models``, ``nvfp4lab calibrate``): it imports nothing from nvfp4lab.

* :func:`apply_style`: the seaborn theme;
* :func:`scale_mode_colour`: ``"per_group static"`` -> its colour;
* :func:`scale_mode_palette`: ``{mode: colour}`` for seaborn's ``palette=``.
"""

from __future__ import annotations

from collections.abc import Iterable

#: seaborn's "colorblind" palette (``sns.color_palette("colorblind").as_hex()``), written
#: out so that choosing a colour needs no seaborn.
COLORBLIND = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc",
              "#ca9161", "#fbafe4", "#949494", "#ece133", "#56b4e9")

#: The colour of each global activation-scale mode (``ScaleMode.name``), and of ``"-"``,
#: the mode column of the baseline rows (bf16, FP8, W4A16) in evaluation tables. Red
#: (``COLORBLIND[3]``) stays free for "clips" and the FP8 reference lines.
SCALE_MODE_COLOURS = {
    "shared static": COLORBLIND[0],
    "per_group static": COLORBLIND[1],
    "shared dynamic": COLORBLIND[2],
    "per_group dynamic": COLORBLIND[4],
    "-": COLORBLIND[7],
}


def apply_style() -> None:
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.9)


def _mode_key(mode: str) -> str:
    """``mode`` as a key of :data:`SCALE_MODE_COLOURS`: ``per-group`` and ``per group``
    are read as ``per_group``; case and surrounding spaces are ignored."""
    if not isinstance(mode, str):
        raise TypeError(f"a scale mode is a string such as 'per_group static'; got {type(mode).__name__}")
    words = mode.strip().lower().replace("per-group", "per_group").replace("per group", "per_group").split()
    return " ".join(words) or mode


def scale_mode_colour(mode: str) -> str:
    """The colour (hex) of a global activation-scale mode: ``"shared static"``,
    ``"per_group static"``, ``"shared dynamic"``, ``"per_group dynamic"`` (as
    ``ScaleMode.name`` writes them; ``per-group`` also reads), or ``"-"`` for a
    baseline row."""
    key = _mode_key(mode)
    if key not in SCALE_MODE_COLOURS:
        raise ValueError(f"unknown scale mode {mode!r}; expected one of {list(SCALE_MODE_COLOURS)}")
    return SCALE_MODE_COLOURS[key]


def scale_mode_palette(modes: Iterable[str] | None = None) -> dict[str, str]:
    """``{mode: colour}`` for ``modes`` (each spelled as given, e.g. a DataFrame's
    ``mode`` column values), or for every mode when ``None``: pass it as seaborn's
    ``palette=`` with ``hue="mode"``."""
    if modes is None:
        return dict(SCALE_MODE_COLOURS)
    return {mode: scale_mode_colour(mode) for mode in dict.fromkeys(modes)}
