# %% [markdown]
# # 1. The NVFP4 format: the E2M1 grid, the scales, where the error comes from
#
# NVFP4 stores each value as a 4-bit E2M1 code, one E4M3 scale per 16 elements along K,
# and one FP32 global scale (docs/numerics.md). This notebook draws the grid, checks that
# decoding to bf16 is exact (finding F01) and shows the relative error of one block.

# %% tags=["parameters"]
FAST = True
DATA_DIR = "data/generated/minilm"

# %%
import matplotlib.pyplot as plt
import seaborn as sns
import torch

from nvfp4lab import dequantize_nvfp4, formats, quantize_nvfp4
from nvfp4lab.study import experiments
from nvfp4lab.study.findings import by_id
from nvfp4lab.study.style import apply_style, save_figure

apply_style()

# %% [markdown]
# ## The E2M1 grid and its rounding
# Round to nearest, ties to the even code: the decision points sit halfway between grid
# values; the ties at 0.25, 1.25, 2.5 and 5 go down, at 0.75, 1.75 and 3.5 go up.

# %%
y = torch.linspace(-6.5, 6.5, 2001)
rounded = formats.e2m1_float_from_code(formats.e2m1_code_from_float(y.clamp(-6, 6)))
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(y, rounded, lw=1.5)
ax.plot(y, y, ls=":", color="grey")
ax.set(xlabel="scaled value y", ylabel="E2M1(y)", title="E2M1 rounding (saturating at ±6)")
save_figure(fig, "01_e2m1_grid")

# %% [markdown]
# ## Exact decode (F01)

# %%
finding = by_id("F01-exact-decode")
numbers = finding.compute(FAST, DATA_DIR)
print(finding.statement(numbers), "->", "holds" if finding.holds(numbers) else "DOES NOT HOLD")

# %% [markdown]
# ## Where the error comes from
# Relative error of each element of one heavy-tailed tensor: the coarse top of the grid
# (4 → 6) dominates, and small elements of a block with a large amax round to zero.

# %%
x, _, _ = experiments.data(FAST)
x_hat = dequantize_nvfp4(quantize_nvfp4(x))
relative = ((x_hat - x).abs() / x.abs().clamp(min=1e-12)).flatten()
fig, ax = plt.subplots(figsize=(7, 3))
sns.histplot(relative[relative < 1.01].numpy(), bins=100, ax=ax)
ax.set(xlabel="|x̂ − x| / |x|", ylabel="elements", title="per-element relative error, dynamic global scale")
save_figure(fig, "01_relative_error")

# %% [markdown]
# ## The peer libraries' conventions (docs/conformance.md)
# `nvfp4lab.flavors` reproduces torchao, ModelOpt, Transformer Engine and FlashInfer's
# precise path. Fraction of scale bytes / element codes on which two flavors differ:

# %%
from IPython.display import Markdown

from nvfp4lab import flavors

Markdown(flavors.conformance_markdown())
