"""``nvfp4lab calibrate-model``: every recipe on a real decoder LM, judged on the model's
next-token predictions on held-out text, and a recommendation.

``run(gguf, text, groups, tokens, out)``: ``gguf`` a GGUF file (Llama, Qwen2 or Gemma 3; default
the packaged SmolLM2-135M), ``text`` a UTF-8 text file (default the packaged corpus; a user's
text is split in two halves, the first calibrates, the second is held out), ``groups`` the head
groups (default: 3 heads a group when the heads allow, else 1 head a group), ``tokens`` the
held-out tokens (the calibration part uses as many). Writes ``model_calibration.md``,
``model_calibration.json`` (strict JSON) and ``model_calibration.png`` into ``out``. Every input
is checked before the long work, and a failed run leaves the output folder as it found it
(:class:`nvfp4lab.output_folder.OutputFolder`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from nvfp4lab.output_folder import OutputFolder

MIN_TOKENS = 16


def default_groups(heads: int) -> int:
    """3 heads a group when they divide evenly (SmolLM2: 9 → 3), else 2, else 1."""
    for per_group in (3, 2, 1):
        if heads % per_group == 0:
            return heads // per_group
    return heads


def plot(evaluation, choice=None) -> bytes:
    """The NVFP4 W4A4 rows' held-out KL as bars (the recommended one starred), FP8 and W4A16
    as lines; returns the PNG (nothing is written here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from nvfp4lab.study.style import apply_style

    apply_style()
    rows = [r for r in evaluation.rows if r.mode != "-"]
    rows.sort(key=lambda r: r.kl)
    fig, ax = plt.subplots(figsize=(11, 0.3 * len(rows) + 1.4))
    def label(r):
        chosen = choice is not None and (r.recipe, r.mode) == (choice.recipe, choice.mode)
        return f"★ {r.recipe} | {r.mode} (recommended)" if chosen else f"{r.recipe} | {r.mode}"

    sns.barplot(x=[r.kl for r in rows], y=[label(r) for r in rows], hue=[r.mode for r in rows], dodge=False, ax=ax)
    for tick in ax.get_yticklabels():
        if tick.get_text().startswith("★"):
            tick.set_fontweight("bold")
    for r in evaluation.rows:
        if r.mode == "-" and r.recipe != "bf16":
            ax.axvline(r.kl, ls=":" if r.recipe == "w4a16" else "--", lw=1.2, color="black", label=r.recipe)
    ax.set_xlabel("mean KL(bf16 ‖ quantized) of the next-token distribution on held-out text (nats)")
    ax.set_ylabel("NVFP4 W4A4 recipe | global activation scales")
    ax.set_title(f"{evaluation.model}: every layer's o_proj replaced ({evaluation.groups} groups, "
                 f"{evaluation.tokens} held-out tokens)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), title="scales / baselines")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def markdown(evaluation, choice, why, gguf: str, text: str) -> str:
    lines = ["| recipe | mode | perplexity | KL(bf16 ‖ q) (nats) | top-1 agreement | mean layer SQNR (dB) |",
             "|---|---|---|---|---|---|"]
    for r in evaluation.rows:
        lines.append(f"| {r.recipe} | {r.mode} | {r.perplexity:.4f} | {r.kl:.5f} | {r.top1_agreement:.2%} | "
                     f"{r.mean_layer_sqnr_db:.2f} |")
    sensitive = sorted(range(len(evaluation.sensitivity_kl)), key=lambda i: -evaluation.sensitivity_kl[i])[:5]
    return (f"# nvfp4lab calibrate-model\n\nmodel `{gguf}` ({evaluation.model}, {evaluation.architecture}, "
            f"{evaluation.heads} heads in {evaluation.groups} groups); text {text}; static scales calibrated on "
            f"{evaluation.calibration_tokens} tokens, evaluated on {evaluation.tokens} held-out predictions "
            f"(windows of {evaluation.seq_len}). The file's weights are already 4-bit; the activations are real.\n\n"
            + "\n".join(lines)
            + f"\n\nMost sensitive layers ({evaluation.sensitivity_recipe} on one layer only, KL in nats): "
            + ", ".join(f"{i} ({evaluation.sensitivity_kl[i]:.4f})" for i in sensitive)
            + f"\n\nRecommended: **{choice.recipe}** with **{choice.mode}** global activation scales — {why}.\n")


def run(gguf: str | None, text: str | None, groups: int | None, tokens: int, out: str) -> int:
    from nvfp4lab.models import corpus, gguf_weights, packaged
    from nvfp4lab.models.evaluate import evaluate_model, recommend
    from nvfp4lab.models.projection import check_groups

    with OutputFolder(out) as folder:  # a failed run leaves the folder as it found it
        if tokens < MIN_TOKENS:
            raise ValueError(f"--tokens must be at least {MIN_TOKENS}; got {tokens}")
        path = Path(gguf) if gguf else packaged.smollm2_path()
        # a missing file, a file that is not GGUF, an unsupported architecture: clear errors here
        config = gguf_weights.config_of(gguf_weights.reader(path), path)
        groups = groups or default_groups(config.heads)
        check_groups(config.heads, groups)
        if text is not None:
            text_path = Path(text)
            if not text_path.is_file():
                raise ValueError(f"text file not found: {text_path}")
            try:
                parts = corpus.split_text(text_path.read_text(encoding="utf-8"))
            except UnicodeDecodeError:
                raise ValueError(f"{text_path} is not UTF-8 text") from None
            text_label = f"`{text_path}` (first half calibrates, second half held out)"
        else:
            parts = (corpus.calibration_text(), corpus.held_out_text())
            text_label = f"{corpus.SOURCE} (even chapters calibrate, odd chapters held out)"
        evaluation = evaluate_model(path, groups=groups, tokens=tokens, texts=parts)  # too short a text fails here
        choice, why = recommend(evaluation)
        record = {
            "model": evaluation.model, "gguf": str(path), "architecture": evaluation.architecture,
            "groups": evaluation.groups, "tokens": evaluation.tokens,
            "calibration_tokens": evaluation.calibration_tokens,
            "bf16": {"perplexity": evaluation.row("bf16").perplexity},
            "recipes": [{"recipe": r.recipe, "mode": r.mode, "perplexity": r.perplexity, "kl": r.kl,
                         "top1_agreement": r.top1_agreement, "layer_sqnr_db": r.layer_sqnr_db}
                        for r in evaluation.rows],
            "sensitivity": {"recipe": evaluation.sensitivity_recipe, "kl_per_layer": evaluation.sensitivity_kl},
            "recommended": {"recipe": choice.recipe, "mode": choice.mode, "reason": why,
                            "rule": "lowest held-out KL among NVFP4 W4A4 rows; static preferred within 10% of it"},
        }
        report = markdown(evaluation, choice, why, str(path), text_label)
        folder.write("model_calibration.json", json.dumps(record, indent=1, allow_nan=False))
        folder.write("model_calibration.md", report)
        folder.write("model_calibration.png", plot(evaluation, choice))
    print(report)
    print(f"written: {folder.path / 'model_calibration.md'}, model_calibration.json, model_calibration.png")
    return 0
