"""Which GEMM the forward should run at each T above the decode kernel's range, and how many
K splits the warp-specialized prefill kernel should take there.

Times, in one run on one card (CUDA graphs, weights rotated beyond L2, as ``nvfp4lab.bench``),
per shape and T: torch.bmm in bf16, the quantizer, the 128 × 128 wgmma grouped GEMM
(``launch.grouped_gemm``, its own split K) and the prefill kernel (``launch.prefill_gemm``) at
every split count it may take (``launch.prefill_split_candidates``, up to 16) on already-quantized activations; for T <= 32 also the decode kernel's one-launch forward.
Writes a markdown table (``--out``, default stdout) marking the split ``launch.prefill_splits``
picks; ``launch.prefill_split_cost``'s constants and the decode/prefill crossover are chosen from it.

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

TOKENS = [17, 32, 33, 64, 96, 128, 192, 256, 384, 512, 1024]
SPLITS = [1, 2, 4, 8, 16]


def split_counts(k: int) -> list[int]:
    """The split counts the kernel may take at this K (``launch.prefill_split_candidates``), up to 16."""
    return [s for s in launch.prefill_split_candidates(k) if s in SPLITS]


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
    row["quantizer slices"] = time_graph(lambda i: p.quantize(row_slices=True), 1)
    row["quantizer blocks"] = time_graph(lambda i: p.quantize(row_slices=False), 1)
    row["slices picked"] = launch.quantizer_row_slices(p.rows_p, groups, k, launch.multiprocessors(0))
    row["quantizer"] = row["quantizer slices" if row["slices picked"] else "quantizer blocks"]
    row["wgmma_gemm"] = time_graph(lambda i: p.grouped_gemm(*mats[i][:2]), copies)
    counters = launch.prefill_counters(tokens, groups, n, "cuda")
    for s in split_counts(k):
        row[s] = time_graph(lambda i: launch.prefill_gemm(p.data, p.scales, mats[i][2], mats[i][3], p.used, p.gs_b,
                                                          p.z, counters, splits=s, tile_tokens=128), copies)
    row["small"] = {}
    if tokens <= 128:  # 64-token tiles
        for s in split_counts(k):
            row["small"][s] = time_graph(lambda i: launch.prefill_gemm(
                p.data, p.scales, mats[i][2], mats[i][3], p.used, p.gs_b, p.z, counters, splits=s, tile_tokens=64),
                copies)
    row["decode"] = None
    if launch.decode_supported(tokens, groups, k, n):
        row["decode"] = time_graph(lambda i: p.decode_fused(mats[i][2], mats[i][3], p.gs_a, False), copies)
    return row


def quantizer_cell(row: dict) -> str:
    """``slices / blocks`` µs, the picked one starred."""
    star = ("*", "") if row["slices picked"] else ("", "*")
    return f"{row['quantizer slices']:.1f}{star[0]} / {row['quantizer blocks']:.1f}{star[1]}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="markdown file to write (default: stdout)")
    parser.add_argument("--tokens", type=int, nargs="+", default=TOKENS, help="token counts T (positive)")
    args = parser.parse_args(argv)
    if args.out and not Path(args.out).resolve().parent.is_dir():
        parser.error(f"--out: folder {Path(args.out).resolve().parent} does not exist")
    if min(args.tokens) < 1:
        parser.error(f"--tokens must be positive, got {args.tokens}")
    if not gpu_supported(torch.device("cuda")):
        parser.error("needs a CUDA GPU with compute capability >= 9.0 and CuTeDSL (nvidia-cutlass-dsl)")
    card = torch.cuda.get_device_name()
    sms = launch.multiprocessors(0)
    split_names = " | ".join(f"prefill ×{s}" for s in SPLITS)
    lines = [f"# Forward paths above the decode range on {card} ({sms} SMs)", "",
             "µs per call (CUDA graphs, weights rotated beyond L2). GEMM columns are the GEMM alone on quantized "
             "activations; `decode` is the decode kernel's whole forward (its prologue quantizes); `prefill ×s` is the "
             "prefill kernel with 128-token tiles and s K splits, `64-token tiles` its best split count with 64-token "
             "tiles (T <= 128); tiles = 128-token tiles; quantizer: one thread per 64-element row slice / per "
             "16-element block (same bytes); * marks what `launch.quantizer_row_slices`, `launch.prefill_tile_tokens` "
             "and `launch.prefill_splits` pick; forward = the picked quantizer + GEMM; ratios are bf16 time / time.",
             "", f"| G, K, N | T | tiles | bf16 | quantizer slices / blocks | decode | wgmma GEMM | {split_names} | 64-token tiles (splits) "
             "| wgmma fwd vs bf16 | picked prefill fwd vs bf16 | best prefill fwd vs bf16 |",
             "|---|---|---|---|---|---|---|" + "---|" * len(SPLITS) + "---|---|---|---|"]
    points = [(s, t) for s in SHAPES for t in args.tokens]
    for (g, k, n), t in tqdm(points, desc="prefill paths"):
        r = time_point(g, k, n, t)
        picked = launch.prefill_splits(t, g, k, n, sms)
        small_tile = launch.prefill_tile_tokens(t) == 64
        cells = []
        for s in SPLITS:
            cells.append("–" if s not in r else f"{r[s]:.1f}{'*' if s == picked and not small_tile else ''}")
        small = "–"
        if r["small"]:
            s_best = min(r["small"], key=r["small"].get)
            small = f"{r['small'][s_best]:.1f} ({s_best}){'*' if small_tile else ''}"
        picked_us = r["small"][picked] if small_tile else r[picked]
        best = min([r[s] for s in SPLITS if s in r] + list(r["small"].values()))
        decode = "–" if r["decode"] is None else f"{r['decode']:.1f}"
        lines.append(
            f"| {g},{k},{n} | {t} | {launch.prefill_tiles(t, g, n, 128)} | {r['bf16']:.1f} | {quantizer_cell(r)} "
            f"| {decode} | {r['wgmma_gemm']:.1f} | " + " | ".join(cells) + f" | {small}"
            + f" | {r['bf16'] / (r['wgmma_gemm'] + r['quantizer']):.2f} | {r['bf16'] / (picked_us + r['quantizer']):.2f} "
            f"| {r['bf16'] / (best + r['quantizer']):.2f} |")
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
