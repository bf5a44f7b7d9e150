# %% [markdown]
# # 7. Real decoder LMs: what each recipe does to the model, with 95 % intervals
#
# Real pretrained decoder LMs read from GGUF files that install from PyPI and run in plain torch
# (`nvfp4lab.models`; logits equal transformers'): fast mode SmolLM2-135M-Instruct (Llama, 30
# layers, 9 heads of 64 → 3 groups of 3 heads, K = 192) on the King James Bible; full mode adds
# Gemma-3-270M and Qwen2.5-Coder-0.5B-Instruct and two more texts (source code, modern technical
# English). Every layer's attention output projection is replaced by each recipe at once; static
# scales are calibrated on one part of a text, everything is measured on the other part.
# KL is mean KL(bf16 ‖ recipe) of the next-token distribution (nats). **W4A4** rows re-quantize
# the file's weights to NVFP4; **W16A4** rows keep the weights as stored and quantize only the
# activations — the activation-scale question without the weights' error.
#
# Every number carries a 95 % interval from a **paired bootstrap over held-out windows**: a
# window is one sequence with its own context, every recipe runs on the same windows, so one
# resample of the windows moves all recipes together and a ratio of two recipes is judged on
# the same text. An ordering is a finding only when the ratio's interval excludes 1.
# Findings D01–D07.

# %% tags=["parameters"]
FAST = True
DATA_DIR = "data/generated/minilm"

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from nvfp4lab.models.evaluate import CROSS_TEXT, cached_evaluation, study_evaluations
from nvfp4lab.models.intervals import cross_ratio, row_intervals, sensitivity_intervals
from nvfp4lab.models.recommendation import recommend
from nvfp4lab.study.findings import by_id
from nvfp4lab.study.findings_decoder import spearman
from nvfp4lab.study.style import save_figure
from nvfp4lab.style import apply_style

apply_style()
evaluations = study_evaluations(FAST)
for e in evaluations:
    print(f"{e.model} on {e.text}: {e.architecture}, {e.heads} heads in {e.groups} groups, o_proj stored as "
          f"{e.weight_type}; {e.tokens} held-out predictions in {len(e.window_positions)} windows of {e.seq_len}, "
          f"{e.calibration_tokens} calibration tokens ({e.calibration_text})")


def table(e):
    """One row per recipe: KL, perplexity and top-1 with 95 % intervals, ratios to the best and to FP8."""
    intervals = row_intervals(e)
    records = []
    for r in e.rows:
        ci = intervals[r.label]
        records.append({"recipe": r.recipe, "mode": r.mode, "operands": r.operands, "KL": ci.kl.value,
                        "KL lo": ci.kl.low, "KL hi": ci.kl.high, "perplexity": ci.perplexity.value,
                        "top-1": ci.top1.value, "mean layer SQNR (dB)": r.mean_layer_sqnr_db,
                        "KL ÷ best": ci.ratio_to_best.percent() if ci.ratio_to_best else "",
                        "KL ÷ FP8": f"{ci.ratio_to_reference.value:.1f} [{ci.ratio_to_reference.low:.1f}, "
                                    f"{ci.ratio_to_reference.high:.1f}]" if ci.ratio_to_reference else ""})
    frame = pd.DataFrame(records)
    frame["row"] = frame["recipe"] + " | " + frame["mode"]
    return frame


# %% [markdown]
# ## The model-level table: KL, perplexity and top-1 with 95 % intervals

