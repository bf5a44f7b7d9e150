"""``./lab``, the entry point: its usage text, its exit codes, and where its commands run.
Run with ``bash lab ...`` (the venv exists: the suite itself runs in it)."""

import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("study", "test", "calibrate", "capture", "demo", "run")


def lab(*args, cwd=ROOT):
    return subprocess.run(["bash", str(ROOT / "lab"), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("flag", ["help", "-h", "--help"])
def test_help_is_a_usage_text_naming_every_command_and_exits_0(flag):
    result = lab(flag)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ./lab COMMAND")
    for command in COMMANDS:
        assert f"\n  {command} " in result.stdout, command
    assert "set -" not in result.stdout and "exec " not in result.stdout and '"$' not in result.stdout  # no code


def test_no_command_prints_the_usage():
    assert lab().stdout.startswith("usage: ./lab COMMAND")


def test_an_unknown_command_exits_2_with_the_usage():
    result = lab("frobnicate")
    assert result.returncode == 2
    assert "unknown command 'frobnicate'" in result.stderr and "usage: ./lab COMMAND" in result.stderr


def test_run_without_a_command_is_a_clear_error():
    result = lab("run")
    assert result.returncode == 2 and "'run' needs a command" in result.stderr
    assert "unbound variable" not in result.stderr


def test_run_works_in_the_callers_folder(tmp_path):
    result = lab("run", "python", "-c", "import os, nvfp4lab; print(os.getcwd())", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path)


def test_calibrate_from_another_folder_resolves_paths_there(tmp_path):
    x = (torch.randn(80, 4, 64, generator=torch.Generator().manual_seed(0))).to(torch.bfloat16)
    save_file({"o": x}, str(tmp_path / "acts.safetensors"))
    result = lab("calibrate", "--activations", "acts.safetensors", "--groups", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "calibration-report" / "calibration.json").is_file()
    assert not (ROOT / "calibration-report").exists()
    missing = lab("calibrate", "--activations", "nope.safetensors", "--groups", "2", "--out", "r", cwd=tmp_path)
    assert missing.returncode == 2 and "activations file not found: nope.safetensors" in missing.stderr
    assert not (tmp_path / "r").exists()
