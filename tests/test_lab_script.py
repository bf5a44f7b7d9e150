"""``./lab``, the entry point: its usage text, its exit codes, and where its commands run.
Run with ``bash lab ...`` (the venv exists: the suite itself runs in it)."""

import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("study", "test", "calibrate", "capture", "demo", "run")


def lab(*args, cwd=ROOT, env=None):
    return subprocess.run(["bash", str(ROOT / "lab"), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=None if env is None else {**os.environ, **env})


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


def test_run_works_in_the_callers_folder_and_says_nothing_else(tmp_path):
    assert lab("run", "true").returncode == 0  # installs first if pyproject.toml or lab changed since
    result = lab("run", "python", "-c", "import os, nvfp4lab; print(os.getcwd())", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path)
    assert result.stderr == ""  # an installed environment: no install output, no warnings


def test_test_runs_the_suite_without_the_slow_tests_unless_given_arguments(tmp_path):
    """``./lab test`` = ``pytest -q -m "not slow"``; ``./lab test ARGS`` = ``pytest -q ARGS``
    (pointed by ``PYTEST_ADDOPTS`` at a folder of two tests, one marked slow, collect only)."""
    (tmp_path / "test_two.py").write_text("import pytest\n\ndef test_fast():\n    pass\n\n"
                                           "@pytest.mark.slow\ndef test_slow():\n    pass\n")
    env = {"PYTEST_ADDOPTS": f"--collect-only -p no:cacheprovider --rootdir {tmp_path} {tmp_path}"}
    default = lab("test", env=env)
    assert "test_fast" in default.stdout and "test_slow" not in default.stdout, default.stdout + default.stderr
    slow = lab("test", "-m", "slow", env=env)
    assert "test_slow" in slow.stdout and "test_fast" not in slow.stdout, slow.stdout + slow.stderr
    everything = lab("test", str(tmp_path), env=env)
    assert "test_fast" in everything.stdout and "test_slow" in everything.stdout, everything.stdout


def test_calibrate_from_another_folder_resolves_paths_there(tmp_path):
    """Fast: the checks that precede the evaluation prove where the paths were resolved."""
    x = torch.randn(20, 4, 64, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    save_file({"o": x}, str(tmp_path / "short.safetensors"))
    found = lab("calibrate", "--activations", "short.safetensors", "--groups", "2", "--out", "r", cwd=tmp_path)
    assert found.returncode == 2 and "too few tokens" in found.stderr  # the caller's file was read
    missing = lab("calibrate", "--activations", "nope.safetensors", "--groups", "2", "--out", "r", cwd=tmp_path)
    assert missing.returncode == 2 and "activations file not found: nope.safetensors" in missing.stderr
    assert not (tmp_path / "r").exists() and not (ROOT / "r").exists()


@pytest.mark.slow  # a whole calibrate run through ./lab; tests/test_calibrate_command.py covers it in-process
def test_calibrate_writes_its_default_report_in_the_callers_folder(tmp_path):
    x = (torch.randn(80, 4, 64, generator=torch.Generator().manual_seed(0))).to(torch.bfloat16)
    save_file({"o": x}, str(tmp_path / "acts.safetensors"))
    result = lab("calibrate", "--activations", "acts.safetensors", "--groups", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "calibration-report" / "calibration.json").is_file()
    assert not (ROOT / "calibration-report").exists()
