"""docs/findings-full-H100.md is the registry's current claims filled with the numbers the
H100 run recorded (docs/findings-full-H100.json): regenerated, never edited by hand."""

import json
from pathlib import Path

from nvfp4lab.study import recorded
from nvfp4lab.study.findings import SYNTHETIC_AND_ENCODER_FINDINGS

ROOT = Path(__file__).resolve().parents[2]


def test_the_recorded_full_mode_report_matches_the_current_claims():
    record = json.loads((ROOT / "docs" / "findings-full-H100.json").read_text())
    assert set(record["findings"]) == {f.id for f in SYNTHETIC_AND_ENCODER_FINDINGS}
    assert (ROOT / "docs" / "findings-full-H100.md").read_text() == recorded.render(record), (
        "docs/findings-full-H100.md is stale: run `python -m nvfp4lab.study.recorded`")


def test_the_recorded_decoder_full_mode_report_matches_the_current_claims():
    from nvfp4lab.study.findings_decoder import DECODER_FINDINGS

    record = json.loads((ROOT / "docs" / "findings-full-H200-decoders.json").read_text())
    assert set(record["findings"]) == {f.id for f in DECODER_FINDINGS}
    for finding in DECODER_FINDINGS:  # the recorded numbers still satisfy the current claim
        assert finding.holds(record["findings"][finding.id]["numbers"]), finding.id
    assert (ROOT / "docs" / "findings-full-H200-decoders.md").read_text() == recorded.render(record), (
        "docs/findings-full-H200-decoders.md is stale: run "
        "`python -m nvfp4lab.study.recorded docs/findings-full-H200-decoders`")


def test_a_number_the_run_did_not_record_is_marked_not_invented():
    text = recorded.statement("F03-shared-scale-breaks-at-4-decades", {"shared_3_db": 17.09})
    assert "17.09 dB shared" in text and recorded.NOT_RECORDED in text
    assert "17.54" not in text
