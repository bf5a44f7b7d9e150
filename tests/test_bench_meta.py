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
