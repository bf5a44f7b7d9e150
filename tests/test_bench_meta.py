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
