"""``nvfp4lab calibrate`` end to end on safetensors files, and its errors."""

import hashlib
import json

import pytest
import torch
from safetensors.torch import save_file

from nvfp4lab.cli import main


def write(path, **tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return str(path)


@pytest.fixture
def user_tensors(tmp_path):
    g = torch.Generator().manual_seed(0)
    o = (torch.randn(160, 4, 64, generator=g) * torch.tensor([1.0, 0.1, 3.0, 0.01])[None, :, None]).to(torch.bfloat16)
    w = (torch.randn(2 * 128, 128, generator=g) / 10).to(torch.bfloat16)  # dense (G·N, K)
    return write(tmp_path / "acts.safetensors", activations=o), write(tmp_path / "w.safetensors", weights=w)


def test_calibrate_writes_report_json_and_plot_and_leaves_inputs_untouched(user_tensors, tmp_path, capsys):
    acts, weights = user_tensors
    before = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (acts, weights)]
    out = tmp_path / "report"
    assert main(["calibrate", "--activations", acts, "--weights", weights, "--groups", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Recommended:" in printed and "| mse output | per_group static |" in printed
    data = json.loads((out / "calibration.json").read_text())
    assert data["recommendation"]["recipe"] and len(data["results"]) >= 20
    assert (out / "calibration.png").stat().st_size > 1000 and "Recommended" in (out / "calibration.md").read_text()
    assert before == [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (acts, weights)]


def test_calibrate_errors_are_clear(user_tensors, tmp_path, capsys):
    acts, weights = user_tensors
    nan = torch.zeros(100, 2, 64)
    nan[3, 1, 2] = float("nan")
    cases = [
        (["--activations", str(tmp_path / "missing.safetensors"), "--groups", "2"], "not found"),
        (["--activations", acts, "--groups", "3"], "not divisible by groups=3"),
        (["--activations", acts, "--groups", "2", "--activations-key", "nope"], "no tensor 'nope'"),
        (["--activations", write(tmp_path / "few.safetensors", a=torch.randn(40, 2, 64)), "--groups", "2"], "too few tokens"),
        (["--activations", write(tmp_path / "nan.safetensors", a=nan), "--groups", "2"], "non-finite"),
        (["--activations", write(tmp_path / "int.safetensors", a=torch.ones(80, 2, 64, dtype=torch.int32)), "--groups", "2"],
         "floating point"),
        (["--activations", acts, "--weights", write(tmp_path / "bad_w.safetensors", w=torch.ones(3, 5)), "--groups", "2"],
         "weights 'w' must be"),
        (["--activations", acts, "--groups", "2", "--out", "/proc/forbidden"], "cannot write"),
    ]
    for argv, message in cases:
        assert main(["calibrate", *argv]) == 2, argv
        assert message in capsys.readouterr().err, message
