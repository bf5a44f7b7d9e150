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
from nvfp4lab.study.paths import from_root
from nvfp4lab.study.plots import drift_bars
from nvfp4lab.study.style import save_figure
from nvfp4lab.style import apply_style, scale_mode_colour

apply_style()
DATA_DIR = from_root(DATA_DIR)  # relative paths count from the project root, not the cwd


def show(finding_id):
    finding = by_id(finding_id)
    numbers = finding.compute(FAST, DATA_DIR)
    print(finding.id, "->", "holds" if finding.holds(numbers) else "DOES NOT HOLD")
    print(finding.statement(numbers))


# %% [markdown]
# ## The global scale is forgiving upwards (F02)

# %%
sweep = experiments.sqnr_vs_global_scale(FAST)
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.axvspan(min(sweep["exponents"]) - 0.5, -0.5, color="C3", alpha=0.12, label="amax under-estimated: clipping")
ax.plot(sweep["exponents"], sweep["sqnr_db"], marker="o", label="activation SQNR")
ax.axvline(0, color="grey", ls=":", label="max-calibrated global scale")
ax.axhline(sweep["sqnr_at_max_db"] - 0.1, color="grey", lw=0.8, ls="--", label="0.1 dB below max-calibrated")
ax.set(xlabel="octaves of over-estimated amax: log2(global scale / max-calibrated)", ylabel="activation SQNR (dB)",
       ylim=(0, None), title="Over-estimating the amax is free for a while; under-estimating it clips")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
save_figure(fig, "03_sqnr_vs_global_scale")
show("F02-global-scale-asymmetry")

# %% [markdown]
# ## Shared vs per-group as the group magnitudes spread (F03)

# %%
rows = pd.DataFrame(experiments.shared_vs_per_group(FAST)["rows"])
labels = {"shared_quietest_group_db": "one shared static scale",
          "per_group_quietest_group_db": "per-group static scales"}
long = rows.melt(id_vars="spread_decades", value_vars=list(labels), var_name="global scale",
                 value_name="quietest group's z SQNR (dB)").replace({"global scale": labels})
fig, ax = plt.subplots(figsize=(7, 3.2))
modes = {"one shared static scale": "shared static", "per-group static scales": "per_group static"}
sns.lineplot(long, x="spread_decades", y="quietest group's z SQNR (dB)", hue="global scale", marker="o", ax=ax,
             palette={label: scale_mode_colour(mode) for label, mode in modes.items()})
ax.set(xlabel="spread of group magnitudes (decades between loudest and quietest group)", ylim=(0, None),
       title="A shared static scale starves the quietest group beyond 3 decades")
ax.legend(title="global activation scale", loc="lower left")
save_figure(fig, "03_shared_vs_per_group")
rows
# %%
show("F03-shared-scale-breaks-at-4-decades")

# %% [markdown]
# ## Static scales under drift (F04)

# %%
report = experiments.drift_of_static_scales(FAST)
frame = pd.DataFrame(report["max"])
frame["group"] = "group " + frame["group"].astype(str)
fig = drift_bars(frame, "group", ("sqnr_db", "z SQNR of each group"),
                 ("clipped_fraction", "clipped activation elements of each group"), "",
                 "Static per-group max scales under drift (calibrated on the calibration set)")
save_figure(fig, "03_drift_max_static")
show("F04-static-scales-clip-on-upward-drift")
