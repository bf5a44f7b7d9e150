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
from nvfp4lab.study.style import apply_style, save_figure

apply_style()


def plot(results, title, name):
    frame = pd.DataFrame(evaluation.as_rows([r for r in results if r.mode != "-"]))
    frame["row"] = frame["recipe"] + " | " + frame["mode"]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(frame) + 1))
    sns.barplot(frame, x="worst_group_sqnr_db", y="row", hue="clipped_fraction", dodge=False, ax=ax, palette="rocket_r")
    ax.set(xlabel="worst-group z SQNR on held-out tokens (dB)", ylabel="", title=title)
    save_figure(fig, name)


# %% [markdown]
# ## Synthetic V4 data

# %%
synthetic = experiments.recipe_table(FAST)
plot(synthetic, "synthetic V4", "05_recipes_synthetic")
print(evaluation.markdown_table(synthetic))
print("recommended:", evaluation.recommend(synthetic))

# %% [markdown]
# ## Real all-MiniLM-L6-v2 attention outputs (layer 5)

# %%
real = experiments.real_recipe_table(DATA_DIR)
plot(real, "all-MiniLM-L6-v2, layer 5", "05_recipes_real")
print(evaluation.markdown_table(real))
print("recommended:", evaluation.recommend(real))

# %% [markdown]
# ## The findings

# %%
for finding_id in ("F05-headroom-is-free", "F07-percentile-calibration-fails-with-outlier-tokens",
                   "F08-four-over-six-gain", "F09-real-data-recipes-agree"):
    finding = by_id(finding_id)
    numbers = finding.compute(FAST, DATA_DIR)
    print(finding.id, "->", "holds" if finding.holds(numbers) else "DOES NOT HOLD")
    print("  ", finding.statement(numbers))
