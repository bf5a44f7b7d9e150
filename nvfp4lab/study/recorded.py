"""Findings recorded on a lent GPU, kept as numbers and rendered with the registry's
current claims, so a recorded report's wording cannot drift from its numbers.

``docs/findings-full-H100.json`` holds the run's numbers per finding; ``render(record)``
fills each current claim with them (a number the claim now names but the run did not
record reads "(not recorded)") and ``python -m nvfp4lab.study.recorded [STEM]`` rewrites
``STEM.md`` (default ``docs/findings-full-H100``). The decoder-LM findings' full-mode record
keeps raw per-window sums instead: :mod:`nvfp4lab.study.decoder_record`.

The result column is the current check re-run on the recorded numbers (:func:`result`):
"holds" or "DOES NOT HOLD" when every number the claim names and its ``holds()`` reads was
recorded, else "not re-checked: numbers missing (names)" — never "holds" for a claim the
record cannot support. :func:`disagreements` lists the findings whose recorded result the
re-check contradicts.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from nvfp4lab.study.finding import Finding
from nvfp4lab.study.findings import FINDINGS
from nvfp4lab.study.paths import project_root

NOT_RECORDED = "(not recorded)"
NOT_RECHECKED = "not re-checked: numbers missing"


def by_id(finding_id: str) -> Finding:
    """The registry's finding ``finding_id``; ``ValueError`` for an id it does not have."""
    for finding in FINDINGS:
        if finding.id == finding_id:
            return finding
    raise ValueError(f"no finding {finding_id!r} in the registry (nvfp4lab.study.findings)")


class _NotRecorded:
    def __format__(self, spec: str) -> str:
        return NOT_RECORDED


class _Numbers(dict):
    def __missing__(self, key):
        return _NotRecorded()


class _Probe:
    """Stands for a missing number while a check runs to see what it reads: every
    comparison is true and arithmetic gives a probe, so an ``and`` chain reads on."""

    def _true(self, other) -> bool:
        return True

    def _self(self, *other) -> "_Probe":
        return self

    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = _true
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _self
    __truediv__ = __rtruediv__ = __pow__ = __rpow__ = __abs__ = __neg__ = _self
    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        return True


class _Reading(dict):
    """The recorded numbers, noting each name a check asks for that they lack."""

    def __init__(self, numbers: dict):
        super().__init__(numbers)
        self.missing: list[str] = []

    def __missing__(self, key):
        if key not in self.missing:
            self.missing.append(key)
        return _Probe()


def claim_names(finding_id: str) -> list[str]:
    """The numbers the current claim template of ``finding_id`` names, in order."""
    names = []
    for _, field, _, _ in string.Formatter().parse(by_id(finding_id).claim):
        name = field.split(".")[0].split("[")[0] if field else ""
        if name and name not in names:
            names.append(name)
    return names


def missing_numbers(finding_id: str, numbers: dict) -> list[str]:
    """The numbers the current claim of ``finding_id`` names or its ``holds()`` reads that
    ``numbers`` lacks: the claim's in its order, then the check's."""
    missing = [name for name in claim_names(finding_id) if name not in numbers]
    reading = _Reading(numbers)
    try:
        by_id(finding_id).holds(reading)
    except Exception:  # a probe cannot stand in for every use: the names read so far count
        pass
    return missing + [name for name in reading.missing if name not in missing]


def result(finding_id: str, numbers: dict) -> str:
    """The current check of ``finding_id`` re-run on recorded ``numbers``: "holds",
    "DOES NOT HOLD", or "not re-checked: numbers missing (a, b)" when the claim needs
    numbers the record lacks."""
    missing = missing_numbers(finding_id, numbers)
    if missing:
        return f"{NOT_RECHECKED} ({', '.join(missing)})"
    return "holds" if by_id(finding_id).holds(numbers) else "DOES NOT HOLD"


def disagreements(record: dict) -> list[str]:
    """Ids of ``record``'s findings whose recorded "holds" the current check, re-run on the
    recorded numbers, contradicts (those that cannot be re-checked are not among them)."""
    out = []
    for finding_id, r in record["findings"].items():
        now = result(finding_id, r["numbers"])
        if not now.startswith(NOT_RECHECKED) and (now == "holds") != bool(r["holds"]):
            out.append(finding_id)
    return out


def not_rechecked(record: dict) -> list[str]:
    """Ids of ``record``'s findings whose current claim needs numbers the record lacks."""
    return [i for i, r in record["findings"].items() if missing_numbers(i, r["numbers"])]


def statement(finding_id: str, numbers: dict) -> str:
    """The current claim of ``finding_id`` filled with ``numbers`` (missing ones marked)."""
    return by_id(finding_id).claim.format_map(_Numbers(numbers))


def render(record: dict) -> str:
    """Markdown of a recorded run: ``{"title", "preamble": [lines], "findings": {id:
    {"holds", "time", "numbers", optional "note"}}}``; the result column is :func:`result`."""
    lines = [f"# {record['title']}", "", *record["preamble"], "",
             "| finding | result | time | claim |", "|---|---|---|---|"]
    for finding_id, r in record["findings"].items():
        note = f" *Note: {r['note']}*" if r.get("note") else ""
        lines.append(f"| {finding_id} | {result(finding_id, r['numbers'])} | {r['time']} | "
                     f"{statement(finding_id, r['numbers'])}{note} |")
    return "\n".join(lines) + "\n"


def main(stem: str = "docs/findings-full-H100") -> Path:
    root = project_root()
    record = json.loads((root / f"{stem}.json").read_text())
    target = root / f"{stem}.md"
    target.write_text(render(record))
    return target


if __name__ == "__main__":
    import sys

    print(f"wrote {main(*sys.argv[1:2])}")
