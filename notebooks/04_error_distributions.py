# %% [markdown]
# # 4. Error distributions: NVFP4 against the FP8 recipe and bf16
#
# Per-output errors of `z` (normalised by the rms of `z`) for bf16, the FP8 recipe that
# serves `wo_a` today (per-token 1×128 activation blocks with power-of-two scales,
# 128×128 weight blocks), NVFP4 weights only, and NVFP4 W4A4. Finding F06.

# %% tags=["parameters"]
FAST = True
DATA_DIR = "data/generated/minilm"

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from nvfp4lab import baselines, metrics
from nvfp4lab.scale_modes import ScaleMode
from nvfp4lab.study import experiments
from nvfp4lab.study.findings import by_id
from nvfp4lab.study.paths import from_root
from nvfp4lab.study.style import save_figure
from nvfp4lab.style import apply_style

apply_style()
DATA_DIR = from_root(DATA_DIR)  # relative paths count from the project root, not the cwd

# %%
dist = experiments.error_distributions(FAST)
names = {"bf16": "bf16", "fp8": "FP8 recipe (served today)", "nvfp4 w4a16": "NVFP4 W4A16 (weights only)",
         "nvfp4 w4a4": "NVFP4 W4A4 (per-group dynamic)"}
frame = pd.concat([pd.DataFrame({"recipe": f"{names[name]}: {d['sqnr_db']:.1f} dB", "error": d["errors"].numpy()})
                   for name, d in dist.items()])
fig, ax = plt.subplots(figsize=(8, 3.5))
sns.histplot(frame, x="error", hue="recipe", bins=200, element="step", fill=False, log_scale=(False, True), ax=ax)
ax.set(xlabel="(ẑ − z) / rms(z)", ylabel="outputs (log scale)",
       title="Per-output error of z on the held-out set (legend: overall z SQNR)")
sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), title="recipe")
save_figure(fig, "04_error_histograms")
pd.DataFrame({name: {k: v for k, v in d.items() if k != "errors"} for name, d in dist.items()}).T

# %% [markdown]
# ## Per group and per token (NVFP4 W4A4, per-group dynamic scales)

# %%
x, w, cfg = experiments.data(FAST, seed=experiments.HELD_OUT_SEED)
reference = baselines.reference_output(x, w)
z, _ = baselines.nvfp4_output(x, w, ScaleMode("per_group", "dynamic").global_scale(x))
per_group = metrics.sqnr_db_per_group(reference, z)
per_token = metrics.sqnr_db_per_group(reference, z, group_dim=0)
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
sns.barplot(x=list(range(cfg.groups)), y=per_group.numpy(), ax=axes[0])
axes[0].set(xlabel="group", ylabel="z SQNR of the group (dB)", title="per group")
sns.histplot(per_token.numpy(), bins=40, ax=axes[1])
axes[1].set(xlabel="z SQNR of one token (dB)", ylabel="tokens", title="per token")
fig.suptitle("NVFP4 W4A4, per-group dynamic scales, held-out set", y=1.02)
save_figure(fig, "04_per_group_per_token")

# %%
finding = by_id("F06-nvfp4-vs-fp8-vs-bf16")
numbers = finding.compute(FAST, DATA_DIR)
print(finding.statement(numbers), "->", "holds" if finding.holds(numbers) else "DOES NOT HOLD")
