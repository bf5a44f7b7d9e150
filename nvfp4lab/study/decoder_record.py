"""The full-mode decoder-LM record: three models × three texts (and the cross-text runs) on
a GPU, kept as raw per-window sums so that every interval, table and finding can be
recomputed from the file.

``python -m nvfp4lab.study.decoder_record run OUT.json [--gguf NAME=PATH ...]`` evaluates every
configuration of :data:`nvfp4lab.models.evaluate.FULL` and :data:`~nvfp4lab.models.evaluate.CROSS_TEXT`
(models found through :mod:`nvfp4lab.models.packaged` unless ``--gguf`` names the file) and
writes ``{"meta": {...}, "evaluations": [ModelEvaluation.as_dict() + "wall_s"]}``.

``python -m nvfp4lab.study.decoder_record render STEM`` turns ``STEM.json`` into ``STEM.md``:
per model and text the recipes' KL with 95 % intervals, their ratio to the best row and to FP8,
the recommendation, the cross-text table, and each decoder finding's claim re-checked on every
model × text (:data:`nvfp4lab.study.findings_decoder.NUMBERS_OF`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from nvfp4lab.study.paths import project_root


def _commit() -> str:
    """``NVFP4LAB_COMMIT`` (set where the tree was copied without its git history), else HEAD."""
    if os.environ.get("NVFP4LAB_COMMIT"):
        return os.environ["NVFP4LAB_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


#: Without a GPU: the three models on the three texts at 1024 held-out tokens (16 windows of 64),
#: W4A4 rows without the MSE searches, no W16A4 rows and no sensitivity (2 CPU cores: ~20 min).
SMALL = tuple({"model": model, "groups": groups, "tokens": 1024, "calibration_tokens": 512, "seq_len": 64,
               "include_mse": False, "text": text, "calibration_text": text, "batch_sequences": 4,
               "sensitivity": False, "activation_only": False}
              for text in ("kjv", "code", "prose") for model, groups in (("smollm2", 3), ("gemma3", 2),
                                                                        ("qwen2coder", 7)))


def configurations(small: bool) -> tuple[dict, ...]:
    """The full-mode configurations (a GPU), or :data:`SMALL` (a CPU)."""
    from nvfp4lab.models.evaluate import CROSS_TEXT, FULL

    return SMALL if small else (*FULL, *CROSS_TEXT)


def run(out: Path, ggufs: dict[str, str], small: bool = False, configs: tuple[dict, ...] | None = None) -> dict:
    """Evaluate every configuration (``configs``, default :func:`configurations`); write and
    return the record."""
    import torch

    from nvfp4lab.models.evaluate import evaluate_model, text_parts
    from nvfp4lab.models.packaged import display_name, path_of

    configs = configurations(small) if configs is None else configs
    device = "cuda" if torch.cuda.is_available() else "cpu"
    card = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    record = {"meta": {"card": card, "torch": torch.__version__, "commit": _commit(),
                       "date": datetime.date.today().isoformat(), "configurations": len(configs)},
              "evaluations": []}
    start = time.time()
    for config in configs:
        config = dict(config)
        model, text, calibration = config.pop("model"), config.pop("text"), config.pop("calibration_text")
        began = time.time()
        print(f"{model}: calibrated on {calibration}, held out {text} ...", file=sys.stderr, flush=True)
        try:
            evaluation = evaluate_model(ggufs.get(model) or path_of(model), texts=text_parts(calibration, text),
                                        text_names=(calibration, text), device=device, progress=False, **config)
        except (RuntimeError, ValueError, OSError) as error:  # the others still run; the record says what failed
            record["meta"].setdefault("failed", []).append(f"{model} / {calibration} -> {text}: {error}")
            print(f"  failed: {error}", file=sys.stderr, flush=True)
            continue
        evaluation.model = display_name(model)  # also when --gguf put the file elsewhere
        record["evaluations"].append({**evaluation.as_dict(), "wall_s": time.time() - began})
        record["meta"]["wall_s"] = time.time() - start
        out.write_text(json.dumps(record))  # after every configuration: a cut-off run keeps what it finished
        print(f"  done in {time.time() - began:.0f} s ({record['meta']['wall_s']:.0f} s in all)", file=sys.stderr,
              flush=True)
    return record


def evaluations(record: dict) -> list:
    from nvfp4lab.models.evaluate import from_dict

    return [from_dict({k: v for k, v in e.items() if k != "wall_s"}) for e in record["evaluations"]]


def _cell(text: str) -> str:
    """A markdown table cell: row labels hold ``|``."""
    return text.replace("|", "\\|")


def _table(e) -> list[str]:
    from nvfp4lab.models.intervals import row_intervals

    intervals = row_intervals(e)
    lines = ["| recipe | mode | operands | KL (nats), 95 % | KL ÷ best | KL ÷ FP8 | perplexity | top-1 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in e.rows:
        ci = intervals[r.label]
        best = ci.ratio_to_best.percent() if ci.ratio_to_best else ""
        fp8 = f"{ci.ratio_to_reference.value:.1f} [{ci.ratio_to_reference.low:.1f}, {ci.ratio_to_reference.high:.1f}]" \
            if ci.ratio_to_reference else ""
        lines.append(f"| {r.recipe} | {r.mode} | {r.operands} | {ci.kl.value:.4f} [{ci.kl.low:.4f}, {ci.kl.high:.4f}] "
                     f"| {best} | {fp8} | {r.perplexity:.3f} | {r.top1_agreement:.1%} |")
    return lines


def findings_matrix(evals, numbers_of_finding: dict) -> dict[str, dict[str, dict]]:
    """``{finding id: {"model / text": {"holds": bool, "numbers": {...}}}}``: each finding of
    ``numbers_of_finding`` (finding id → the function computing its numbers from one evaluation)
    recomputed and checked on every evaluation of ``evals``."""
    from nvfp4lab.study.findings import by_id

    matrix: dict[str, dict[str, dict]] = {}
    for finding_id, numbers_of in numbers_of_finding.items():
        finding = by_id(finding_id)
        for e in evals:
            numbers = {k: float(v) for k, v in numbers_of(e).items()}
            matrix.setdefault(finding_id, {})[f"{e.model} / {e.text}"] = {"holds": bool(finding.holds(numbers)),
                                                                          "numbers": numbers}
    return matrix


def render(record: dict) -> str:
    from nvfp4lab.models.intervals import cross_ratio
    from nvfp4lab.models.recommendation import recommend
    from nvfp4lab.study.findings import by_id

    meta = record["meta"]
    evals = evaluations(record)
    own = {(e.model, e.text): e for e in evals if e.calibration_text == e.text}
    first = evals[0]
    lines = [f"# Decoder-LM study in full mode: {len(own)} model × text evaluations, {meta['card']}", "",
             f"Computed on the lent {meta['card']} (torch {meta['torch']}) on {meta['date']} from commit "
             f"`{meta['commit'][:12]}` by `python -m nvfp4lab.study.decoder_record run` in {meta['wall_s']:.0f} s; "
             "`python -m nvfp4lab.study.decoder_record render` writes this file from the JSON beside it, which keeps "
             "every evaluation's per-window sums (tests/findings/test_decoder_record.py re-checks it).", "",
             f"Conditions: every layer's o_proj replaced at once, heads grouped like wo_a; {first.tokens} held-out "
             f"predictions per model and text in {len(first.window_positions)} windows of {first.seq_len} tokens; "
             f"static scales calibrated on {first.calibration_tokens} tokens of the text's other part. Intervals: "
             "95 %, paired percentile bootstrap over the held-out windows. W4A4 re-quantizes the files' weights to "
             "NVFP4, W16A4 keeps them as stored (o_proj: " + ", ".join(sorted({f"{e.model} {e.weight_type}"
                                                                               for e in own.values()})) + ")."]
    from nvfp4lab.study.findings_decoder import NUMBERS_OF

    # the findings need the W16A4 rows and the sensitivity, kept for the in-text KJV evaluations
    matrix = findings_matrix([e for e in evals if e.calibration_text == e.text and e.sensitivity_window_kl], NUMBERS_OF)
    columns = list(next(iter(matrix.values()))) if matrix else []
    if not columns:
        matrix = {}
    if columns:
        lines += ["", "## Findings D01–D07 re-checked on every model (KJV, where the W16A4 rows and the sensitivity "
                  "were kept)", "", "| finding | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    else:
        lines += ["", "This record keeps no W16A4 rows and no per-layer sensitivity, which findings D01–D07 need: "
                  "they are not re-checked here."]
    for finding_id, cells in matrix.items():
        lines.append(f"| {finding_id} | " + " | ".join("holds" if cells[c]["holds"] else "**does not hold**"
                                                      for c in columns) + " |")
    for finding_id, cells in matrix.items():
        key = f"{first.model} / {first.text}"
        lines += ["", f"**{finding_id}** ({key}): {by_id(finding_id).statement(cells[key]['numbers'])}"]
    lines += ["", "## Recommendations (`calibrate-model`'s rule)", "", "| model / text | recommended | equivalent to the "
              "best | best vs runner-up |", "|---|---|---|---|"]
    for (model, text), e in own.items():
        rec = recommend(e)
        lines.append(f"| {model} / {text} | {_cell(rec.row.label)} | {len(rec.equivalent)} of "
                     f"{sum(r.operands == 'W4A4' for r in e.rows)} | {rec.runner_up_ratio.percent()} |")
    crossed = [e for e in evals if e.calibration_text != e.text]
    if crossed:
        lines += ["", "## Static scales calibrated on another text", "",
                  "KL ratio of static scales calibrated on the KJV to scales calibrated on the held-out text's own "
                  "calibration part (same held-out windows; > 1: the other text's scales cost KL).", "",
                  "| model / text | row | ratio, 95 % |", "|---|---|---|"]
        for e in crossed:
            for r in e.rows:
                if r.mode.endswith("static") and r.operands == "W4A4":
                    ci = cross_ratio(e, own[(e.model, e.text)], r.label)
                    mark = " (resolved)" if ci.excludes(1.0) else ""
                    lines.append(f"| {e.model} / {e.text} | {_cell(r.label)} | {ci.percent()}{mark} |")
    for (model, text), e in own.items():
        lines += ["", f"## {model} — {text} ({e.architecture}, {e.heads} heads in {e.groups} groups, {e.tokens} "
                      f"predictions, {e.calibration_tokens} calibration tokens)", "", *_table(e)]
    return "\n".join(lines) + "\n"


def command_line(argv, prog: str, doc: str, configs, render_record, example: str, small_help: str) -> int:
    """The ``run OUT.json [--gguf NAME=PATH] [--small]`` / ``render STEM`` command line of a
    record module: ``configs(small)`` are the configurations it evaluates, ``render_record``
    turns a record into markdown."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    run_parser = verbs.add_parser("run", help="evaluate every full-mode configuration (a GPU: minutes)")
    run_parser.add_argument("out", help="the JSON record to write")
    run_parser.add_argument("--gguf", action="append", default=[], metavar="NAME=PATH",
                            help="a packaged model's GGUF file at another place (e.g. qwen2coder=/tmp/q.gguf)")
    run_parser.add_argument("--small", action="store_true", help=small_help)
    render_parser = verbs.add_parser("render", help="write STEM.md from STEM.json")
    render_parser.add_argument("stem", help=f"e.g. {example} (relative to the project)")
    args = parser.parse_args(argv)
    if args.verb == "run":
        ggufs = dict(item.split("=", 1) for item in args.gguf)
        run(Path(args.out), ggufs, configs=configs(args.small))
        print(f"wrote {args.out}")
        return 0
    stem = project_root() / args.stem
    if not stem.with_suffix(".json").is_file():
        print(f"{prog.split('.')[-1]} render: error: no record {stem.with_suffix('.json')}", file=sys.stderr)
        return 2
    record = json.loads(stem.with_suffix(".json").read_text())
    stem.with_suffix(".md").write_text(render_record(record))
    print(f"wrote {stem.with_suffix('.md')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_line(argv, "python -m nvfp4lab.study.decoder_record", __doc__, configurations, render,
                        "docs/decoders-full-H100",
                        "the CPU configurations: 1024 held-out tokens, W4A4 rows only (see SMALL)")


if __name__ == "__main__":
    sys.exit(main())
