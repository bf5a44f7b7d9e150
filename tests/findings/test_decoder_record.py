"""The full-mode decoder record (docs/decoders-full-*.json, computed on a lent GPU) keeps every
evaluation's per-window sums: its report must be their rendering, and the decoder findings
must hold on the record's SmolLM2 / KJV evaluation as they do in fast mode."""

import json
from pathlib import Path

import pytest

from nvfp4lab.study import decoder_record
from nvfp4lab.study.findings import by_id
from nvfp4lab.study.findings_decoder import NUMBERS_OF

DOCS = Path(__file__).resolve().parents[2] / "docs"
RECORDS = sorted(DOCS.glob("decoders-full-*.json"))


def test_there_is_a_full_mode_record():
    assert RECORDS, "no docs/decoders-full-*.json: run `python -m nvfp4lab.study.decoder_record run` on a GPU"


@pytest.fixture(scope="module", params=RECORDS, ids=[p.stem for p in RECORDS])
def record(request):
    return request.param, json.loads(request.param.read_text())


def test_the_report_is_the_rendering_of_the_record(record):
    path, data = record
    assert path.with_suffix(".md").read_text() == decoder_record.render(data), (
        f"{path.with_suffix('.md').name} is stale: python -m nvfp4lab.study.decoder_record render docs/{path.stem}")


def test_the_record_covers_three_models_on_three_texts_with_8192_tokens(record):
    _, data = record
    evaluations = decoder_record.evaluations(data)
    own = {(e.model, e.text) for e in evaluations if e.text == e.calibration_text}
    assert len({m for m, _ in own}) == 3 and len({t for _, t in own}) == 3 and len(own) == 9
    assert all(e.tokens >= 8000 and len(e.window_positions) >= 16 for e in evaluations)
    assert data["meta"]["card"] and data["meta"]["commit"] != "unknown"


def test_the_decoder_findings_hold_on_the_records_first_evaluation(record):
    _, data = record
    first = decoder_record.evaluations(data)[0]
    for finding_id, numbers_of in NUMBERS_OF.items():
        numbers = numbers_of(first)
        assert by_id(finding_id).holds(numbers), f"{finding_id} does not hold in the full-mode record"
