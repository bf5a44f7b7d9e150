"""``nvfp4lab calibrate`` end to end on safetensors files, and its errors."""

import hashlib
import json
import re
import time

import pytest
import torch
from safetensors.torch import save_file

from nvfp4lab import calibrate_command, calibrate_transforms, evaluation
from nvfp4lab.cli import main


def write(path, **tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return str(path)


def strict_json(text):
    def reject(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=reject)


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
    assert "| mse output | per_group static |" in printed
    data = strict_json((out / "calibration.json").read_text())
    recommended = data["recommendation"]
    assert len(data["results"]) >= 20 and data["rule"] == evaluation.RULE
    # Without --transforms: no transform rows, column or fields.
    assert "transform" not in printed and "hadamard" not in (out / "calibration.md").read_text()
    assert "transforms" not in data and not any("transform" in row for row in data["results"] + [recommended])
    for suffix in ("png", "svg"):
        assert (out / f"calibration.{suffix}").stat().st_size > 1000
    assert before == [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (acts, weights)]
    # The recommendation: stated after the rule, and the one marked row is the recommended one.
    for text in (printed, (out / "calibration.md").read_text()):
        assert text.index("Rule: among the NVFP4 W4A4 rows") < text.index("Chosen:")
        marked = [line for line in text.splitlines() if "◀ recommended" in line]
        assert len(marked) == 1 and marked[0].startswith(f"| {recommended['recipe']} | {recommended['mode']} |")
    assert f"Recommended: {recommended['recipe']} with {recommended['mode']}" in printed


def test_the_recommendation_states_the_rule_when_a_static_row_wins_over_a_better_dynamic_one():
    rows = [evaluation.Result("bf16", "-", 50, 50, 0, 0),
            evaluation.Result("dynamic", "shared dynamic", 17.9, 17.75, 0, 0),
            evaluation.Result("max", "shared static", 17.9, 17.73, 0, 0),
            evaluation.Result("percentile", "shared static", 18.5, 18.0, 1e-4, 0)]
    choice, why = evaluation.recommend(rows)
    assert (choice.recipe, choice.mode) == ("max", "shared static")  # clipping excludes the 18.0 row
    assert why.startswith("Rule: ") and "0.1 dB" in why and "dynamic, shared dynamic at 17.75 dB" in why
    table = evaluation.markdown_table(rows, chosen=choice)
    assert [line.split(" | ")[0] for line in table.splitlines() if "◀ recommended" in line] == ["| max"]
    with pytest.raises(ValueError, match="undefined"):
        evaluation.recommend(rows + [evaluation.Result("mse", "shared static", float("nan"), float("nan"), 0, 0)])


def test_report_json_is_strict_and_writes_an_infinite_sqnr_as_null():
    rows = [evaluation.Result("dynamic", "shared dynamic", float("inf"), float("inf"), 0.0, 0.0)]
    data = strict_json(calibrate_command.report_json(rows, rows[0], "why"))
    assert data["results"][0]["sqnr_db"] is None and data["results"][0]["clipped_fraction"] == 0.0


def test_relative_paths_and_the_default_output_folder_belong_to_the_current_folder(user_tensors, tmp_path,
                                                                                    monkeypatch, capsys):
    acts, _ = user_tensors
    here = tmp_path / "elsewhere"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(["calibrate", "--activations", "../acts.safetensors", "--groups", "2"]) == 0
    assert (here / "calibration-report" / "calibration.md").is_file()
    assert "written: calibration-report/calibration.md" in capsys.readouterr().out


def bad_inputs(tmp_path, acts, weights):
    nan = torch.zeros(100, 2, 64)
    nan[3, 1, 2] = float("nan")
    inf = torch.randn(100, 2, 64)
    inf[90, 0, 7] = float("inf")
    quiet_end = torch.randn(100, 2, 64)
    quiet_end[60:, 1] = 0  # group 1 silent in the held-out tokens
    return [
        (["--activations", str(tmp_path / "missing.safetensors"), "--groups", "2"], "not found"),
        (["--activations", str(tmp_path), "--groups", "2"], "is a folder"),
        (["--activations", acts, "--groups", "3"], "not divisible by groups=3"),
        (["--activations", acts, "--groups", "2", "--activations-key", "nope"], "no tensor 'nope'"),
        (["--activations", write(tmp_path / "few.safetensors", a=torch.randn(40, 2, 64)), "--groups", "2"], "too few tokens"),
        (["--activations", write(tmp_path / "empty.safetensors", a=torch.zeros(0, 12, 64)), "--groups", "4"], "no tokens"),
        (["--activations", write(tmp_path / "hollow.safetensors", a=torch.zeros(80, 0, 64)), "--groups", "4"],
         "empty dimension"),
        (["--activations", write(tmp_path / "zeros.safetensors", a=torch.zeros(100, 12, 64)), "--groups", "4"],
         "all zero"),
        (["--activations", write(tmp_path / "quiet.safetensors", a=quiet_end), "--groups", "2"],
         "group(s) [1] are all zero in the held-out tokens"),
        (["--activations", write(tmp_path / "nan.safetensors", a=nan), "--groups", "2"], "non-finite"),
        (["--activations", write(tmp_path / "inf.safetensors", a=inf), "--groups", "2"], "index (90, 0, 7)"),
        (["--activations", write(tmp_path / "rank.safetensors", a=torch.randn(100, 128)), "--groups", "2"], "3-D"),
        (["--activations", write(tmp_path / "int.safetensors", a=torch.ones(80, 2, 64, dtype=torch.int32)), "--groups", "2"],
         "floating point"),
        (["--activations", write(tmp_path / "k.safetensors", a=torch.randn(80, 2, 24)), "--groups", "2"], "multiple of 16"),
        (["--activations", acts, "--weights", write(tmp_path / "bad_w.safetensors", w=torch.ones(3, 5)), "--groups", "2"],
         "weights 'w' must be"),
        (["--activations", acts, "--weights", write(tmp_path / "zero_w.safetensors", w=torch.zeros(2, 128, 16)),
          "--groups", "2"], "all zero"),
        (["--activations", acts, "--groups", "2", "--out", "/proc/forbidden"], "cannot write"),
        (["--activations", acts, "--groups", "2", "--out", weights], "is a file"),
    ]


def test_bad_input_is_one_clear_line_exit_2_fast_and_leaves_no_output(user_tensors, tmp_path, monkeypatch, capsys):
    acts, weights = user_tensors
    monkeypatch.chdir(tmp_path)
    for argv, message in bad_inputs(tmp_path, acts, weights):
        out = tmp_path / "new" / "report"
        if "--out" not in argv:
            argv = [*argv, "--out", str(out)]
        start = time.perf_counter()
        assert main(["calibrate", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert time.perf_counter() - start < 10, argv  # checked before the evaluation
        assert not (tmp_path / "new").exists() and not (tmp_path / "calibration-report").exists(), argv


def test_cuda_on_a_machine_without_it_is_a_clear_error(user_tensors, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    acts, _ = user_tensors
    assert main(["calibrate", "--activations", acts, "--groups", "2", "--device", "cuda",
                 "--out", str(tmp_path / "r")]) == 2
    assert "device='cuda' was asked for" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_run_that_fails_midway_removes_only_what_it_created(user_tensors, tmp_path, monkeypatch):
    acts, _ = user_tensors

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C during the evaluation

    monkeypatch.setattr(evaluation, "evaluate", crash)
    fresh = tmp_path / "a" / "b"
    with pytest.raises(KeyboardInterrupt):
        calibrate_command.run(acts, 2, None, str(fresh), progress=False)
    assert not (tmp_path / "a").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(KeyboardInterrupt):
        calibrate_command.run(acts, 2, None, str(mine), progress=False)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_stand_in_weights_are_announced_on_the_console_and_the_rule_is_stated_once(user_tensors, tmp_path, capsys):
    acts, weights = user_tensors
    out = tmp_path / "report"
    assert main(["calibrate", "--activations", acts, "--groups", "2", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "random Gaussian stand-in weights (G=2, K=128, N=512)" in warnings[0]
    assert (out / "calibration.md").read_text().count(evaluation.RULE) == 1
    assert main(["calibrate", "--activations", acts, "--weights", weights, "--groups", "2", "--out",
                 str(tmp_path / "with-weights")]) == 0
    assert "warning:" not in capsys.readouterr().err


def test_a_previous_report_is_never_overwritten_without_force(user_tensors, tmp_path, capsys):
    acts, _ = user_tensors
    out = tmp_path / "report"
    out.mkdir()
    (out / "calibration.json").write_text("an earlier report")
    (out / "notes.txt").write_text("mine")
    argv = ["calibrate", "--activations", acts, "--groups", "2", "--out", str(out)]
    start = time.perf_counter()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "already holds calibration.json" in err and "--force" in err
    assert time.perf_counter() - start < 10  # refused before the evaluation
    assert sorted(p.name for p in out.iterdir()) == ["calibration.json", "notes.txt"]
    assert (out / "calibration.json").read_text() == "an earlier report"
    assert main([*argv, "--force"]) == 0
    assert strict_json((out / "calibration.json").read_text())["rule"] == evaluation.RULE
    assert (out / "notes.txt").read_text() == "mine"


def test_calibrate_help_describes_the_command_and_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["calibrate", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "Run every calibration recipe" in text and "stand-in weights" in text
    helps, name = {}, None
    for line in text.split("options:")[1].splitlines():
        option = re.match(r"^  (--[a-z-]+)(?: [A-Z_]+)?(?:\s{2,}(.*))?$", line)
        if option:
            name = option.group(1)
            helps[name] = option.group(2) or ""
        elif name and line.startswith(" " * 20):  # the help wrapped onto the next lines
            helps[name] += line.strip()
    documented = {name for name, help_text in helps.items() if help_text}
    assert documented >= {"--activations", "--activations-key", "--weights", "--weights-key", "--groups", "--out",
                          "--force", "--device", "--transforms", "--head-dim"}, documented


def test_transforms_add_their_rows_a_transform_column_and_the_cost_rule(user_tensors, tmp_path, capsys):
    acts, weights = user_tensors  # (T, H, D) = (160, 4, 64) in 2 groups: D = 64, K = 128
    out = tmp_path / "report"
    assert main(["calibrate", "--activations", acts, "--weights", weights, "--groups", "2", "--out", str(out),
                 "--transforms"]) == 0
    captured = capsys.readouterr()
    data = strict_json((out / "calibration.json").read_text())
    usable, _ = calibrate_transforms.available_transforms(64, 128)
    assert data["rule"] == calibrate_transforms.RULE and data["transforms"]["head_dim"] == 64
    assert data["transforms"]["evaluated"] == [t.label for t in usable] and len(usable) == 8  # all but hadamard 128
    rows = [(r["transform"], r["recipe"], r["mode"]) for r in data["results"]]
    assert rows[-2 * len(usable):] == [(t.label, recipe, mode) for t in usable
                                       for recipe, mode in calibrate_transforms.TRANSFORM_MODES]
    assert {r["transform"] for r in data["results"][: -2 * len(usable)]} == {"none"}
    notes = [line for line in captured.err.splitlines() if "note:" in line]
    assert any(line.startswith("nvfp4lab calibrate: note: skipped hadamard 128:") for line in notes), notes
    recommended = data["recommendation"]
    for text in (captured.out, (out / "calibration.md").read_text()):
        assert "| recipe | mode | transform |" in text and "| max | shared static | hadamard head |" in text
        assert "| dynamic | per_group dynamic | smoothquant (α = " in text
        marked = [line for line in text.splitlines() if "◀ recommended" in line]
        assert len(marked) == 1 and marked[0].startswith(
            f"| {recommended['recipe']} | {recommended['mode']} | {recommended['transform']}")
    assert "Transforms (head dimension D = 64): hadamard 16, hadamard head, smoothquant" in (
        out / "calibration.md").read_text()


def layer_files(tmp_path, outliers: bool):
    """(T, H, D) = (128, 4, 64) activations in 2 groups and (G, K, N) = (2, 128, 64) weights;
    with ``outliers``, 1/16 of the channels (the same in every token) are 30× the others."""
    g = torch.Generator().manual_seed(0)
    o = torch.randn(128, 4, 64, generator=g)
    if outliers:
        scale = torch.ones(4 * 64)
        scale[torch.randperm(4 * 64, generator=g)[:16]] = 30.0
        o = o * scale.view(4, 64)
    w = torch.randn(2, 128, 64, generator=g) / 128**0.5
    name = "outliers" if outliers else "gaussian"
    return write(tmp_path / f"{name}.safetensors", o=o), write(tmp_path / f"{name}_w.safetensors", w=w)


def best(rows, cost):
    return max(r["worst_group_sqnr_db"] for r in rows if r["cost"] == cost and r["mode"] != "-"
               and r["clipped_fraction"] == 0)


@pytest.mark.parametrize("outliers", [False, True], ids=["gaussian: plain wins", "outliers: a transform wins"])
def test_a_transform_is_recommended_only_when_it_beats_the_cheaper_rows_by_the_margin(outliers, tmp_path, capsys):
    acts, weights = layer_files(tmp_path, outliers)
    out = tmp_path / "report"
    assert main(["calibrate", "--activations", acts, "--weights", weights, "--groups", "2", "--out", str(out),
                 "--transforms"]) == 0
    printed = capsys.readouterr().out
    data = strict_json((out / "calibration.json").read_text())
    rows, recommended = data["results"], data["recommendation"]
    plain, weights_only, online = best(rows, 0), best(rows, 1), best(rows, 2)
    margin = calibrate_transforms.COSTLIER_MARGIN_DB
    if not outliers:  # the premise: no transform beats the plain rows by the margin
        assert max(weights_only, online) < plain + margin
        assert recommended["transform"] == "none" and "Deploy:" not in recommended["why"]
        return
    # The premise: per-channel outliers make an activation transform (SmoothQuant: its α moves the outlier
    # channels into the weights) beat every cheaper row by more than the margin.
    assert online > max(plain, weights_only) + margin, (plain, weights_only, online)
    chosen = [r for r in rows if (r["transform"], r["recipe"], r["mode"]) ==
              (recommended["transform"], recommended["recipe"], recommended["mode"])]
    assert len(chosen) == 1 and chosen[0]["cost"] == 2
    assert chosen[0]["worst_group_sqnr_db"] >= max(plain, weights_only) + margin
    assert f"after the transform {recommended['transform']}." in printed
    assert "online in the quantizer" in recommended["why"] and "no projection to fold it into in DeepSeek V4" in printed


def test_head_dim_errors_are_one_clear_line_before_any_work(user_tensors, tmp_path, monkeypatch, capsys):
    acts, _ = user_tensors  # (T, H, D) = (160, 4, 64)
    packed = write(tmp_path / "packed.safetensors", a=torch.randn(100, 2, 64))  # (T, G, K), K = 64
    cases = [
        (["--activations", acts, "--groups", "2", "--transforms", "--head-dim", "0"], "--head-dim must be a positive"),
        (["--activations", acts, "--groups", "2", "--transforms", "--head-dim", "-64"], "got -64"),
        (["--activations", packed, "--groups", "2", "--transforms", "--head-dim", "48"],
         "--head-dim 48 does not divide K = 64 of the (T, G, K) activations (100, 2, 64)"),
        (["--activations", acts, "--groups", "2", "--transforms", "--head-dim", "32"],
         "--head-dim 32 contradicts the activations' (T, H, D) shape (160, 4, 64): D = 64"),
        (["--activations", acts, "--groups", "2", "--head-dim", "64"], "--head-dim 64 is only used by --transforms"),
    ]
    monkeypatch.chdir(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("the evaluation started")

    monkeypatch.setattr(evaluation, "evaluate", refuse)
    for argv, message in cases:
        out = tmp_path / "new" / "report"
        start = time.perf_counter()
        assert main(["calibrate", *argv, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert time.perf_counter() - start < 10, argv
        assert not (tmp_path / "new").exists(), argv
