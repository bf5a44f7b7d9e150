"""Times the two forward paths a decode-sized call (T <= 32) can take, per shape and T:
``python scripts/decode_paths.py [--out FILE.md]``.

* ``fused``: the one-launch decode kernel, its prologue quantizing x (every CTA its K slice);
* ``mma_sync``: the quantizer kernel, then the grouped GEMM (``mma.sync``, cp.async ring).

Static per-group activation scales, CUDA-graph replay, weights rotated beyond L2 (as
``nvfp4lab.bench``). The layer takes ``fused`` wherever ``launch.decode_selected``; this
table is the evidence that it should (``fused / mma_sync`` per T, geometric mean over the
shapes). Dynamic scales, per group and shared, both ways: the ``group_amax`` launch (and its
zeroing) before the decode kernel, or the amax computed in the decode kernel's prologue
(``fused_amax``); ``launch.decode_fuses_amax`` is chosen from these columns.
"""

import argparse
import math
from pathlib import Path

import torch
from tqdm import tqdm

from nvfp4lab.bench import SHAPES, Problem, copies_for, time_graph
from nvfp4lab.kernels import gpu_supported, launch

TOKENS = [1, 2, 4, 8, 9, 12, 16, 17, 24, 32]
PATHS = ("fused", "mma_sync", "dyn amax launch", "dyn fused amax", "shared dyn amax launch", "shared dyn fused amax")


def time_paths(p: Problem) -> dict:
    copies = copies_for(p.mat_b.numel() + p.scale_b.numel())
    w = [(p.mat_b.clone(), p.scale_b.clone(), p.words.clone(), p.word_scales.clone()) for _ in range(copies)]

    def mma_sync(i):
        p.quantize()
        p.grouped_gemm(w[i][0], w[i][1])

    def dynamic(i, shared: bool, fused_amax: bool):
        if not fused_amax:
            launch.group_amax(p.x, p.amax_bits)
        launch.decode_forward(p.x, p.amax_bits.view(torch.float32), w[i][2], w[i][3], p.gs_b, p.z, p.counters,
                              dynamic=True, shared=shared, fused_amax=fused_amax)

    return {
        "fused": time_graph(lambda i: p.decode_fused(w[i][2], w[i][3], p.gs_a, False), copies),
        "mma_sync": time_graph(mma_sync, copies),
        "dyn amax launch": time_graph(lambda i: dynamic(i, False, False), copies),
        "dyn fused amax": time_graph(lambda i: dynamic(i, False, True), copies),
        "shared dyn amax launch": time_graph(lambda i: dynamic(i, True, False), copies),
        "shared dyn fused amax": time_graph(lambda i: dynamic(i, True, True), copies),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="markdown file for the table")
    parser.add_argument("--tokens", type=int, nargs="+", default=TOKENS, help="token counts T (1..32)")
    args = parser.parse_args()
    if not all(1 <= t <= 32 for t in args.tokens):
        parser.error(f"--tokens must lie in 1..32, got {args.tokens}")
    if not gpu_supported(torch.device("cuda")):
        parser.error("needs a CUDA GPU with compute capability >= 9.0 and CuTeDSL (nvidia-cutlass-dsl)")
    card = torch.cuda.get_device_name()
    rows, ratio = [], {}
    for (g, k, n), t in tqdm([(s, t) for s in SHAPES for t in args.tokens], desc="decode paths"):
        us = time_paths(Problem(g, k, n, t))
        best = min(("fused", "mma_sync"), key=us.get)
        rows.append(f"| {g},{k},{n} | {t} | " + " | ".join(f"{us[name]:.1f}" for name in PATHS) + f" | {best} |")
        ratio.setdefault(t, []).append(us["fused"] / us["mma_sync"])
    gain = {t: math.exp(sum(map(math.log, r)) / len(r)) for t, r in ratio.items()}
    lines = [f"# Decode forward paths on {card}", "",
             "µs per call (CUDA-graph replay, weights rotated beyond L2; static per-group scales except the dyn columns); "
             "written by `scripts/decode_paths.py`.", "",
             "| G,K,N | T | " + " | ".join(PATHS) + " | fastest (static) |", "|---|---|" + "---|" * (len(PATHS) + 1), *rows, "",
             "fused / mma_sync (geometric mean over the shapes): "
             + ", ".join(f"T={t}: {gain[t]:.2f}" for t in sorted(gain)), ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
