# %% [markdown]
# # 2. Scale layouts: the 128×4 swizzle and grouped padding
#
# Blackwell's block-scaled MMA (and cuBLAS) want the E4M3 scales of an `(M, K)` operand
# as 128×4 tiles of 512 bytes: `offset(r, kb) = ((r//128)·ncb + kb//4)·512 + (r%32)·16 +
# ((r%128)//32)·4 + kb%4`. The grouped A operand pads each group's rows to 128.

# %% tags=["parameters"]
FAST = True
DATA_DIR = "data/generated/minilm"

# %%
import matplotlib.pyplot as plt
import seaborn as sns
import torch

from nvfp4lab import layouts, quantize_nvfp4
from nvfp4lab.study.style import save_figure
from nvfp4lab.style import apply_style

apply_style()

# %% [markdown]
# ## Where each scale of a 128×8 matrix lands

# %%
rows, cols = 128, 8
r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
offset = layouts.swizzled_offset(r, c, cols)
fig, ax = plt.subplots(figsize=(4, 8))
sns.heatmap(offset.numpy(), cmap="viridis", ax=ax, cbar_kws={"label": "byte offset"})
ax.set(xlabel="scale column kb", ylabel="row r", title="swizzled offset of scale (r, kb)")
save_figure(fig, "02_swizzle_offsets")

# %% [markdown]
# ## Grouped A operand: every group padded to a multiple of 128 rows

# %%
x = torch.randn(3, 130, 64).to(torch.bfloat16)  # 3 groups of 130 tokens
mat_a, scale_a, offsets = layouts.grouped_a_operand(quantize_nvfp4(x))
print("mat_a", tuple(mat_a.shape), "scale_a", tuple(scale_a.shape), "offsets", offsets.tolist())
occupied = (mat_a.view(torch.uint8) != 0).any(dim=1).float().reshape(3, -1)
fig, ax = plt.subplots(figsize=(7, 1.8))
sns.heatmap(occupied.numpy(), cbar=False, ax=ax, cmap="Greys")
ax.set(xlabel="row within the group's padded block", ylabel="group", title="data rows (black) and padding (white)")
save_figure(fig, "02_grouped_padding")
