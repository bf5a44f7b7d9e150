# %% [markdown]
# # 0. Explorer: move a control, watch the NVFP4 error change
#
# Live controls over the activation side of an NVFP4 grouped linear layer
# (`z = einsum("tgk,gkn->tgn", x, W)`, DeepSeek V4's `wo_a`). Every number comes from the
# library (`nvfp4lab.explore` wires `quantize`, `metrics`, `scale_modes`, `calibration`
# and `baselines` together); every view is measured on held-out tokens.
#
# Open it with `./lab run jupyter lab notebooks/` and run all cells; the controls are at
# the bottom. Run headless (`nvfp4lab study`), the notebook shows the default state as a
# static figure (saved as `00_explore_default.png` by the study only). Colours: the bars of
# each scale mode have that mode's colour in every nvfp4lab figure
# (`nvfp4lab.style.scale_mode_colour`).
#
# **Controls**
# - *data*: synthetic V4-Flash-like or sketch-shaped activations (sized down), captured
#   all-MiniLM-L6-v2 attention outputs (*layer* 0–5), or your own safetensors file
#   (*activations file*, optional *weights file*; `nvfp4lab calibrate`'s loader and errors).
#   The first 75 % of tokens calibrate (synthetic: a separate calibration draw), the rest
#   are held out.
# - *groups G*: how many groups the heads are split into (K = heads/G · head dim).
# - *scale ×2^octaves*: multiplies the global activation scale by 2^octaves (−4 … +12);
#   0 is the calibrated scale (for the `max` recipe: the max-calibrated scale), below 0
#   the largest blocks clip, above 0 the block scales move down towards E4M3's subnormals.
# - *sharing*: one global scale for all groups (`shared`) or one per group.
# - *source*: `static` (calibrated once with the *calibration* recipe) or `dynamic`
#   (amax/2688 of the held-out tokens themselves).
# - *calibration*: the static recipe of `nvfp4lab.evaluation` (max, headroom ×4,
#   percentiles, MSE searches).
# - *block rule*: `max6` (each block's amax maps to 6) or `four_over_six` (each block keeps
#   the better of 6 and 4; the global scale becomes amax/1536).
# - *group spread (dec)*: multiplies group g by 10^(−spread·g/(G−1)), so the last group
#   is that many decades quieter than the first — what a shared scale has to cover.
# - *activation transform* (`nvfp4lab.transforms.recipes`): `none`; a Hadamard rotation of
#   every 16 elements, of every head (`hadamard head`: D = 512 for the synthetic sources,
#   32 for MiniLM, D of a (T, H, D) file) or of every 128; or `smoothquant` (per-channel
#   scales, α searched on the calibration tokens). x′ = x·A, W′ = A⁻¹·W are fitted on the
#   calibration tokens, the static scale is calibrated on x′, and the activation panels
#   show x′; the SQNR of z stays against the untransformed x·W, so it compares across
#   transforms. Rotations the data cannot take (a block that does not divide D, or D
#   unknown, as for a (T, G, K) file) are marked *(unavailable)*, with the reason.
# - *weights*: the NVFP4 recipe of W′: `rtn`, `mse weights`, `four-over-six weights`,
#   `16x16 weights` or `gptq` (with the Hessian of x′). A first GPTQ fit or α search takes
#   0.5–1.3 s; the scale controls (octaves, sharing, source, calibration, block rule)
#   reuse it.
#
# **Views**: per-group SQNR of `x` and of `z` (bars; bf16 and the serving stacks' FP8
# recipe as lines), the global scale's headroom per group, the distribution of the
# relative element error `|x̂ − x|/|x|`, the histogram of block-scale bytes (zero and
# subnormal scales marked) and the clipped fraction; the title is a one-line summary,
# with the kurtosis, block max/mean and zero-code fraction of x′ (of x in brackets).
#
# **Update time**: about 0.4 s per control change on one core at the default sizes
# (measured per control in the last section). What a control does not change is cached.

# %% tags=["parameters"]
FAST = True
DATA_DIR = "data/generated/minilm"

# %%
import torch
from IPython.display import Image, display

