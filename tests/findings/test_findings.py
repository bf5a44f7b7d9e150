"""Every finding of the study, recomputed in fast mode from seeded data, its claim
asserted; the numbers worth watching are pinned in ``pinned_fast.json`` so that a change
shows up in review (``NVFP4LAB_UPDATE_PINS=1 pytest tests/findings`` rewrites the file;
say why in the commit)."""

import json
import math
import os
from pathlib import Path

import pytest

from nvfp4lab.study.findings import FINDINGS

PINS = Path(__file__).with_name("pinned_fast.json")
# Recomputations are deterministic on one machine; across CPUs and torch releases float
# reductions may reorder. 0.05 dB is far below every margin a claim relies on (>= 0.1 dB);
# counts and fractions must match to 1e-6 relative.
DB_TOLERANCE = 0.05
RELATIVE_TOLERANCE = 1e-6


@pytest.fixture(scope="session")
def pins():
    return json.loads(PINS.read_text()) if PINS.is_file() else {}


@pytest.mark.parametrize("finding", FINDINGS, ids=[f.id for f in FINDINGS])
def test_finding(finding, request, pins):
    data_dir = request.getfixturevalue("captured_minilm") if finding.needs_real_data else None
    numbers = finding.compute(True, data_dir)
    assert finding.holds(numbers), f"{finding.id} no longer holds: {finding.statement(numbers)}"
    if os.environ.get("NVFP4LAB_UPDATE_PINS"):
        pins[finding.id] = {k: float(v) for k, v in numbers.items()}
        PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
        return
    assert finding.id in pins, f"no pinned numbers for {finding.id}: run with NVFP4LAB_UPDATE_PINS=1"
    for key, pinned in pins[finding.id].items():
        value = float(numbers[key])
        tolerance = DB_TOLERANCE if key.endswith("db") else RELATIVE_TOLERANCE * max(abs(pinned), 1e-12)
        assert math.isclose(value, pinned, abs_tol=tolerance), f"{finding.id}.{key}: {value} (pinned {pinned})"


def test_registry_is_complete_and_points_at_real_files():
    root = Path(__file__).resolve().parents[2]
    assert len(FINDINGS) >= 8 and len({f.id for f in FINDINGS}) == len(FINDINGS)
    for finding in FINDINGS:
        assert (root / "notebooks" / f"{finding.notebook}.py").is_file(), finding.notebook
        assert finding.test.startswith("tests/findings/test_findings.py::test_finding[")
        assert finding.id in (root / "notebooks" / f"{finding.notebook}.py").read_text(), (
            f"notebook {finding.notebook} does not show {finding.id}"
        )
