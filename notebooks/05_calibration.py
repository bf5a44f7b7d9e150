# %% [markdown]
# # 5. Calibration: recipe against recipe on held-out data
#
# Every recipe of `nvfp4lab.calibration` and every scale mode, calibrated on one set of
# tokens and evaluated on another, on the synthetic V4 data (heavy-tailed, 0.2 % outlier
# tokens) and on real all-MiniLM-L6-v2 attention outputs. Findings F05, F07, F08, F09.

# %% tags=["parameters"]
FAST = True
DATA_DIR = "data/generated/minilm"

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from nvfp4lab import evaluation
from nvfp4lab.study import experiments
from nvfp4lab.study.findings import by_id
from nvfp4lab.study.paths import from_root
from nvfp4lab.study.plots import drift_bars
from nvfp4lab.study.style import save_figure
from nvfp4lab.style import apply_style

apply_style()
DATA_DIR = from_root(DATA_DIR)  # relative paths count from the project root, not the cwd
CLIPPING = {"no clipping": "C0", "clips held-out elements": "C3"}


def plot(results, title, name):
    """Worst-group z SQNR of every NVFP4 W4A4 row from 0 dB, clipping rows in red with
    their clipped fraction, the recommended row starred, the baselines as lines."""
    choice, _ = evaluation.recommend(results)
    frame = pd.DataFrame(evaluation.as_rows([r for r in results if r.mode != "-"]))
    frame["row"] = frame["recipe"] + " | " + frame["mode"]
    chosen = f"{choice.recipe} | {choice.mode}"
    frame.loc[frame["row"] == chosen, "row"] = "★ " + chosen + " (recommended)"
    frame["clipping"] = frame["clipped_fraction"].map(lambda f: "clips held-out elements" if f > 0 else "no clipping")
    frame = frame.sort_values("worst_group_sqnr_db", ascending=False)
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(frame) + 1.6))
    sns.barplot(frame, x="worst_group_sqnr_db", y="row", hue="clipping", hue_order=list(CLIPPING), palette=CLIPPING,
                dodge=False, ax=ax)
    for y, (db, fraction) in enumerate(zip(frame["worst_group_sqnr_db"], frame["clipped_fraction"])):
        note = f"{db:.2f} dB" + (f", clips {fraction:.1e}" if fraction > 0 else "")
        ax.text(db + 0.2, y, note, va="center", fontsize=8, bbox=dict(facecolor="white", edgecolor="none", pad=0.5))
    for r, style in zip([r for r in results if r.recipe in ("w4a16", "fp8 (1x128 act, 128x128 wt)")], (":", "--")):
        ax.axvline(r.worst_group_sqnr_db, color="grey", ls=style, label=f"{r.recipe}: {r.worst_group_sqnr_db:.1f} dB")
    for label in ax.get_yticklabels():
        if label.get_text().startswith("★"):
            label.set_fontweight("bold")
    top = max(frame["worst_group_sqnr_db"].max(), *(r.worst_group_sqnr_db for r in results if r.recipe != "bf16"))
    ax.set(xlim=(0, top * 1.25), xlabel="worst-group z SQNR on held-out tokens (dB, axis from 0)", ylabel="",
           title=title)
    handles, labels = ax.get_legend_handles_labels()  # the bars' clipping colours and the baselines
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1), title="worst-group z SQNR")
    save_figure(fig, name)


# %% [markdown]
# ## Synthetic V4 data

# %%
synthetic = experiments.recipe_table(FAST)
plot(synthetic, "Calibration recipes, synthetic V4 data (NVFP4 W4A4)", "05_recipes_synthetic")
print(evaluation.markdown_table(synthetic))
print("recommended:", evaluation.recommend(synthetic))

# %% [markdown]
# ## Real all-MiniLM-L6-v2 attention outputs (layer 5)

# %%
real = experiments.real_recipe_table(DATA_DIR)
plot(real, "Calibration recipes, all-MiniLM-L6-v2 layer 5 (NVFP4 W4A4)", "05_recipes_real")
print(evaluation.markdown_table(real))
print("recommended:", evaluation.recommend(real))

# %% [markdown]
# ## Headroom under drift (F05)
# Static per-group scales calibrated on the calibration set, max against headroom ×4,
# evaluated on drift scenarios derived from the held-out set.

# %%
drift = experiments.drift_of_static_scales(FAST)
frame = pd.concat([pd.DataFrame(rows).assign(calibration=name) for name, rows in drift.items()])
worst = frame.groupby(["scenario", "calibration"], sort=False).agg(
    worst_db=("sqnr_db", "min"), clipped=("clipped_fraction", "max")).reset_index()
fig = drift_bars(worst, "calibration", ("worst_db", "worst-group z SQNR"),
                 ("clipped", "clipped activation elements, most-clipped group"), "static per-group scale",
                 "Headroom ×4 stops the clipping at no cost when nothing clips")
save_figure(fig, "05_headroom_drift")

# %% [markdown]
# ## The findings

# %%
for finding_id in ("F05-headroom-is-free", "F07-percentile-calibration-fails-with-outlier-tokens",
                   "F08-four-over-six-gain", "F09-real-data-recipes-agree"):
    finding = by_id(finding_id)
    numbers = finding.compute(FAST, DATA_DIR)
    print(finding.id, "->", "holds" if finding.holds(numbers) else "DOES NOT HOLD")
    print("  ", finding.statement(numbers))
