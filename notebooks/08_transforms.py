# %% [markdown]
# # 8. Beyond the global scale: rotations, smoothing and weight-side recipes on real decoders
#
# Notebook 7 turns the smallest knob: the choice of the *global* activation scale. This one turns
# the field's larger ones on the same models, texts and windows, each composed with two
# global-scale recipes (static shared max scales — the cheapest to serve — and per-group dynamic
# scales):
#
# * **rotations**: a Hadamard matrix per head (size D) or per 16-element NVFP4 block (and per
#   128 elements where 128 divides D), `x' = x·R`, `W' = Rᵀ·W` (QuaRot, SpinQuant, MR-GPTQ);
# * **smoothing**: SmoothQuant's `x' = x·diag(s)⁻¹`, `W' = diag(s)·W` with `s = a^α / w^(1−α)`
#   per channel, α searched per layer on the calibration tokens;
# * **weight recipes**: GPTQ with NVFP4 block scales (Hessian of the calibration activations),
#   four-over-six on the weights only, an MSE search of the weights' global scale (ModelOpt's
#   `mse`), and 16×16 weight scales (NVIDIA's NVFP4 training recipe: W and Wᵀ share scales).
#
# Where each lives at inference: in a Llama/Qwen2/Gemma 3 decoder the attention output of head h
# is `o_h = P_h·V`, so a per-head rotation or per-channel scale folds into the **value projection**
# (and its inverse into `o_proj`'s weights) — nothing runs online (`tests/test_transform_folds.py`
# checks the folded decoder equals the unfolded one). Block size must divide D (a rotation that
# spans heads does not fold), smoothing scales must be shared by the query heads that read one KV
# head. Weight recipes change only the weight bytes. In DeepSeek V4 the values *are* the keys (one
# RMS-normed latent per token) and inverse RoPE is applied to `o` before `wo_a`: there is no value
# projection to fold into, so an activation transform would run online, fused into the quantizer
# of `o`. Findings D08–D11.

# %% tags=["parameters"]
FAST = True
DATA_DIR = "data/generated/minilm"

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from nvfp4lab.models.evaluate import transform_evaluations
from nvfp4lab.models.intervals import paired_ratio, row_intervals
from nvfp4lab.models.recommendation import recommend
from nvfp4lab.study.findings import by_id
from nvfp4lab.study.style import save_figure
from nvfp4lab.style import apply_style

apply_style()
evaluations = transform_evaluations(FAST)
for e in evaluations:
    alphas = sorted(e.smoothing_alpha)
    print(f"{e.model} on {e.text}: {e.heads} heads of {e.head_dim} in {e.groups} groups, o_proj stored as "
          f"{e.weight_type}; {e.tokens} held-out predictions in {len(e.window_positions)} windows; "
          f"smoothing α per layer: median {alphas[len(alphas) // 2]:.1f} (range {alphas[0]:.1f}–{alphas[-1]:.1f})")


def transform_table(e):
    """Per NVFP4 row: KL with its interval, the paired ratio to the same global-scale recipe without
    a transform, and to FP8."""
    intervals = row_intervals(e)
    records = []
    for r in e.rows:
        if r.operands != "W4A4":
            continue
        ci = intervals[r.label]
        plain = f"{r.recipe} | {r.mode}"
        to_plain = paired_ratio(e, r.label, plain) if r.transform != "none" else None
        records.append({"scales": plain, "transform": r.transform, "KL": ci.kl.value, "KL lo": ci.kl.low,
                        "KL hi": ci.kl.high, "÷ none": to_plain.value if to_plain else 1.0,
                        "÷ none lo": to_plain.low if to_plain else 1.0, "÷ none hi": to_plain.high if to_plain else 1.0,
                        "÷ FP8": ci.ratio_to_reference.value, "perplexity": ci.perplexity.value,
                        "mean layer SQNR (dB)": r.mean_layer_sqnr_db})
    return pd.DataFrame(records)


# %% [markdown]
# ## Each transform against none: paired KL ratios with 95 % intervals
# A ratio below 1 is a gain. The bar of a transform is resolved when it does not cross the line at 1.

