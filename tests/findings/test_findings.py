"""Every finding of the study, recomputed in fast mode from seeded data, its claim
asserted; the numbers worth watching are pinned in ``pinned_fast.json`` so that a change
shows up in review (``NVFP4LAB_UPDATE_PINS=1 pytest tests/findings`` rewrites the file;
say why in the commit)."""

import json
import math
import os
from pathlib import Path

import pytest

from nvfp4lab.study.findings import FINDINGS, SYNTHETIC_AND_ENCODER_FINDINGS

PINS = Path(__file__).with_name("pinned_fast.json")
# Recomputations are deterministic on one machine; across CPUs and torch releases float
# reductions may reorder. 0.05 dB is far below every margin a claim relies on (>= 0.1 dB);
# counts and fractions must match to 1e-6 relative.
DB_TOLERANCE = 0.05
RELATIVE_TOLERANCE = 1e-6
# Differences between two SQNRs of one data set (a gain, a spread) can be of the order of
# DB_TOLERANCE itself (F08's gain is ~0.1 dB, F09's spread ~0.06 dB): they are pinned to a
# tenth of their value, far above float noise (both terms see the same reordering).
DIFFERENCE_KEYS = ("gain_db", "spread_db")
DIFFERENCE_TOLERANCE = 0.1


def tolerance(key: str, pinned: float) -> float:
    if key.endswith(DIFFERENCE_KEYS):
        return DIFFERENCE_TOLERANCE * abs(pinned)
    if key.endswith("db"):
        return DB_TOLERANCE
    return RELATIVE_TOLERANCE * max(abs(pinned), 1e-12)


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
        assert math.isclose(value, pinned, abs_tol=tolerance(key, pinned)), (
            f"{finding.id}.{key}: {value} (pinned {pinned})")
    assert set(numbers) == set(pins[finding.id]), f"{finding.id}: numbers and pins differ in their keys"


def test_registry_is_complete_and_points_at_real_files():
    root = Path(__file__).resolve().parents[2]
    assert len(FINDINGS) >= 8 and len({f.id for f in FINDINGS}) == len(FINDINGS)
    for finding in FINDINGS:
        assert (root / "notebooks" / f"{finding.notebook}.py").is_file(), finding.notebook
        assert finding.test.startswith("tests/findings/test_findings.py::test_finding[")
        assert finding.id in (root / "notebooks" / f"{finding.notebook}.py").read_text(), (
            f"notebook {finding.notebook} does not show {finding.id}"
        )


def test_difference_pins_are_tight_against_their_size():
    """F08's gain and F09's spread would pass a 0.05 dB pin at half their size."""
    assert tolerance("gain_db", 0.11) < 0.012 and tolerance("spread_db", 0.058) < 0.006
    assert tolerance("sqnr_at_max_db", 20.0) == DB_TOLERANCE


def test_every_finding_links_a_figure_its_notebook_saves():
    """The figure is named, as a string literal, in the finding's own notebook, which saves
    its figures with ``save_figure`` (directly or through a helper taking the name)."""
    root = Path(__file__).resolve().parents[2]
    for finding in SYNTHETIC_AND_ENCODER_FINDINGS:
        assert finding.figure, f"{finding.id} names no figure"
    for finding in FINDINGS:
        if not finding.figure:
            continue
        source = (root / "notebooks" / f"{finding.notebook}.py").read_text()
        assert "save_figure(" in source and f'"{finding.figure}")' in source, (
            f"{finding.id}: notebook {finding.notebook} does not save figure {finding.figure!r}")


def test_findings_markdown_links_each_figure_relative_to_itself(tmp_path):
    import re

    from nvfp4lab.study.run import findings_markdown

    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "03_shared_vs_per_group.png").write_bytes(b"png")
    records = [{"id": "F-a", "holds": True, "claim": "a claim", "notebook": "03_shared_vs_per_group",
                "test": "tests/x.py::t", "figure": "03_shared_vs_per_group"},
               {"id": "F-b", "holds": False, "claim": "b claim", "notebook": "01_format", "test": "tests/x.py::u",
                "figure": ""}]
    text = findings_markdown(records, True, "## Conditions\n", tmp_path / "figures")
    (tmp_path / "findings.md").write_text(text)
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert links and all((tmp_path / link).is_file() for link in links)
    assert "DOES NOT HOLD" in text and text.index("## Conditions") < text.index("F-a")
    assert "](" not in text.split("F-b")[1]
    records[0]["figure"] = "03_never_drawn"
    assert "`03_never_drawn` was not produced" in findings_markdown(records, True, "", tmp_path / "figures")
