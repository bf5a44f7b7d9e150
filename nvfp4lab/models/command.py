"""``nvfp4lab calibrate-model``: every recipe on a real decoder LM, judged on the model's
next-token predictions on held-out text, with 95 % intervals, and a recommendation that says
what the data can resolve.

``run(gguf, text, groups, tokens, out)``: ``gguf`` a GGUF file (Llama, Qwen2 or Gemma 3; default
the packaged SmolLM2-135M-Instruct), ``text`` a UTF-8 text file (default the packaged KJV; a
user's text is split in two halves, the first calibrates, the second is held out), ``groups``
the head groups (default :func:`default_groups`), ``tokens`` the held-out tokens (default
:data:`DEFAULT_TOKENS`; the calibration part uses as many). Writes ``model_calibration.md``,
``model_calibration.json`` (strict JSON; every row carries ``kl_ci95`` and
``kl_ratio_to_best_ci95``, ``recommended`` carries ``equivalent``) and
``model_calibration.png`` into ``out``. Every input is checked before the long work, and a
failed run leaves the output folder as it found it (:class:`nvfp4lab.output_folder.OutputFolder`).
``transforms``: also evaluate the transform rows (rotations, smoothing, weight recipes:
:func:`nvfp4lab.models.projection.transform_recipes`), which the recommendation then
considers with their deployment cost. ``export_dir``: also write the recommended recipe, as a serving stack can hold it
(:func:`served_row`), as a checkpoint in ``fmt`` (:mod:`nvfp4lab.export`).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from nvfp4lab.output_folder import OutputFolder

MIN_TOKENS = 16
#: Held-out tokens by default. The paired window bootstrap on SmolLM2 (fast study, 1008
#: predictions in 16 windows of 64) measured a spread of the log KL ratio between two NVFP4
#: recipes of about 0.05, so a ratio of 1.10 is resolved (interval excluding 1) at about
#: 1008·(1.96·0.05 / ln 1.1)² ≈ 1,100 tokens: 1024 tokens resolve ~10 % KL differences, 256
#: only ~20 % ones (tests/test_model_evaluation.py recomputes this from the fast evaluation).
DEFAULT_TOKENS = 1024
SEQ_LEN = 64  # windows of 64 tokens: 16 windows (bootstrap units) at the default size
BATCH_SEQUENCES = 4  # windows per forward pass (results do not depend on it: dynamic scales are per window)


def default_groups(heads: int) -> int:
    """3 heads a group when they divide evenly (SmolLM2: 9 → 3), else 2 (Qwen2.5-0.5B: 14 → 7),
    else 1."""
    for per_group in (3, 2, 1):
        if heads % per_group == 0:
            return heads // per_group
    return heads


def plot(evaluation, recommendation=None) -> bytes:
    """The NVFP4 rows' held-out KL with 95 % intervals (W4A4 and W16A4 side by side, the
    recommended row starred), FP8 and W4A16 as lines; returns the PNG (nothing is written)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nvfp4lab.models.intervals import row_intervals
    from nvfp4lab.style import apply_style

    apply_style()
    intervals = row_intervals(evaluation)
    rows = sorted((r for r in evaluation.rows if r.operands == "W4A4"), key=lambda r: r.kl)
    fig, ax = plt.subplots(figsize=(11, 0.34 * len(rows) + 1.6))
    chosen = recommendation.row.label if recommendation is not None else None
    equivalent = set(recommendation.equivalent) if recommendation is not None else set()
    for y, r in enumerate(rows):
        for operands, offset, colour in (("W4A4", -0.15, "C0"), ("W16A4", 0.15, "C1")):
            label = r.label if operands == "W4A4" else f"{r.label} | W16A4"
            if label not in intervals:
                continue
            ci = intervals[label].kl
            ax.errorbar(ci.value, y + offset, xerr=[[ci.value - ci.low], [ci.high - ci.value]], fmt="o", ms=4,
                        color=colour, capsize=2, label=operands if y == 0 else None)
    names = [("★ " if r.label == chosen else "") + r.label + (" (≈ best)" if r.label in equivalent else "")
             for r in rows]
    ax.set_yticks(range(len(rows)), names, fontsize=8)
    for tick in ax.get_yticklabels():
        if tick.get_text().startswith("★"):
            tick.set_fontweight("bold")
    ax.invert_yaxis()
    for r in evaluation.rows:
        if r.mode == "-" and r.recipe != "bf16":
            ax.axvline(r.kl, ls=":" if r.recipe == "w4a16" else "--", lw=1.2, color="black", label=r.recipe)
    ax.set_xlabel("mean KL(bf16 ‖ quantized) of the next-token distribution on held-out text (nats), 95 % interval")
    ax.set_title(f"{evaluation.model}: every layer's o_proj replaced ({evaluation.groups} groups, "
                 f"{evaluation.tokens} held-out predictions in {len(evaluation.window_positions)} windows)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), title="operands / baselines")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def _ci(interval, digits: int = 4) -> str:
    return f"{interval.value:.{digits}f} [{interval.low:.{digits}f}, {interval.high:.{digits}f}]"


def markdown(evaluation, recommendation, gguf: str, text: str) -> str:
    from nvfp4lab.models.intervals import row_intervals, sensitivity_intervals

    intervals = row_intervals(evaluation)
    lines = ["| recipe | mode | transform | operands | perplexity | KL(bf16 ‖ q) (nats) | KL ÷ best | KL ÷ FP8 | "
             "top-1 agreement | mean layer SQNR (dB) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in evaluation.rows:
        ci = intervals[r.label]
        to_best = ci.ratio_to_best.percent() if ci.ratio_to_best is not None else ""
        to_fp8 = (f"{ci.ratio_to_reference.value:.1f}× [{ci.ratio_to_reference.low:.1f}, "
                  f"{ci.ratio_to_reference.high:.1f}]") if ci.ratio_to_reference is not None else ""
        transform = "" if r.mode == "-" else r.transform
        lines.append(f"| {r.recipe} | {r.mode} | {transform} | {r.operands} | {_ci(ci.perplexity, 3)} | {_ci(ci.kl)} | {to_best} | "
                     f"{to_fp8} | {_ci(ci.top1, 3)} | {r.mean_layer_sqnr_db:.2f} |")
    sensitivity = sensitivity_intervals(evaluation)
    ranked = sorted(range(len(sensitivity)), key=lambda i: -sensitivity[i].value)[:5]
    weights = evaluation.weight_type or "unknown type"
    return (f"# nvfp4lab calibrate-model\n\nmodel `{gguf}` ({evaluation.model}, {evaluation.architecture}, "
            f"{evaluation.heads} heads in {evaluation.groups} groups); text {text}; static scales calibrated on "
            f"{evaluation.calibration_tokens} tokens, evaluated on {evaluation.tokens} held-out predictions in "
            f"{len(evaluation.window_positions)} windows of {evaluation.seq_len}. The file stores the o_proj weights "
            f"as {weights}: W4A4 rows re-quantize them to NVFP4, W16A4 rows keep them as stored and quantize only the "
            "activations; the activations are real.\n\n" + _transform_note(evaluation) +
            "Intervals: 95 %, percentile bootstrap over the held-out windows (each window is one sequence with its "
            "own context; every recipe is measured on the same windows, so ratios are paired). KL ÷ best: change "
            "relative to the lowest-KL row of the same operands; an interval that includes 0 % is no resolved "
            "difference.\n\n"
            + "\n".join(lines)
            + f"\n\nActivation groups: the groups' amax differ by at most {max(evaluation.group_spread_decades):.2f} "
            f"decades in any layer (median {sorted(evaluation.group_spread_decades)[len(evaluation.group_spread_decades) // 2]:.2f}).\n\n"
            f"Most sensitive layers ({evaluation.sensitivity_recipe} on one layer only, KL in nats, 95 %): "
            + ", ".join(f"{i} ({_ci(sensitivity[i])})" for i in ranked)
            + f"\n\nRecommended: **{recommendation.row.recipe}** with **{recommendation.row.mode}** global activation "
            f"scales. {recommendation.reason}\n\nRule: {_rule()}.\n")


def _transform_note(evaluation) -> str:
    """What the transform rows are (``--transforms``), or how to get them."""
    if not any(r.transform != "none" for r in evaluation.rows):
        return ("Transforms (rotations, smoothing, GPTQ and other weight recipes) were not evaluated: "
                "`--transforms` adds them (about 1.5 minutes more for SmolLM2 at the default tokens on 2 cores).\n\n")
    alphas = sorted(evaluation.smoothing_alpha) or [float("nan")]
    return ("Transform rows: the transform is fitted per layer on the calibration tokens and composed with static "
            "shared max and per-group dynamic scales. A rotation (hadamard 16, hadamard head = one Hadamard per "
            f"head of {evaluation.head_dim}) or smoothquant (α searched per layer: median {alphas[len(alphas) // 2]:.1f}) "
            "is exact in real numbers and folds into v_proj and o_proj (free at inference); gptq, four-over-six "
            "weights, mse weights and 16x16 weights only change o_proj's NVFP4 weight bytes.\n\n")


def _rule() -> str:
    from nvfp4lab.models.recommendation import RULE

    return RULE


def record(evaluation, recommendation, gguf: str) -> dict:
    """The JSON record: every row with its numbers and 95 % intervals, and the recommendation."""
    from nvfp4lab.models.intervals import row_intervals, sensitivity_intervals

    intervals = row_intervals(evaluation)

    def ratio(interval):
        return None if interval is None else {"value": interval.value, "ci95": interval.as_list()}

    return {
        "model": evaluation.model, "gguf": gguf, "architecture": evaluation.architecture,
        "o_proj_weight_type": evaluation.weight_type, "groups": evaluation.groups, "tokens": evaluation.tokens,
        "windows": len(evaluation.window_positions), "seq_len": evaluation.seq_len,
        "calibration_tokens": evaluation.calibration_tokens,
        "interval_method": "95 % percentile bootstrap over held-out windows (paired across recipes), 4000 resamples",
        "bf16": {"perplexity": evaluation.row("bf16").perplexity},
        "group_spread_decades": evaluation.group_spread_decades,
        "recipes": [{"recipe": r.recipe, "mode": r.mode, "transform": r.transform, "operands": r.operands,
                     "perplexity": r.perplexity,
                     "perplexity_ci95": intervals[r.label].perplexity.as_list(), "kl": r.kl,
                     "kl_ci95": intervals[r.label].kl.as_list(),
                     "kl_ratio_to_best": intervals[r.label].ratio_to_best.value
                     if intervals[r.label].ratio_to_best else None,
                     "kl_ratio_to_best_ci95": intervals[r.label].ratio_to_best.as_list()
                     if intervals[r.label].ratio_to_best else None,
                     "kl_ratio_to_fp8": ratio(intervals[r.label].ratio_to_reference),
                     "top1_agreement": r.top1_agreement, "top1_agreement_ci95": intervals[r.label].top1.as_list(),
                     "layer_sqnr_db": r.layer_sqnr_db} for r in evaluation.rows],
        "sensitivity": {"recipe": evaluation.sensitivity_recipe, "kl_per_layer": evaluation.sensitivity_kl,
                        "kl_per_layer_ci95": [i.as_list() for i in sensitivity_intervals(evaluation)]},
        "recommended": {"recipe": recommendation.row.recipe, "mode": recommendation.row.mode,
                        "transform": recommendation.row.transform,
                        "equivalent": recommendation.equivalent, "best": recommendation.best.label,
                        "kl_ratio_to_best_ci95": recommendation.ratio.as_list(),
                        "top_resolved": recommendation.top_resolved, "runner_up": recommendation.runner_up,
                        "runner_up_ratio_ci95": recommendation.runner_up_ratio.as_list(),
                        "tokens_to_resolve_top": recommendation.tokens_to_resolve
                        if recommendation.tokens_to_resolve < 1e12 else None,
                        "reason": recommendation.reason, "rule": _rule()},
    }


def _text_parts(text: str | None) -> tuple[tuple[str, str], str, tuple[str, str]]:
    """The (calibration, held-out) texts, their description and their names."""
    from nvfp4lab.models import corpus

    if text is None:
        return (corpus.calibration_text(), corpus.held_out_text()), \
            f"{corpus.SOURCE} (even chapters calibrate, odd chapters held out)", ("kjv", "kjv")
    text_path = Path(text)
    if not text_path.is_file():
        raise ValueError(f"text file not found: {text_path}")
    try:
        parts = corpus.split_text(text_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{text_path} is not UTF-8 text") from None
    return parts, f"`{text_path}` (first half calibrates, second half held out)", (text_path.name, text_path.name)


def served_row(evaluation, recommendation):
    """The row a serving checkpoint can hold for the recommendation: the recommended row
    itself when it travels (static, max-6 activation blocks, :mod:`nvfp4lab.export.recipes`;
    a per-group static row travels as the max over its groups, i.e. as its shared row),
    otherwise the lowest-KL W4A4 row that travels. Returns ``(row, why)``."""
    from nvfp4lab.export.recipes import servable_recipe

    def travels(row) -> bool:
        try:
            servable_recipe(row.label)
        except ValueError:
            return False
        return row.mode == "shared static" and row.transform == "none"

    chosen = recommendation.row
    as_shared = next((r for r in evaluation.rows if (r.recipe, r.mode, r.operands, r.transform) ==
                      (chosen.recipe, "shared static", "W4A4", chosen.transform)), None)
    if travels(chosen):
        return chosen, "the recommended row travels as it is"
    if as_shared is not None and travels(as_shared):
        return as_shared, (f"the recommended {chosen.mode} scales travel as one scale per o_proj (the max over the "
                           "groups): the file holds the shared row")
    row = min((r for r in evaluation.rows if r.operands == "W4A4" and travels(r)), key=lambda r: r.kl)
    if chosen.transform != "none":
        return row, (f"the recommended row's transform ({chosen.transform}) is not written by nvfp4lab's exporter (it "
                     "changes v_proj or o_proj's weight bytes): the file holds the lowest-KL row without a transform "
                     "that a checkpoint can hold")
    return row, (f"the recommended row ({chosen.label}) cannot travel (a serving checkpoint holds static scales and "
                 "max-6 activation blocks): the file holds the lowest-KL row that can")


def export(evaluation, recommendation, path: Path, export_dir: str, fmt: str) -> str:
    """Write the served row (:func:`served_row`) as a serving checkpoint; returns the lines
    that say what the file holds and what it costs, with the measured KL and its interval."""
    from nvfp4lab.export.command import summary
    from nvfp4lab.export.hf_model import export_decoder
    from nvfp4lab.models.intervals import paired_ratio, row_intervals

    row, why = served_row(evaluation, recommendation)
    scales = {layer: s.detach().float().cpu() for layer, s in evaluation.static_scales[row.label].items()}
    record = export_decoder(path, export_dir, fmt, row.label, scales, activation_scale="shared",
                            provenance={"calibration": {"text": evaluation.calibration_text,
                                                        "tokens": evaluation.calibration_tokens,
                                                        "groups": evaluation.groups, "recipe": row.label},
                                        "measured": {"kl": row.kl, "tokens": evaluation.tokens}})
    kl = row_intervals(evaluation)[row.label].kl
    measured = (f"  served as {row.label}: {why}; measured KL {kl.value:.4f} [{kl.low:.4f}, {kl.high:.4f}] nats on "
                f"{evaluation.tokens} held-out predictions")
    if row.label != recommendation.row.label:
        measured += f", {paired_ratio(evaluation, row.label, recommendation.row.label).percent()} relative to the " \
                    "recommended row"
    return "\n".join([summary(record, export_dir, fmt), measured])


def run(gguf: str | None, text: str | None, groups: int | None, tokens: int, out: str,
        export_dir: str | None = None, fmt: str = "compressed-tensors", transforms: bool = False) -> int:
    from nvfp4lab.models import gguf_weights, packaged
    from nvfp4lab.models.evaluate import evaluate_model
    from nvfp4lab.models.projection import check_groups
    from nvfp4lab.models.recommendation import recommend

    with OutputFolder(out) as folder:  # a failed run leaves the folder as it found it
        if tokens < MIN_TOKENS:
            raise ValueError(f"--tokens must be at least {MIN_TOKENS}; got {tokens}")
        if export_dir is not None:  # before the long work: a non-empty folder or a bad format fails now
            from nvfp4lab.export.conventions import FORMATS, check_choice
            from nvfp4lab.export.writer import checked_out_dir

            check_choice(fmt, FORMATS, "--format")
            checked_out_dir(export_dir)
        path = Path(gguf) if gguf else packaged.smollm2_path()
        # a missing file, a file that is not GGUF, an unsupported architecture: clear errors here
        config = gguf_weights.config_of(gguf_weights.reader(path), path)
        groups = groups or default_groups(config.heads)
        check_groups(config.heads, groups)
        if export_dir is not None:  # a model the exporter cannot write fails before the long work
            from nvfp4lab.export.hf_model import check_architecture, check_o_proj, check_rope

            check_architecture(config, path)
            check_o_proj(config, path)
            check_rope(config, path)
        parts, text_label, names = _text_parts(text)
        size_mb = path.stat().st_size / 1e6
        name = packaged.display_name_of_path(path) or config.name
        print(f"calibrate-model: {name} ({config.layers} layers, {config.heads} heads in {groups} groups, "
              f"{size_mb:.0f} MB); loading the weights (about {max(1, round(size_mb / 40))} s per 40 MB on 2 cores), "
              f"then {tokens} held-out tokens × every recipe (progress below)", file=sys.stderr, flush=True)
        evaluation = evaluate_model(path, groups=groups, tokens=tokens, texts=parts, seq_len=SEQ_LEN,
                                    batch_sequences=BATCH_SEQUENCES, text_names=names,
                                    recipe_set="all" if transforms else "scales")  # too short a text fails here
        if len(evaluation.window_positions) < 2:
            raise ValueError(f"--tokens {tokens} gives {len(evaluation.window_positions)} window of {SEQ_LEN}: "
                             f"intervals need at least 2 (use --tokens ≥ {2 * SEQ_LEN})")
        recommendation = recommend(evaluation)
        report = markdown(evaluation, recommendation, str(path), text_label)
        folder.write("model_calibration.json", json.dumps(record(evaluation, recommendation, str(path)), indent=1,
                                                          allow_nan=False))
        folder.write("model_calibration.md", report)
        folder.write("model_calibration.png", plot(evaluation, recommendation))
    print(report)
    print(f"written: {folder.path / 'model_calibration.md'}, model_calibration.json, model_calibration.png")
    if export_dir is not None:
        print(export(evaluation, recommendation, path, export_dir, fmt))
    return 0