from nvfp4lab.explore import Controls, Explorer
from nvfp4lab.explore.ui import ExplorerUI
from nvfp4lab.explore.views import draw, png_bytes
from nvfp4lab.study.paths import from_root
from nvfp4lab.study.style import save_figure

# relative data paths are the repository's, wherever Jupyter was started
DATA_DIR = from_root(DATA_DIR)
# the synthetic sources' tokens per split: the default keeps each update well under a
# second; `nvfp4lab study --full` renders the default state from 4× more tokens
explorer = Explorer(DATA_DIR, tokens=256 if FAST else 1024)
# The explorer's tensors are small (about a million elements): one thread answers faster
# than several competing for a busy CPU (measured on 2 shared cores: 0.15 s against 1.9 s
# per computation), and leaves the other cores to the browser.
torch.set_num_threads(1)

# %% [markdown]
# ## The default state (static: this is what the HTML report shows)
# Synthetic V4-Flash-like data, G = 4, per-group static max-calibrated scales, `max6`
# blocks, no artificial spread.

# %%
view = explorer.compute(Controls())
figure = draw(view)
# saved into the study's figures folder only when `nvfp4lab study` runs this notebook
# (a run by hand leaves the study's figures alone)
save_figure(figure, "00_explore_default")
display(Image(data=png_bytes(figure, dpi=120)))
print(view.summary)

# %% [markdown]
# ## Live controls
# Move a control; the figure and the summary redraw (sliders on release). Errors — a
# missing file, a group count the data cannot take — appear in red above the figure.

# %%
ui = ExplorerUI(explorer)
ui.widget

# %% [markdown]
# ## Driving the controls from code
# The widgets' callbacks are plain Python: setting a value recomputes, exactly as a click
# does. Two octaves below the calibrated scale the largest blocks clip.

# %%
ui.controls["octaves"].value = -2.0
print(ui.last_view.summary)
ui.controls["octaves"].value = 0.0  # back to the default state

# %% [markdown]
# The computation behind the views is a plain function of the control values too: a
# shared scale over four decades of group spread starves the quiet groups.

# %%
for sharing in ("per_group", "shared"):
    print(explorer.compute(Controls(spread_decades=4.0, sharing=sharing)).summary)

# %% [markdown]
# ## Measured update time per control
# `OMP_NUM_THREADS=1 taskset -c 1 python -m nvfp4lab.explore.timing` on one core of this
# project's 2-core build machine (Linux VM; the other core busy with other jobs), default
# sizes (G = 4, K = 1024, N = 256, 256 held-out tokens); one update = compute + draw +
# PNG; median of 3 first visits of a value ("new") and of 10 revisits ("revisited", its
# data cached); wall / CPU seconds.
#
# | control | new value (s) | revisited value (s) |
# |---|---|---|
# | scale ×2^octaves | 0.36 / 0.36 | 0.37 / 0.37 |
# | sharing | – | 0.37 / 0.37 |
# | source (static / dynamic) | – | 0.35 / 0.35 |
# | calibration (max, headroom, percentiles) | 0.38 / 0.38 | 0.39 / 0.37 |
# | block rule | – | 0.38 / 0.38 |
# | group spread | 0.48 / 0.47 | 0.37 / 0.37 |
# | groups G | 0.55 / 0.54 | 0.38 / 0.38 |
# | data (synthetic sketch, 2× the elements) | 1.03 / 1.02 | 0.45 / 0.44 |
#
# Of each ~0.37 s, computing takes ~0.1 s and drawing the six panels into a PNG ~0.3 s.
# An earlier run while the machine's load average was 6–10 took the same CPU time but
# 0.8–1.1 s wall per revisit (2.4 s for the sketch's first visit). Slower first visits,
# with the running stage shown above the figure: the MSE recipes search 49 candidate
# scales (mse activations 1.6 s CPU, mse output 2.0 s), loading a MiniLM layer takes
# 1.5 s CPU (checksum, safetensors). In a real JupyterLab (headless Chromium), a click on
# `shared` redrew the figure 2.0 s later, on the busy machine.
