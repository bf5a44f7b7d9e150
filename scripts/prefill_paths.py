"""Which GEMM the forward should run at each prefill-sized T: the 128 × 128 wgmma grouped
GEMM (``launch.grouped_gemm``) or the warp-specialized prefill kernel (``launch.prefill_gemm``).

Times, in one run on one card (CUDA graphs, weights rotated beyond L2, as ``nvfp4lab.bench``),
per shape and T: torch.bmm in bf16, each GEMM alone on already-quantized activations, and the
quantizer. Writes a markdown table (``--out``, default stdout); ``launch.PREFILL_MIN_WAVE`` is
chosen from it.

    python scripts/prefill_paths.py --out bench/results/<card>_prefill_paths.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from nvfp4lab.bench import SHAPES, Problem, copies_for, time_graph
from nvfp4lab.kernels import gpu_supported, launch
from nvfp4lab.kernels.decode_layout import pack_decode_weights
from nvfp4lab.quantize import quantize_nvfp4

TOKENS = [128, 256, 512, 1024, 2048, 8192]


def time_point(groups: int, k: int, n: int, tokens: int) -> dict:
    p = Problem(groups, k, n, tokens)
    wq = quantize_nvfp4(p.w, p.gs_b, group_dim=0, check_finite=False)
    words, word_scales = pack_decode_weights(wq.data, wq.scales)
    copies = copies_for(p.mat_b.numel() + p.scale_b.numel())
    mats = [(p.mat_b.clone(), p.scale_b.clone(), words.clone(), word_scales.clone()) for _ in range(copies)]
    xg = p.x.transpose(0, 1).contiguous()
    w_bf16 = [p.w.transpose(1, 2).contiguous() for _ in range(copies_for(p.w.numel() * 2))]
    out_bf16 = torch.empty(groups, tokens, n, dtype=torch.bfloat16, device="cuda")
    p.quantize()
    row = {"bf16": time_graph(lambda i: torch.bmm(xg, w_bf16[i], out=out_bf16), len(w_bf16))}
    row["wgmma_gemm"] = time_graph(lambda i: p.grouped_gemm(*mats[i][:2]), copies)
    row["prefill_gemm"] = time_graph(
        lambda i: launch.prefill_gemm(p.data, p.scales, mats[i][2], mats[i][3], p.used, p.gs_b, p.z), copies)
    row["quantizer"] = time_graph(lambda i: p.quantize(), 1)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="markdown file to write (default: stdout)")
    parser.add_argument("--tokens", type=int, nargs="+", default=TOKENS, help="token counts T (positive)")
    args = parser.parse_args(argv)
    if args.out and not Path(args.out).resolve().parent.is_dir():
        parser.error(f"--out: folder {Path(args.out).resolve().parent} does not exist")
    if not gpu_supported(torch.device("cuda")):
        parser.error("needs a CUDA GPU with compute capability >= 9.0 and CuTeDSL (nvidia-cutlass-dsl)")
    if min(args.tokens) < 1:
        parser.error(f"--tokens must be positive, got {args.tokens}")
    card = torch.cuda.get_device_name()
    lines = [f"# Prefill GEMM paths on {card}", "",
             "µs per call (CUDA graphs, weights rotated beyond L2); ratios are bf16 time / time.", "",
             "| G, K, N | T | bf16 | wgmma GEMM | prefill GEMM | quantizer | wgmma fwd vs bf16 | prefill fwd vs bf16 | prefill GEMM vs bf16 |",
             "|---|---|---|---|---|---|---|---|---|"]
    points = [(s, t) for s in SHAPES for t in args.tokens]
    for (g, k, n), t in tqdm(points, desc="prefill paths"):
        r = time_point(g, k, n, t)
        lines.append(
            f"| {g},{k},{n} | {t} | {r['bf16']:.1f} | {r['wgmma_gemm']:.1f} | {r['prefill_gemm']:.1f} | {r['quantizer']:.1f} "
            f"| {r['bf16'] / (r['wgmma_gemm'] + r['quantizer']):.2f} | {r['bf16'] / (r['prefill_gemm'] + r['quantizer']):.2f} "
            f"| {r['bf16'] / r['prefill_gemm']:.2f} |")
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
