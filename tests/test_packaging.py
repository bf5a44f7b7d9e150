"""environment.yml and pyproject.toml declare the same dependencies; the installed library
cannot be shadowed by the clone's folder; the CLI rejects bad input."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from nvfp4lab.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def requirement_names(requirements) -> dict[str, str]:
    parsed = {}
    for requirement in requirements:
        requirement = requirement.split(";")[0].strip()
        name = re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0)
        parsed[name.lower().replace("_", "-")] = requirement[len(name):].strip()
    return parsed


def test_environment_yml_lists_every_pyproject_dependency_with_the_same_bound():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = requirement_names(project["dependencies"])
    for extra in ("dev", "notebooks"):
        wanted.update(requirement_names(project["optional-dependencies"][extra]))
    listed = []
    dependencies = (ROOT / "environment.yml").read_text().split("dependencies:")[1]
    for line in dependencies.splitlines():
        item = re.match(r"\s+- (?!pip$|python=|-e )(\S+)$", line)
        if item and not item.group(1).endswith(":"):
            listed.append(item.group(1))
    conda = {CONDA_NAMES.get(k, k): v for k, v in requirement_names(listed).items()}
    assert conda == wanted


def test_the_package_dir_is_declared_so_editable_installs_use_a_plain_path_entry():
    """With ``package-dir = {"" = "."}`` setuptools' editable install writes a ``.pth``
    holding the project root (silently) instead of its import-hook finder, which a
    namespace package of the same name shadows (and which prints an 11-line warning)."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"": "."}


def test_a_clone_named_nvfp4lab_beside_a_users_script_does_not_shadow_the_library(tmp_path):
    """The newcomer's layout: the clone in ``<folder>/nvfp4lab``, a script in ``<folder>``,
    run from there with the environment's python. ``<folder>/nvfp4lab`` has no
    ``__init__.py``, so it is a namespace package; the installed (editable) library, a
    regular package on ``sys.path``, must win over it."""
    subprocess.run(["git", "clone", "-q", "--depth", "1", ROOT.as_uri(), str(tmp_path / "nvfp4lab")], check=True,
                   capture_output=True, timeout=120)
    script = tmp_path / "use_nvfp4lab.py"
    script.write_text("import nvfp4lab\nfrom nvfp4lab.data import synthetic\n"
                      "print(nvfp4lab.__file__, nvfp4lab.Nvfp4GroupedLinear.__name__, synthetic.__name__)\n")
    result = subprocess.run([sys.executable, script.name], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(ROOT / "nvfp4lab" / "__init__.py"), "Nvfp4GroupedLinear",
                                     "nvfp4lab.data.synthetic"]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "./lab test" in readme and "./lab study" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./lab test" in ci and "./lab study --fast" in ci
    assert "./lab test -m slow" in readme and "\n./lab test -m slow\n" in ci  # CI runs the slow tests too


def test_cli_rejects_unknown_commands_and_bad_options(capsys):
    for argv in (["frobnicate"], ["demo", "--tokens", "0"], ["demo", "--tokens", "x"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["demo", "--tokens", "-3"])
    assert "must be a positive integer" in capsys.readouterr().err


def test_demo_prints_one_row_per_activation_scale_mode_with_sound_numbers(capsys):
    assert main(["demo", "--tokens", "8"]) == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].endswith(("static", "dynamic")):
            rows[cells[0]] = (float(cells[1]), float(cells[2]), float(cells[3]), float(cells[4].rstrip("%")) / 100)
    assert list(rows) == ["shared static", "per_group static", "shared dynamic", "per_group dynamic"]
    for mode, (sqnr, worst, clipped, subnormal) in rows.items():
        # NVFP4 W4A4 on Gaussian heads: ~17.5 dB overall (E2M1 steps with block scales)
        assert 14.0 < sqnr < 22.0, (mode, sqnr)
        assert 10.0 < worst <= sqnr, (mode, worst)  # the worst group is one of the groups
        assert 0.0 <= clipped < 1e-3 and 0.0 <= subnormal <= 1.0, mode
    assert rows["shared dynamic"][2] == rows["per_group dynamic"][2] == 0.0  # a dynamic scale never clips
