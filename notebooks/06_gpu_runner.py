# %% [markdown]
# # 6. The GPU runner: correctness and speed
#
# The CuTeDSL kernels (Hopper, sm_90a) decode NVFP4 in the kernel and run bf16 tensor-core
# MMA. Their correctness is pinned by `tests/gpu` (run on the lent GPU); their speed by
# `python -m nvfp4lab.bench`, whose results are committed under `bench/results/`. This
# notebook reads those files (no GPU needed); with a GPU and `FAST = False` it also
# checks the kernels against the reference on one shape.

# %% tags=["parameters"]
FAST = True
DATA_DIR = "data/generated/minilm"

# %%
import json

import pandas as pd
import seaborn as sns
import torch

from nvfp4lab.study.paths import project_root
from nvfp4lab.study.style import save_figure
from nvfp4lab.style import apply_style

apply_style()
files = sorted((project_root() / "bench" / "results").glob("*.json"))
rows = []
for path in files:
    data = json.loads(path.read_text())
    for key, contenders in data["results"].items():
        shape, tokens = key.rsplit(" T=", 1)
        for name, r in contenders.items():
            if "us" in r and r.get("speedup_vs_bf16") is not None:
                rows.append({"card": data["meta"]["card"], "shape": shape, "T": int(tokens), "contender": name,
                             "us": r["us"], "speedup_vs_bf16": r["speedup_vs_bf16"]})
frame = pd.DataFrame(rows)
print("benchmark files:", [p.name for p in files])
frame.pivot_table(index=["shape", "T"], columns="contender", values="speedup_vs_bf16")

# %%
if len(frame):
    cards = sorted(frame["card"].unique())
    # the plot keeps what a user compares (the table above has every contender)
    names = {"bf16_bmm": "bf16 torch.bmm (baseline)", "fp8_blockwise": "FP8 blockwise recipe (cast + cuBLAS GEMM)",
             "fp8_blockwise_gemm": "FP8 blockwise GEMM alone", "nvfp4_gemm": "NVFP4 GEMM alone (prefill kernel at large T)",
             "nvfp4_fused": "NVFP4 forward (static scales)", "nvfp4_dynamic": "NVFP4 forward (dynamic scales)"}
    frame = frame[frame["contender"].isin(names)].copy()
    frame["contender"] = frame["contender"].map(names)
    frame["shape"] = "G, K, N = " + frame["shape"]
    grid = sns.relplot(frame, x="T", y="speedup_vs_bf16", hue="contender", style="card" if len(cards) > 1 else None,
                       col="shape", kind="line", marker="o", height=3, aspect=1.1)
    grid.set(xscale="log")
    grid.set_axis_labels("tokens T", "speed-up over bf16 bmm (×)")
    grid.set_titles("{col_name}")
    for ax in grid.axes.flat:
        ax.axhline(1.0, color="grey", ls=":")
    grid.figure.suptitle(f"Grouped GEMM speed-up over bf16 on {', '.join(cards)} (bench/results)", y=1.04)
    grid.legend.set_title("contender")
    save_figure(grid.figure, "06_speedup_vs_bf16")

# %%
if torch.cuda.is_available() and not FAST:
    from nvfp4lab.tools.selfcheck import main as selfcheck

    selfcheck()
else:
    print("no GPU run in this mode: see tests/gpu and bench/results")
