"""The transform records (docs/transforms-*.json: the full mode on a lent GPU, or the small
CPU variant) keep every evaluation's per-window sums: each report must be their rendering,
they must cover three models × three texts with every study transform, and the transform
findings must hold on the record's SmolLM2 / KJV evaluation as they do in fast mode."""

import json
from pathlib import Path

import pytest

from nvfp4lab.study import transform_record
from nvfp4lab.study.decoder_record import evaluations
from nvfp4lab.study.findings import by_id
from nvfp4lab.study.findings_transforms import NUMBERS_OF
from nvfp4lab.transforms.recipes import STUDY_TRANSFORMS

DOCS = Path(__file__).resolve().parents[2] / "docs"
RECORDS = sorted(DOCS.glob("transforms-*.json"))


def test_there_is_a_transform_record():
    assert RECORDS, "no docs/transforms-*.json: run `python -m nvfp4lab.study.transform_record run` (a GPU)"


@pytest.fixture(scope="module", params=RECORDS, ids=[p.stem for p in RECORDS])
def record(request):
    return request.param, json.loads(request.param.read_text())


def test_the_report_is_the_rendering_of_the_record(record):
    path, data = record
    assert path.with_suffix(".md").read_text() == transform_record.render(data), (
        f"{path.with_suffix('.md').name} is stale: python -m nvfp4lab.study.transform_record render docs/{path.stem}")


def test_the_record_covers_three_models_three_texts_and_every_transform(record):
    path, data = record
    evals = evaluations(data)
    assert len({e.model for e in evals}) == 3 and len({e.text for e in evals}) == 3 and len(evals) == 9
    assert all(e.recipe_set == "transforms" and e.calibration_text == e.text for e in evals)
    minimum = 8000 if "-full-" in path.stem else 1000
    assert all(e.tokens >= minimum and len(e.window_positions) >= 16 for e in evals)
    for e in evals:
        transforms = {r.transform for r in e.rows if r.operands == "W4A4"}
        expected = {t.label for t in STUDY_TRANSFORMS if t.unavailable(e.head_dim, e.heads // e.groups * e.head_dim)
                    is None}
        assert transforms == {"none", *expected}, f"{e.model} / {e.text}"
    assert data["meta"]["card"] and data["meta"]["commit"] != "unknown"


def test_the_transform_findings_hold_on_the_records_smollm2_kjv_evaluation(record):
    _, data = record
    first = next(e for e in evaluations(data) if e.model.startswith("SmolLM2") and e.text == "kjv")
    for finding_id, numbers_of in NUMBERS_OF.items():
        numbers = numbers_of(first)
        assert by_id(finding_id).holds(numbers), f"{finding_id} does not hold in {first.model} / kjv of the record"
