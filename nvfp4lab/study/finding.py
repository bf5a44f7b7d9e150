"""One finding of the study: a claim, the computation behind its numbers, and the check
that the claim holds (the registry is ``nvfp4lab.study.findings``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    id: str
    notebook: str
    claim: str  # str.format template over the numbers
    compute: Callable[[bool, object], dict]
    holds: Callable[[dict], bool]
    needs_real_data: bool = False
    figure: str = ""  # stem of the figure that shows it, under reports/figures/ (PNG and SVG)

    @property
    def test(self) -> str:
        return f"tests/findings/test_findings.py::test_finding[{self.id}]"

    def statement(self, numbers: dict) -> str:
        return self.claim.format(**numbers)
