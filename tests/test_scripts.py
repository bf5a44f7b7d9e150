"""Every script in ``scripts/`` is documented, answers ``--help`` on any machine, and without
what it needs (a Hopper GPU, cuobjdump, ncu) exits 2 with one clear line instead of a
traceback. The GPU runs themselves are described in docs/kernels.md."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
GPU_ERROR = "needs a CUDA GPU with compute capability >= 9.0 and CuTeDSL"

#: script -> (arguments of a real run, the error it prints without its requirement, whether
#: this machine lacks that requirement)
CASES = {
    "decode_paths.py": ([], GPU_ERROR, "gpu"),
    "prefill_paths.py": (["--tokens", "128"], GPU_ERROR, "gpu"),
    "profile_decode.py": (["8", "4096", "1024", "16"], GPU_ERROR, "gpu"),
    "profile_gemm.py": (["8", "4096", "1024", "128"], GPU_ERROR, "gpu"),
    "sass_decode.py": (["1"], "needs cuobjdump", "cuobjdump"),
    "ncu_forward.sh": (["out.txt"], "needs ncu", "ncu"),
}


def lacks(requirement: str) -> bool:
    if requirement == "gpu":
        from nvfp4lab.kernels import gpu_supported

        return not gpu_supported(torch.device("cuda"))
    return shutil.which(requirement) is None


def command(script: str, *args: str) -> list[str]:
    runner = ["bash"] if script.endswith(".sh") else [sys.executable]
    return [*runner, str(SCRIPTS / script), *args]


def run_all(commands: dict[str, list[str]], cwd: Path) -> dict[str, subprocess.CompletedProcess]:
    """Run the commands side by side (each mostly waits for torch to import)."""
    running = {name: subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name, argv in commands.items()}
    results = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=300)
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return results


def test_every_script_is_covered_here_and_referenced_in_the_docs():
    assert sorted(p.name for p in SCRIPTS.iterdir() if p.is_file()) == sorted(CASES)
    docs = (ROOT / "README.md").read_text() + "".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    assert [name for name in CASES if f"scripts/{name}" not in docs] == []


def test_every_script_answers_help(tmp_path):
    results = run_all({name: command(name, "--help") for name in CASES}, tmp_path)
    for name, result in results.items():
        assert result.returncode == 0, (name, result.stderr)
        assert result.stdout.startswith("usage:"), (name, result.stdout)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # ~9 s on 2 cores: each script imports torch to find there is no GPU
def test_without_its_requirement_a_script_exits_2_with_one_clear_line(tmp_path):
    cases = {name: case for name, case in CASES.items() if lacks(case[2])}
    if not cases:
        pytest.skip("this machine has a Hopper GPU, cuobjdump and ncu")
    results = run_all({name: command(name, *args) for name, (args, _, _) in cases.items()}, tmp_path)
    for name, result in results.items():
        error = cases[name][1]
        assert result.returncode == 2, (name, result.stderr)
        last = result.stderr.strip().splitlines()[-1]
        assert "Traceback" not in result.stderr and error in last, (name, result.stderr)
    assert list(tmp_path.iterdir()) == []  # nothing written before the check