# %%
for e in evaluations:
    print(f"{e.model} — {e.text}")
    print(table(e).drop(columns="row").to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    rec = recommend(e)
    print(f"\nrecommended: {rec.row.label}. {rec.reason}\n")

# %% [markdown]
# ## KL of every NVFP4 recipe with its interval (W4A4 and W16A4), FP8 and W4A16 as lines
# Each bar is one recipe's interval on its own; two recipes are compared by the interval of
# their paired ratio (the table's "KL ÷ best"), which is much narrower: most of the spread
# between windows is shared by all recipes.

# %%
columns = min(3, len(evaluations))
rows_of_panels = -(-len(evaluations) // columns)
fig, axes = plt.subplots(rows_of_panels, columns, figsize=(7.5 * columns, 6.5 * rows_of_panels), squeeze=False)
for ax, e in zip(axes.flat, evaluations):
    frame = table(e)
    frame = frame[frame["operands"] != "-"]
    order = frame[frame["operands"] == "W4A4"].sort_values("KL")["row"].tolist()
    for operands, offset, colour in (("W4A4", -0.15, "C0"), ("W16A4", 0.15, "C1")):
        if operands not in set(frame["operands"]):  # full mode keeps W16A4 rows for the KJV only
            continue
        part = frame[frame["operands"] == operands].set_index("row").loc[order]
        y = [i + offset for i in range(len(order))]
        ax.errorbar(part["KL"], y, xerr=[part["KL"] - part["KL lo"], part["KL hi"] - part["KL"]], fmt="o", ms=4,
                    capsize=2, color=colour, label=operands)
    ax.set_yticks(range(len(order)), order, fontsize=7)
    ax.invert_yaxis()
    for name, style in (("fp8 (1x128 act, 128x128 wt)", "--"), ("w4a16", ":")):
        ax.axvline(e.row(name).kl, ls=style, color="0.2", label=name)
    ax.set(xlabel="mean KL(bf16 ‖ recipe) on held-out text (nats), 95 % interval of each recipe alone",
           title=f"{e.model} — {e.text} ({e.tokens} predictions)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
for ax in axes.flat[len(evaluations):]:
    ax.set_visible(False)
save_figure(fig, "07_model_kl")

# %% [markdown]
# ## Group magnitudes per layer: how far apart are the groups?

# %%
fig, ax = plt.subplots(figsize=(8, 3.5))
for e in evaluations:
    if e.text == evaluations[0].text:
        ax.plot(range(len(e.group_spread_decades)), e.group_spread_decades, marker="o", label=e.model)
ax.set(xlabel="layer", ylabel="max / min group amax (decades)",
       title=f"spread of the groups' activation amax (calibration tokens, {evaluations[0].text})")
ax.legend()
save_figure(fig, "07_group_spread")

# %% [markdown]
# ## Does the SQNR of the projection output rank recipes the way the model does?
# Error bars: the KL's 95 % interval. Where the intervals overlap, neither measure can order the recipes.

# %%
first = [e for e in evaluations if e.text == evaluations[0].text]
fig, axes = plt.subplots(1, len(first), figsize=(7 * len(first), 4.5), squeeze=False)
for ax, e in zip(axes[0], first):
    frame = table(e)
    for operands, colour in (("W4A4", "C0"), ("W16A4", "C1")):
        part = frame[frame["operands"] == operands]
        rho = spearman(list(part["mean layer SQNR (dB)"]), list(-part["KL"]))
        ax.errorbar(part["mean layer SQNR (dB)"], part["KL"], yerr=[part["KL"] - part["KL lo"], part["KL hi"] - part["KL"]],
                    fmt="o", ms=4, capsize=2, color=colour, label=f"{operands}: Spearman(SQNR, −KL) = {rho:.2f}")
    ax.set(xlabel="mean over layers of the o_proj output SQNR (dB)", ylabel="mean KL(bf16 ‖ recipe) (nats)",
           title=e.model)
    ax.legend(fontsize=7, loc="upper right")
save_figure(fig, "07_sqnr_vs_kl")

# %% [markdown]
# ## Which layers are sensitive, and what do their activations look like?

# %%
fig, axes = plt.subplots(3, len(first), figsize=(8 * len(first), 8), squeeze=False, sharex="col")
for column, e in enumerate(first):
    layers = list(range(len(e.sensitivity_kl)))
    ci = sensitivity_intervals(e)
    axes[0][column].bar(layers, [c.value for c in ci], color="C0", label=e.sensitivity_recipe,
                        yerr=[[c.value - c.low for c in ci], [c.high - c.value for c in ci]], capsize=2)
    axes[0][column].set(ylabel="KL, this layer only (nats)", title=f"{e.model}: one layer quantized at a time")
    axes[0][column].legend(fontsize=7)
    axes[1][column].bar(layers, e.outlier_token_ratio, color="C1", label="largest / median token amax")
    axes[1][column].set(ylabel="outlier-token ratio")
    axes[1][column].legend(fontsize=7)
    axes[2][column].plot(layers, e.first_token_attention, marker="o", color="C2", label="attention on position 0")
    axes[2][column].plot(layers, e.outliers_at_first_position, marker="s", color="C3",
                         label="top-1% amax tokens at position 0")
    axes[2][column].set(xlabel="layer", ylabel="fraction")
    axes[2][column].legend(fontsize=7)
save_figure(fig, "07_sensitivity")

# %% [markdown]
# ## Per-layer SQNR of the projection output for a few recipes

# %%
picks = [("dynamic", "per_group dynamic", "W4A4"), ("max", "shared static", "W4A4"),
         ("percentile 99.99", "per_group static", "W4A4"), ("dynamic + four-over-six", "per_group dynamic", "W4A4"),
         ("dynamic", "per_group dynamic", "W16A4"), ("w4a16", "-", None), ("fp8 (1x128 act, 128x128 wt)", "-", None)]
fig, axes = plt.subplots(1, len(first), figsize=(8 * len(first), 4), squeeze=False)
for ax, e in zip(axes[0], first):
    for recipe, mode, operands in picks:
        row = e.row(recipe, mode, operands)
        ax.plot(row.layer_sqnr_db, marker=".", label=row.label)
    ax.set(xlabel="layer", ylabel="o_proj output SQNR (dB)", title=f"{e.model}: per-layer SQNR, all layers quantized")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
save_figure(fig, "07_layer_sqnr")

# %% [markdown]
# ## Static scales calibrated on another text (full mode)
# The case that decides static vs dynamic in serving: scales calibrated on the KJV, evaluated on
# code and on technical English, against scales calibrated on each text's own calibration part
# (the same held-out windows, so the ratio is paired).

# %%
if not FAST:
    records = []
    for config in CROSS_TEXT:
        crossed = cached_evaluation(**config)
        own = cached_evaluation(**{**config, "calibration_text": config["text"]})  # the in-text evaluation of FULL
        for r in crossed.rows:
            if r.mode.endswith("static") and r.operands == "W4A4":
                ci = cross_ratio(crossed, own, r.label)
                records.append({"model": crossed.model, "text": crossed.text, "row": r.label, "ratio": ci.value,
                                "lo": ci.low, "hi": ci.high})
    cross = pd.DataFrame(records)
    print(cross.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    grid = sns.FacetGrid(cross, col="model", row="text", height=4.5, aspect=1.2, sharex=True)
    for (text, model), ax in grid.axes_dict.items():
        part = cross[(cross["text"] == text) & (cross["model"] == model)]
        ax.errorbar(part["ratio"], range(len(part)), xerr=[part["ratio"] - part["lo"], part["hi"] - part["ratio"]],
                    fmt="o", ms=3, capsize=2)
        ax.set_yticks(range(len(part)), part["row"], fontsize=6)
        ax.axvline(1, color="0.3", ls="--")
    grid.set_axis_labels("KL ratio: KJV-calibrated / own-text-calibrated static scales (95 %)", "")
    save_figure(grid.figure, "07_cross_text")

# %% [markdown]
# ## The findings

# %%
for finding_id in ("D01-shared-vs-per-group-on-decoders", "D02-static-vs-dynamic-on-decoders",
                   "D03-percentile-on-decoders", "D04-four-over-six-in-kl",
                   "D05-sqnr-ranks-recipes-like-kl", "D06-sensitive-layers", "D07-nvfp4-vs-fp8-model-level"):
    finding = by_id(finding_id)
    numbers = finding.compute(FAST, DATA_DIR)
    print(finding.id, "->", "holds" if finding.holds(numbers) else "DOES NOT HOLD")
    print("   ", finding.statement(numbers))
