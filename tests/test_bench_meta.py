"""The benchmark's JSON ``meta`` names the commit that ran (CPU: no timing here)."""

import subprocess
from pathlib import Path

from nvfp4lab import bench

ROOT = Path(__file__).resolve().parents[1]


def test_meta_records_the_checkouts_commit_or_unknown(tmp_path):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    meta = bench.run_meta("a card", None)
    assert meta["commit"] == head.stdout.strip() and len(meta["commit"]) == 40
    assert set(meta) == {"card", "torch", "commit", "method", "fp8_blockwise_cast"}
    assert bench.source_commit(tmp_path) == "unknown"  # not a git checkout


def test_meta_takes_the_commit_from_the_environment_where_the_tree_has_no_git(tmp_path, monkeypatch):
    """The lent GPU machines get a copy of the tree without ``.git``: the caller names the commit."""
    monkeypatch.setenv("NVFP4LAB_COMMIT", "0123456789abcdef0123456789abcdef01234567")
    assert bench.source_commit(tmp_path) == "0123456789abcdef0123456789abcdef01234567"
    assert bench.run_meta("a card", None)["commit"] == "0123456789abcdef0123456789abcdef01234567"


def test_meta_names_the_fp8_cast_that_ran_though_it_is_chosen_during_the_first_point(tmp_path, monkeypatch):
    """The FP8 cast's mode is known only after the first point has cast (it was once written
    before that, as null, while the cast ran)."""
    import json

    class Cast:
        mode = "fused Triton kernel"

    def point(problem):
        bench.FP8_CAST = Cast()
        row = {"us": 1.0, "speedup_vs_bf16": 1.0}
        rows = {name: dict(row) for name in ("bf16_bmm", "fp8_blockwise", "fp8_blockwise_gemm", "fp8_scaled_mm",
                                              "sketch", "nvfp4_gemm", "nvfp4_fused", "nvfp4_dynamic")}
        rows["quantizer"] = {"us": 1.0, "fraction_of_copy_bandwidth": 0.5}
        return rows

    monkeypatch.setattr(bench, "FP8_CAST", None)
    monkeypatch.setattr(bench, "bench_point", point)
    monkeypatch.setattr(bench, "Problem", lambda *shape: shape)
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bench.torch.cuda, "get_device_name", lambda: "a card")
    monkeypatch.setattr(bench.torch.cuda, "empty_cache", lambda: None)
    assert bench.main(["--out", str(tmp_path), "--tokens", "1", "--shapes", "1,16,16"]) == 0
    written = json.loads((tmp_path / "a_card.json").read_text())
    assert written["meta"]["fp8_blockwise_cast"] == "fused Triton kernel"
    assert "activation cast (fused Triton kernel)" in (tmp_path / "a_card.md").read_text()
