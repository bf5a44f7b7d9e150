"""The recorded full-mode reports (docs/findings-full-*.md) are the registry's current claims
filled with the numbers their runs recorded (docs/findings-full-*.json): regenerated, never
edited by hand; every finding's current check is re-run on the recorded numbers and must
agree with the recorded result, and a claim the record cannot support is never "holds"."""

import json
from pathlib import Path

import pytest

from nvfp4lab.study import recorded
from nvfp4lab.study.finding import Finding
from nvfp4lab.study.findings import SYNTHETIC_AND_ENCODER_FINDINGS

ROOT = Path(__file__).resolve().parents[2]
RECORDS = sorted((ROOT / "docs").glob("findings-full-*.json"))

# Findings whose current claim needs numbers their recorded run did not keep (so they read
# "not re-checked" in the report). A new entry here means a claim changed after its run.
# The decoder findings' full-mode record is docs/decoders-full-*.json (raw per-window sums,
# tests/findings/test_decoder_record.py); it replaced findings-full-H200-decoders.
NOT_RECHECKABLE = {
    "findings-full-H100": {"F05-headroom-is-free", "F06-nvfp4-vs-fp8-vs-bf16", "F08-four-over-six-gain"},
}
REGISTRY = {"findings-full-H100": SYNTHETIC_AND_ENCODER_FINDINGS}


def _record(path: Path) -> dict:
    return json.loads(path.read_text())


def test_every_recorded_file_is_known():
    assert {p.stem for p in RECORDS} == set(NOT_RECHECKABLE) == set(REGISTRY)


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_every_recorded_finding_is_rechecked_and_agrees_with_its_record(path):
    record = _record(path)
    assert set(record["findings"]) == {f.id for f in REGISTRY[path.stem]}
    assert set(recorded.not_rechecked(record)) == NOT_RECHECKABLE[path.stem]
    for finding_id, r in record["findings"].items():
        if finding_id in NOT_RECHECKABLE[path.stem]:
            assert recorded.result(finding_id, r["numbers"]).startswith(recorded.NOT_RECHECKED)
        else:  # holds() itself, on the recorded numbers, against the recorded result
            assert bool(recorded.by_id(finding_id).holds(r["numbers"])) == bool(r["holds"]), finding_id
    assert recorded.disagreements(record) == []


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.stem)
def test_the_recorded_report_is_the_rendering_of_its_numbers(path):
    record = _record(path)
    assert path.with_suffix(".md").read_text() == recorded.render(record), (
        f"{path.with_suffix('.md').relative_to(ROOT)} is stale: run "
        f"`python -m nvfp4lab.study.recorded docs/{path.stem}`")


def test_a_claim_the_record_cannot_support_is_not_rendered_as_holding():
    record = _record(ROOT / "docs" / "findings-full-H100.json")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in recorded.render(record).splitlines()
            if line.startswith("| F")}
    assert "| not re-checked: numbers missing (same_clipped, headroom_outlier_min_db) |" in rows["F05-headroom-is-free"]
    assert "(bf16_db, fp8_db, nvfp4_w4a16_db, nvfp4_w4a4_db)" in rows["F06-nvfp4-vs-fp8-vs-bf16"]
    assert "(worst_max6_db, worst_four_over_six_db)" in rows["F08-four-over-six-gain"]
    for finding_id in NOT_RECHECKABLE["findings-full-H100"]:
        assert "| holds |" not in rows[finding_id]
    assert "| holds |" in rows["F01-exact-decode"]


def test_a_number_the_run_did_not_record_is_marked_not_invented():
    text = recorded.statement("F03-shared-scale-breaks-at-4-decades", {"shared_3_db": 17.09})
    assert "17.09 dB shared" in text and recorded.NOT_RECORDED in text
    assert "17.54" not in text


def _toy(monkeypatch, holds):
    toy = Finding("T01-toy", "", "a = {a:.1f}, b = {b}", lambda fast, data_dir: {}, holds)
    monkeypatch.setattr(recorded, "by_id", lambda finding_id: toy)
    return toy.id


def test_the_result_is_the_check_rerun_and_names_what_is_missing(monkeypatch):
    toy = _toy(monkeypatch, lambda n: n["a"] > 0 and abs(n["c"] - n["a"]) < 1)  # c: read by the check only
    assert recorded.result(toy, {"a": 1.0, "b": 2, "c": 1.5}) == "holds"
    assert recorded.result(toy, {"a": 1.0, "b": 2, "c": 9.0}) == "DOES NOT HOLD"
    assert recorded.result(toy, {"b": 2}) == "not re-checked: numbers missing (a, c)"
    # b is named by the claim only
    assert recorded.result(toy, {"a": 1.0, "c": 1.5}) == "not re-checked: numbers missing (b)"
    record = {"findings": {toy: {"holds": True, "time": "1s", "numbers": {"a": 1.0, "b": 2, "c": 9.0}}}}
    assert recorded.disagreements(record) == [toy]
    record["findings"][toy]["numbers"] = {"a": 1.0}
    assert recorded.disagreements(record) == [] and recorded.not_rechecked(record) == [toy]


def test_an_error_inside_a_check_is_not_taken_for_a_missing_number(monkeypatch):
    toy = _toy(monkeypatch, lambda n: {}["elsewhere"] if n["a"] else True)
    with pytest.raises(KeyError, match="elsewhere"):
        recorded.result(toy, {"a": 1.0, "b": 2})


def test_an_unknown_finding_is_named():
    with pytest.raises(ValueError, match="no finding 'F99-nothing'"):
        recorded.result("F99-nothing", {})