# %%
frames = []
for e in evaluations:
    frame = transform_table(e)
    frame["model / text"] = f"{e.model} / {e.text}"
    frames.append(frame)
    print(f"{e.model} — {e.text} (FP8 KL {e.row('fp8 (1x128 act, 128x128 wt)').kl:.4f}, W4A16 {e.row('w4a16').kl:.4f})")
    print(frame.drop(columns="model / text").to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    rec = recommend(e)
    print(f"\nrecommended: {rec.row.label}. {rec.reason}\n")
ratios = pd.concat(frames)
ratios = ratios[ratios["transform"] != "none"]
panels = ratios["model / text"].unique()
columns = min(3, len(panels))
fig, axes = plt.subplots(-(-len(panels) // columns), columns, figsize=(6.5 * columns, 4.5 * -(-len(panels) // columns)),
                         squeeze=False, sharex=True)
transforms = list(dict.fromkeys(ratios["transform"]))
for ax, panel in zip(axes.flat, panels):
    part = ratios[ratios["model / text"] == panel]
    for offset, (scales, colour) in zip((-0.15, 0.15), (("max | shared static", "C0"),
                                                         ("dynamic | per_group dynamic", "C1"))):
        rows = part[part["scales"] == scales].set_index("transform").reindex(transforms)
        ax.errorbar(rows["÷ none"], [i + offset for i in range(len(transforms))],
                    xerr=[rows["÷ none"] - rows["÷ none lo"], rows["÷ none hi"] - rows["÷ none"]],
                    fmt="o", ms=4, capsize=2, color=colour, label=scales)
    ax.axvline(1, color="0.3", ls="--")
    ax.set_yticks(range(len(transforms)), transforms, fontsize=8)
    ax.invert_yaxis()
    ax.set(title=panel, xlabel="KL ratio to the same scales without the transform (95 %)")
axes.flat[0].legend(fontsize=7, loc="lower right")
for ax in axes.flat[len(panels):]:
    ax.set_visible(False)
save_figure(fig, "08_transform_kl")

# %% [markdown]
# ## Why: what each activation transform does to the activations
# Per layer, on the calibration tokens: the kurtosis of the activations (3 for a Gaussian), the mean
# over 16-element blocks of max|x| / mean|x| (what a block scale has to span), the fraction of
# elements NVFP4 codes as zero, and the activations' own NVFP4 SQNR (per-group dynamic scales).
# Rotations flatten the distribution (kurtosis and block max/mean fall) — and the SQNR does not rise:
# an NVFP4 block's largest element is coded exactly, so an outlier inside its own 16-element block
# costs its neighbours only what the block scale cannot resolve.

# %%
records = []
for e in evaluations:
    for activation, layers in e.activation_stats.items():
        for layer, stats in enumerate(layers):
            records.append({"model / text": f"{e.model} / {e.text}", "transform": activation, "layer": layer, **stats})
stats = pd.DataFrame(records)
summary = stats.groupby(["model / text", "transform"])[["kurtosis", "block_max_over_mean", "zero_code_fraction",
                                                          "sqnr_db"]].mean()
print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
first = stats[stats["model / text"] == stats["model / text"].iloc[0]]
fig, axes = plt.subplots(1, 4, figsize=(20, 4))
for ax, (column, label) in zip(axes, (("kurtosis", "kurtosis"), ("block_max_over_mean", "block max / mean |x|"),
                                      ("zero_code_fraction", "fraction of zero codes"),
                                      ("sqnr_db", "activation NVFP4 SQNR (dB)"))):
    sns.lineplot(first, x="layer", y=column, hue="transform", marker="o", ax=ax)
    ax.set(ylabel=label, title=label)
    if column == "kurtosis":
        ax.set_yscale("log")
    ax.legend(fontsize=7)
fig.suptitle(f"{first['model / text'].iloc[0]}: calibration activations per layer, by activation transform")
save_figure(fig, "08_activation_stats")

# %% [markdown]
# ## Per-layer SQNR of the projection output, by transform (per-group dynamic scales)

# %%
e = evaluations[0]
fig, ax = plt.subplots(figsize=(10, 4))
for r in e.rows:
    if r.operands == "W4A4" and r.mode == "per_group dynamic":
        ax.plot(r.layer_sqnr_db, marker=".", label=r.transform)
ax.set(xlabel="layer", ylabel="o_proj output SQNR (dB)", title=f"{e.model} — {e.text}: per-layer SQNR, all layers quantized")
ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
save_figure(fig, "08_layer_sqnr")

# %% [markdown]
# ## The findings, recomputed from the numbers above

# %%
for finding_id in ("D08-rotations-on-decoders", "D09-smoothing-on-decoders", "D10-weight-recipes-on-decoders",
                   "D11-transforms-vs-fp8-gap"):
    finding = by_id(finding_id)
    numbers = finding.compute(FAST, DATA_DIR)
    print(f"{finding_id} ({'holds' if finding.holds(numbers) else 'DOES NOT HOLD'}): {finding.statement(numbers)}\n")
