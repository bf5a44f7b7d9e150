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
from nvfp4lab.study.paths import from_root
from nvfp4lab.study.style import save_figure
from nvfp4lab.style import apply_style

apply_style()
DATA_DIR = from_root(DATA_DIR)  # relative paths count from the project root, not the cwd

# %% [markdown]
# ## The E2M1 grid and its rounding
# Round to nearest, ties to the even code: the decision points sit halfway between grid
# values; the ties at 0.25, 1.25, 2.5 and 5 go down, at 0.75, 1.75 and 3.5 go up.

# %%
y = torch.linspace(-6.5, 6.5, 2001)
rounded = formats.e2m1_float_from_code(formats.e2m1_code_from_float(y.clamp(-6, 6)))
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(y, rounded, lw=1.5, label="E2M1(y), ties to even")
ax.plot(y, y, ls=":", color="grey", label="y (no rounding)")
ax.set(xlabel="scaled value y", ylabel="E2M1(y)", title="E2M1 rounding (saturating at ±6)")
ax.legend(loc="upper left")
save_figure(fig, "01_e2m1_grid")

# %% [markdown]
# ## Exact decode (F01)

# %%
grid = torch.tensor(formats.E2M1_GRID[1:], dtype=torch.float64)
scales = formats.e4m3_float_from_byte(torch.arange(256).to(torch.uint8)).double()
scales = scales[torch.isfinite(scales) & (scales > 0)]
products = (grid[:, None] * scales[None, :]).flatten()
# significant bits: the smallest b with p · 2^(b − 1 − floor(log2 p)) an integer
exponent = torch.floor(torch.log2(products))
bits = torch.full_like(products, 25.0)
for b in range(24, 0, -1):
    whole = products * 2.0 ** (b - 1 - exponent)
    bits = torch.where(whole == torch.round(whole), torch.full_like(bits, float(b)), bits)
fig, ax = plt.subplots(figsize=(7, 3))
sns.histplot(bits.numpy(), discrete=True, ax=ax, label="E2M1 value × E4M3 scale (nonzero)")
ax.axvline(8.5, color="C3", ls="--", label="bf16 keeps 8 significant bits")
ax.set(xlabel="significant bits of the product", ylabel="products", xlim=(0, 10),
       title="Every E2M1 × E4M3 product fits in bf16")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
save_figure(fig, "01_product_bits")

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
ax.set(xlabel="|x̂ − x| / |x|", ylabel="elements", title="Per-element relative error, dynamic global scale")
ax.annotate("small elements rounded to 0\n(relative error 1)", xy=(1.0, ax.get_ylim()[1] * 0.8),
            xytext=(0.62, ax.get_ylim()[1] * 0.6), arrowprops=dict(arrowstyle="->", color="grey"))
save_figure(fig, "01_relative_error")

# %% [markdown]
# ## The peer libraries' conventions (docs/conformance.md)
# `nvfp4lab.flavors` reproduces torchao, ModelOpt, Transformer Engine and FlashInfer's
# precise path. Fraction of scale bytes / element codes on which two flavors differ:

# %%
from IPython.display import Markdown

from nvfp4lab import flavors

Markdown(flavors.conformance_markdown())
