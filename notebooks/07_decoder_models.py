# %% [markdown]
# # 7. Real decoder LMs: what each recipe does to the model
#
# SmolLM2-135M (Llama, 30 layers, 9 heads of 64 → 3 groups of 3 heads, K = 192) and, in full
# mode, Gemma-3-270M (18 layers, 4 heads of 256 → 2 groups, K = 512), both read from the GGUF
# files that install from PyPI and run in plain torch (`nvfp4lab.models`; logits equal
# transformers' to 2e-3). Every layer's attention output projection is replaced by each recipe
# at once; static scales are calibrated on even chapters of the King James Bible, the numbers
# are measured on odd chapters. KL is mean KL(bf16 ‖ recipe) of the next-token distribution
# (nats). The GGUF weights are already 4-bit (Q4_1 / Q4_K); the activations are real.
# Findings D01–D07.

# %% tags=["parameters"]
FAST = True
DATA_DIR = "data/generated/minilm"

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from nvfp4lab.models.evaluate import recommend, study_evaluations
from nvfp4lab.study.findings import by_id
from nvfp4lab.study.findings_decoder import spearman
from nvfp4lab.study.style import apply_style, save_figure

apply_style()
evaluations = study_evaluations(FAST)
for e in evaluations:
    print(f"{e.model}: {e.architecture}, {e.heads} heads in {e.groups} groups, {e.tokens} held-out predictions, "
          f"{e.calibration_tokens} calibration tokens, windows of {e.seq_len}")


def table(e):
    frame = pd.DataFrame([{"recipe": r.recipe, "mode": r.mode, "perplexity": r.perplexity, "KL": r.kl,
                           "top-1": r.top1_agreement, "mean layer SQNR (dB)": r.mean_layer_sqnr_db} for r in e.rows])
    frame["row"] = frame["recipe"] + " | " + frame["mode"]
    return frame


# %% [markdown]
# ## The model-level table: perplexity, KL and top-1 agreement per recipe × mode

# %%
for e in evaluations:
    print(e.model)
    print(table(e).drop(columns="row").to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    choice, why = recommend(e)
    print(f"recommended: {choice.recipe} | {choice.mode}: {why}\n")

# %%
fig, axes = plt.subplots(1, len(evaluations), figsize=(8 * len(evaluations), 7), squeeze=False)
for ax, e in zip(axes[0], evaluations):
    frame = table(e)
    frame = frame[frame["mode"] != "-"].sort_values("KL")
    sns.barplot(frame, x="KL", y="row", hue="mode", dodge=False, ax=ax)
    for name, style in (("fp8 (1x128 act, 128x128 wt)", "--"), ("w4a16", ":")):
        ax.axvline(e.row(name).kl, ls=style, color="0.2", label=name)
    ax.set(xlabel="mean KL(bf16 ‖ recipe) on held-out text (nats)", ylabel="NVFP4 W4A4 recipe | scales",
           title=f"{e.model}: every o_proj replaced")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), title="scales / baselines")
save_figure(fig, "07_model_kl")

# %% [markdown]
# ## Group magnitudes per layer: how far apart are the groups?

# %%
fig, ax = plt.subplots(figsize=(8, 3.5))
for e in evaluations:
    ax.plot(range(len(e.group_spread_decades)), e.group_spread_decades, marker="o", label=e.model)
ax.set(xlabel="layer", ylabel="max / min group amax (decades)",
       title="spread of the groups' activation amax (calibration tokens)")
ax.legend()
save_figure(fig, "07_group_spread")

# %% [markdown]
# ## Does the SQNR of the projection output rank recipes the way the model does?

# %%
fig, axes = plt.subplots(1, len(evaluations), figsize=(7 * len(evaluations), 4.5), squeeze=False)
for ax, e in zip(axes[0], evaluations):
    frame = table(e)
    frame = frame[frame["mode"] != "-"]
    rho = spearman(list(frame["mean layer SQNR (dB)"]), list(-frame["KL"]))
    sns.scatterplot(frame, x="mean layer SQNR (dB)", y="KL", hue="mode", style="mode", s=70, ax=ax)
    ax.set(xlabel="mean over layers of the o_proj output SQNR (dB)", ylabel="mean KL(bf16 ‖ recipe) (nats)",
           title=f"{e.model}: Spearman(SQNR, −KL) = {rho:.2f}")
    ax.legend(fontsize=7, loc="upper right")
save_figure(fig, "07_sqnr_vs_kl")

# %% [markdown]
# ## Which layers are sensitive, and what do their activations look like?

# %%
fig, axes = plt.subplots(3, len(evaluations), figsize=(8 * len(evaluations), 8), squeeze=False, sharex="col")
for column, e in enumerate(evaluations):
    layers = list(range(len(e.sensitivity_kl)))
    axes[0][column].bar(layers, e.sensitivity_kl, color="C0", label=e.sensitivity_recipe)
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
picks = [("dynamic", "per_group dynamic"), ("max", "shared static"), ("percentile 99.99", "per_group static"),
         ("dynamic + four-over-six", "per_group dynamic"), ("w4a16", "-"), ("fp8 (1x128 act, 128x128 wt)", "-")]
fig, axes = plt.subplots(1, len(evaluations), figsize=(8 * len(evaluations), 4), squeeze=False)
for ax, e in zip(axes[0], evaluations):
    for recipe, mode in picks:
        ax.plot(e.row(recipe, mode).layer_sqnr_db, marker=".", label=f"{recipe} | {mode}")
    ax.set(xlabel="layer", ylabel="o_proj output SQNR (dB)", title=f"{e.model}: per-layer SQNR, all layers quantized")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
save_figure(fig, "07_layer_sqnr")

# %% [markdown]
# ## The findings

# %%
for finding_id in ("D01-shared-vs-per-group-on-decoders", "D02-static-vs-dynamic-on-decoders",
                   "D03-percentile-and-headroom-on-decoders", "D04-four-over-six-in-kl",
                   "D05-sqnr-ranks-recipes-like-kl", "D06-sensitive-layers", "D07-nvfp4-vs-fp8-model-level"):
    finding = by_id(finding_id)
    numbers = finding.compute(FAST, DATA_DIR)
    print(finding.id, "->", "holds" if finding.holds(numbers) else "DOES NOT HOLD")
    print("   ", finding.statement(numbers))
