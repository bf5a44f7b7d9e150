"""Findings recorded on a lent GPU, kept as numbers and rendered with the registry's
current claims, so a recorded report's wording cannot drift from its numbers.

``docs/findings-full-H100.json`` holds the run's numbers per finding; ``render(record)``
fills each current claim with them (a number the claim now names but the run did not
record reads "(not recorded)") and ``python -m nvfp4lab.study.recorded [STEM]`` rewrites
``STEM.md`` (default ``docs/findings-full-H100``; the decoder-LM run is
``docs/findings-full-H200-decoders``).
"""

from __future__ import annotations

import json
from pathlib import Path

from nvfp4lab.study.findings import by_id
from nvfp4lab.study.paths import project_root

NOT_RECORDED = "(not recorded)"


class _NotRecorded:
    def __format__(self, spec: str) -> str:
        return NOT_RECORDED


class _Numbers(dict):
    def __missing__(self, key):
        return _NotRecorded()


def statement(finding_id: str, numbers: dict) -> str:
    """The current claim of ``finding_id`` filled with ``numbers`` (missing ones marked)."""
    return by_id(finding_id).claim.format_map(_Numbers(numbers))


def render(record: dict) -> str:
    """Markdown of a recorded run: ``{"title", "preamble": [lines], "findings": {id:
    {"holds", "time", "numbers", optional "note"}}}``."""
    lines = [f"# {record['title']}", "", *record["preamble"], "",
             "| finding | result | time | claim |", "|---|---|---|---|"]
    for finding_id, r in record["findings"].items():
        note = f" *Note: {r['note']}*" if r.get("note") else ""
        lines.append(f"| {finding_id} | {'holds' if r['holds'] else 'DOES NOT HOLD'} | {r['time']} | "
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
