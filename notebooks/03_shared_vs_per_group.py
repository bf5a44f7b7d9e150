# %% [markdown]
# # 3. Per-group versus shared global activation scales
#
# The question: can all G groups of `wo_a` share one global activation scale, and should
# it be static or dynamic? Findings F02, F03 and F04; the same comparison on real
# all-MiniLM-L6-v2 activations is in notebook 5 (F09).

# %% tags=["parameters"]
FAST = True
DATA_DIR = "data/generated/minilm"

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from nvfp4lab.study import experiments
from nvfp4lab.study.findings import by_id
from nvfp4lab.study.style import apply_style, save_figure

apply_style()


def show(finding_id):
    finding = by_id(finding_id)
    numbers = finding.compute(FAST, DATA_DIR)
    print(finding.id, "->", "holds" if finding.holds(numbers) else "DOES NOT HOLD")
    print(finding.statement(numbers))


# %% [markdown]
# ## The global scale is forgiving upwards (F02)

# %%
sweep = experiments.sqnr_vs_global_scale(FAST)
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(sweep["exponents"], sweep["sqnr_db"], marker="o")
ax.axvline(0, color="grey", ls=":")
ax.set(xlabel="log2(global scale / max-calibrated)", ylabel="activation SQNR (dB)")
save_figure(fig, "03_sqnr_vs_global_scale")
show("F02-global-scale-asymmetry")

# %% [markdown]
# ## Shared vs per-group as the group magnitudes spread (F03)

# %%
rows = pd.DataFrame(experiments.shared_vs_per_group(FAST)["rows"])
long = rows.melt(id_vars="spread_decades", value_vars=["shared_quietest_group_db", "per_group_quietest_group_db"],
                 var_name="sharing", value_name="quietest group z SQNR (dB)")
fig, ax = plt.subplots(figsize=(7, 3))
sns.lineplot(long, x="spread_decades", y="quietest group z SQNR (dB)", hue="sharing", marker="o", ax=ax)
ax.set(xlabel="spread of group magnitudes (decades)")
save_figure(fig, "03_shared_vs_per_group")
rows
# %%
show("F03-shared-scale-breaks-at-4-decades")

# %% [markdown]
# ## Static scales under drift (F04)

# %%
report = experiments.drift_of_static_scales(FAST)
frame = pd.DataFrame(report["max"])
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
sns.barplot(frame, x="scenario", y="sqnr_db", hue="group", ax=axes[0])
sns.barplot(frame, x="scenario", y="clipped_fraction", hue="group", ax=axes[1])
for ax in axes:
    ax.tick_params(axis="x", rotation=30)
save_figure(fig, "03_drift_max_static")
show("F04-static-scales-clip-on-upward-drift")
