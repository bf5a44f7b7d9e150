"""Benchmark of the NVFP4 grouped GEMM on the GPU: ``python -m nvfp4lab.bench``.

For each ``(G, K, N)`` and token count T it times, in one run on one card:

* ``bf16_bmm``      torch.bmm in bf16 (cuBLAS): the baseline every ratio refers to;
* ``fp8_blockwise`` the serving stacks' FP8 recipe (``nvfp4lab.fp8_blockwise``: 1×128
                    power-of-two activation scales, 128×128 weight blocks): the
                    activation cast (one fused Triton kernel where Triton runs, else
                    eager torch; the JSON's ``meta`` says which) and
                    cuBLAS's blockwise ``_scaled_mm``, one call per group (T padded
                    to a multiple of 4: cuBLAS wants 16-byte aligned scale columns);
* ``fp8_blockwise_gemm`` the same GEMM alone (activations already cast);
* ``fp8_scaled_mm`` torch._scaled_grouped_mm, FP8 E4M3 with per-token / per-channel
                    scales (GEMM only; the activation cast is not timed): the fastest
                    FP8 GEMM torch offers, not a recipe anybody serves wo_a with;
* ``sketch``        the original sketch's structure from nvfp4lab's own kernels: a
                    Python loop quantizing each group separately, scattering it into
                    the padded operand, the grouped GEMM into the padded output, then
                    one copy per group into ``z``;
* ``nvfp4_gemm``    nvfp4lab's GEMM alone (operands already quantized), the one the forward
                    runs: the warp-specialized prefill kernel where ``launch.forward_plan``
                    says ``prefill`` (T > 16 and K % 64, N % 256), else the grouped GEMM;
* ``nvfp4_fused``   nvfp4lab's forward with static per-group activation scales, the
                    layer's launches (``launch.forward_plan``): for T <= 16 the one-launch
                    decode kernel (quantizer fused into its prologue), above that the quantizer and the GEMM of
                    ``nvfp4_gemm`` writing ``z`` directly;
* ``nvfp4_dynamic`` the same with dynamic per-group scales (+ the amax launch where the
                    decode prologue does not find the amax itself);
* ``quantizer``     the fused quantizer alone, with a device-to-device copy of the same
                    byte count as its bandwidth reference.

Every contender is captured in a CUDA graph and replayed (as serving stacks run
decode), so Python launch overhead is excluded for all of them alike. Each graph runs
the contender on several copies of its weights, enough that they cannot all stay in the
50 MB L2, and the time per call is the graph's time divided by the copies. Reported:
median over repetitions, in µs, with TFLOP/s (2·T·G·K·N), bytes/s (weights + inputs +
outputs) and ``speedup_vs_bf16`` (bf16 time / contender time).

Results go to ``bench/results/<card>.json`` and ``.md``; the JSON's ``meta`` records the card,
torch, the method, the FP8 cast used and the ``commit`` of the checkout that ran
(``git rev-parse HEAD``, ``"unknown"`` outside a git checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
from pathlib import Path

import torch
from tqdm import tqdm

from nvfp4lab import fp8_blockwise, layouts
from nvfp4lab.gemm import cutedsl_grouped_gemm
from nvfp4lab.kernels import launch
from nvfp4lab.kernels.decode_layout import pack_decode_weights
from nvfp4lab.layouts import ROW_TILE, round_up
from nvfp4lab.quantize import dynamic_global_scale, quantize_nvfp4

SHAPES = [(8, 4096, 1024), (16, 4096, 1024), (8, 8192, 1536)]
TOKENS = [1, 16, 32, 64, 128, 256, 512, 1024, 8192]
L2_BYTES = 50 * 2**20


def time_graph(fn, copies: int, replays: int = 20, repeats: int = 5) -> float:
    """Median µs per call of ``fn(i)`` for i in range(copies), captured in one graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i in range(copies):  # warm-up, compiles kernels outside the capture
            fn(i)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for i in range(copies):
            fn(i)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / (replays * copies))
    return statistics.median(times)


def copies_for(weight_bytes: int) -> int:
    return max(1, -(-2 * L2_BYTES // weight_bytes))


class Problem:
    """Inputs of one (G, K, N, T) point, built once and shared by all contenders."""

    def __init__(self, groups: int, k: int, n: int, tokens: int, seed: int = 0):
        self.groups, self.k, self.n, self.tokens = groups, k, n, tokens
        dev = torch.device("cuda")
        g = torch.Generator(device=dev).manual_seed(seed)
        self.x = torch.randn(tokens, groups, k, generator=g, device=dev).to(torch.bfloat16)
        self.w = (torch.randn(groups, n, k, generator=g, device=dev) / k**0.5).to(torch.bfloat16)  # (G, N, K)
        self.gs_a = dynamic_global_scale(self.x, per_group=True)
        gs_b = dynamic_global_scale(self.w, per_group=True, group_dim=0)
        wq = quantize_nvfp4(self.w, gs_b, group_dim=0, check_finite=False)
        self.mat_b, self.scale_b = layouts.grouped_b_operand(wq)
        sms = launch.multiprocessors(dev.index or 0)
        self.plans = {dynamic: launch.forward_plan(tokens, groups, k, n, sms, dynamic=dynamic, shared=False)
                      for dynamic in (False, True)}  # the layer's launches, static and dynamic per-group scales
        self.prefill = self.plans[False].prefill  # the GEMM the forward runs (same plan for dynamic scales)
        fragment_layout = self.plans[False].decode or self.prefill
        self.words, self.word_scales = pack_decode_weights(wq.data, wq.scales) if fragment_layout else (None, None)
        self.counters = launch.decode_counters(groups, n, dev)
        self.prefill_counters = launch.prefill_counters(tokens, groups, n, dev)
        self.amax_bits = torch.zeros(groups, dtype=torch.int32, device=dev)
        self.gs_b = gs_b
        self.rows_p = round_up(tokens, ROW_TILE)
        rows = groups * self.rows_p
        self.data = torch.zeros(rows, k // 2, dtype=torch.uint8, device=dev)
        self.scales = torch.zeros(rows, round_up(k // 16, 4), dtype=torch.uint8, device=dev)
        self.used = torch.empty(groups, device=dev)
        self.offsets = torch.arange(1, groups + 1, dtype=torch.int32, device=dev) * self.rows_p
        self.z = torch.empty(tokens, groups, n, dtype=torch.bfloat16, device=dev)
        self.flops = 2 * tokens * groups * k * n

    def quantize(self, row_slices: bool | None = None):
        """The quantizer alone (static scales); ``row_slices`` as ``launch.quantize_activations``."""
        launch.quantize_activations(self.x, self.gs_a, self.data, self.scales, self.used, dynamic=False, shared=False,
                                    row_slices=row_slices)

    def forward(self, weights, dynamic: bool):
        """The layer's forward on these operands (``weights``: one rotated copy)."""
        mat_b, scale_b, words, word_scales = weights
        plan = self.plans[dynamic]
        source = self.amax_bits.view(torch.float32) if dynamic else self.gs_a
        if plan.amax:
            launch.group_amax(self.x, self.amax_bits)
        if plan.decode:
            self.decode_fused(words, word_scales, source, dynamic, plan.fused_amax)
            return
        launch.quantize_activations(self.x, source, self.data, self.scales, self.used, dynamic=dynamic, shared=False)
        self.gemm(weights)

    def decode_fused(self, words, word_scales, source, dynamic: bool, fused_amax: bool = False):
        """The one-launch decode forward (the prologue quantizes x; with ``fused_amax`` it also
        finds the dynamic amax)."""
        launch.decode_forward(self.x, source, words, word_scales, self.gs_b, self.z, self.counters, dynamic=dynamic,
                              shared=False, fused_amax=fused_amax)

    def gemm(self, weights):
        """The forward's GEMM on the quantized activations: the prefill kernel (weights in the
        decode layout) where the plan says ``prefill``, else the grouped GEMM."""
        mat_b, scale_b, words, word_scales = weights
        if self.prefill:
            launch.prefill_gemm(self.data, self.scales, words, word_scales, self.used, self.gs_b, self.z,
                                self.prefill_counters)
            return
        self.grouped_gemm(mat_b, scale_b)

    def grouped_gemm(self, mat_b, scale_b):
        """``launch.grouped_gemm`` (mma.sync / 128 × 128 wgmma) writing ``z``."""
        cutedsl_grouped_gemm(
            self.data.view(torch.float4_e2m1fn_x2), mat_b, self.scales.view(torch.float8_e4m3fn), scale_b,
            self.offsets, self.used, self.gs_b, out=self.z, tokens=self.tokens,
        )


class Fp8Cast:
    """The FP8 recipe's activation cast: the fused Triton kernel
    (``fp8_blockwise.quantize_activations_fused``) where Triton runs, else eager torch;
    ``mode`` says which ran."""

    def __init__(self):
        self.mode = "fused Triton kernel"

    def __call__(self, x):
        if self.mode == "fused Triton kernel":
            try:
                return fp8_blockwise.quantize_activations_fused(x)
            except ValueError:  # a shape the fused kernel does not take: eager for this call only
                return fp8_blockwise.quantize_activations(x)
            except Exception as error:  # no Triton, or no compiler toolchain, on this machine
                self.mode = f"eager torch (Triton failed: {type(error).__name__})"
        return fp8_blockwise.quantize_activations(x)


FP8_CAST = None


def fp8_blockwise_point(p: Problem, results: dict) -> None:
    """Time the FP8 blockwise recipe (cast + GEMM, and the GEMM alone) into ``results``."""
    global FP8_CAST
    FP8_CAST = FP8_CAST or Fp8Cast()
    try:
        weights = [fp8_blockwise.quantize_weights(p.w) for _ in range(copies_for(p.w.numel()))]
        x8, x_scales = FP8_CAST(p.x)
        out = torch.empty(p.groups, fp8_blockwise.padded_tokens(p.tokens), p.n, dtype=torch.bfloat16, device="cuda")
        gemm = lambda i: fp8_blockwise.grouped_matmul(x8, x_scales, *weights[i], out)  # noqa: E731
        results["fp8_blockwise_gemm"] = (time_graph(gemm, len(weights)), p.w.numel())

        def forward(i):
            fp8_blockwise.grouped_matmul(*FP8_CAST(p.x), *weights[i], out)

        results["fp8_blockwise"] = (time_graph(forward, len(weights)), p.w.numel())
    except Exception as error:  # torch without cuBLAS blockwise scaling: say why
        for name in ("fp8_blockwise_gemm", "fp8_blockwise"):
            results[name] = (None, repr(error)[:160])


def bench_point(p: Problem) -> dict:
    results = {}
    t, g, k, n = p.tokens, p.groups, p.k, p.n
    act_bytes, out_bytes = t * g * k * 2, t * g * n * 2

    # bf16 torch.bmm
    xg = p.x.transpose(0, 1).contiguous()  # (G, T, K)
    w_bf16 = [p.w.transpose(1, 2).contiguous() for _ in range(copies_for(p.w.numel() * 2))]  # (G, K, N)
    out_bf16 = torch.empty(g, t, n, dtype=torch.bfloat16, device="cuda")
    results["bf16_bmm"] = (time_graph(lambda i: torch.bmm(xg, w_bf16[i], out=out_bf16), len(w_bf16)), p.w.numel() * 2)

    # FP8 grouped GEMM (rowwise scales)
    try:
        x8 = xg.to(torch.float8_e4m3fn)
        w8 = [p.w.to(torch.float8_e4m3fn) for _ in range(copies_for(p.w.numel()))]  # (G, N, K)
        sa = torch.ones(g, t, device="cuda")
        sb = torch.ones(g, n, device="cuda")
        fp8 = lambda i: torch._scaled_grouped_mm(x8, w8[i].transpose(-2, -1), sa, sb, out_dtype=torch.bfloat16)  # noqa: E731
        results["fp8_scaled_mm"] = (time_graph(fp8, len(w8)), p.w.numel())
    except Exception as error:  # not every shape is supported by every build
        results["fp8_scaled_mm"] = (None, repr(error)[:120])
    fp8_blockwise_point(p, results)

    nvfp4_weight_bytes = p.mat_b.numel() + p.scale_b.numel()
    copies = copies_for(nvfp4_weight_bytes)
    mats = [(p.mat_b.clone(), p.scale_b.clone(), *(None if t is None else t.clone() for t in (p.words, p.word_scales)))
            for _ in range(copies)]

    # The sketch: per-group quantizer launches, scatter, GEMM into padded output, per-group copies.
    per_group_data = torch.empty(p.rows_p, k // 2, dtype=torch.uint8, device="cuda")
    per_group_scales = torch.zeros(p.rows_p, round_up(k // 16, 4), dtype=torch.uint8, device="cuda")
    per_group_used = torch.empty(1, device="cuda")
    padded_out = torch.empty(g * p.rows_p, n, dtype=torch.bfloat16, device="cuda")
    data3 = p.data.view(g, p.rows_p, k // 2)
    scales3 = p.scales.view(g, p.rows_p, -1)

    def sketch(i):
        for grp in range(g):  # the structure being measured: a loop over groups
            xg_one = p.x[:, grp : grp + 1].contiguous()
            launch.quantize_activations(xg_one, p.gs_a[grp : grp + 1], per_group_data, per_group_scales, per_group_used,
                                        dynamic=False, shared=False)
            data3[grp].copy_(per_group_data)
            scales3[grp].copy_(per_group_scales)
        cutedsl_grouped_gemm(p.data.view(torch.float4_e2m1fn_x2), mats[i][0], p.scales.view(torch.float8_e4m3fn),
                             mats[i][1], p.offsets, p.gs_a, p.gs_b, out=padded_out)
        view = padded_out.view(g, p.rows_p, n)
        for grp in range(g):
            p.z[:, grp].copy_(view[grp, :t])

    results["sketch"] = (time_graph(sketch, copies), nvfp4_weight_bytes)
    p.quantize()
    results["nvfp4_gemm"] = (time_graph(lambda i: p.gemm(mats[i]), copies), nvfp4_weight_bytes)
    results["nvfp4_fused"] = (time_graph(lambda i: p.forward(mats[i], dynamic=False), copies), nvfp4_weight_bytes)
    results["nvfp4_dynamic"] = (time_graph(lambda i: p.forward(mats[i], dynamic=True), copies), nvfp4_weight_bytes)

    quant_bytes = act_bytes + p.data.numel() + p.scales.numel()
    results["quantizer"] = (time_graph(lambda i: p.quantize(), 1), 0)
    src = torch.empty(quant_bytes // 4, dtype=torch.bfloat16, device="cuda")  # read + write = quant_bytes
    dst = torch.empty_like(src)
    copy_us = time_graph(lambda i: dst.copy_(src), 1)

    rows = {}
    bf16_us = results["bf16_bmm"][0]
    for name, (us, weight_bytes) in results.items():
        if us is None:
            rows[name] = {"error": weight_bytes}
            continue
        moved = quant_bytes if name == "quantizer" else weight_bytes + act_bytes + out_bytes
        rows[name] = {
            "us": us,
            "tflops": None if name == "quantizer" else p.flops / us / 1e6,
            "gbytes_per_s": moved / us / 1e3,
            "speedup_vs_bf16": None if name == "quantizer" else bf16_us / us,
        }
    rows["quantizer"]["copy_us_same_bytes"] = copy_us
    rows["quantizer"]["fraction_of_copy_bandwidth"] = copy_us / rows["quantizer"]["us"]
    return rows


def markdown(card: str, results: dict, fp8_cast: str | None = None) -> str:
    lines = [f"# nvfp4lab grouped GEMM benchmark on {card}", "",
             "CUDA-graph replay, weights rotated beyond L2; µs per call (speed-up vs bf16 torch.bmm).",
             f"fp8_blockwise = activation cast ({fp8_cast or 'not run'}) + cuBLAS blockwise GEMM per group; "
             "fp8_blockwise_gemm = the GEMM alone; fp8_scaled_mm = torch's row-wise grouped FP8 GEMM alone.", ""]
    names = ["bf16_bmm", "fp8_blockwise", "fp8_blockwise_gemm", "fp8_scaled_mm", "sketch", "nvfp4_gemm", "nvfp4_fused",
             "nvfp4_dynamic"]
    lines.append("| G,K,N | T | " + " | ".join(names) + " | quantizer µs (copy-bandwidth fraction) |")
    lines.append("|---|---|" + "---|" * (len(names) + 1))
    for key, rows in results.items():
        shape, tokens = key.rsplit(" T=", 1)
        cells = []
        for name in names:
            r = rows[name]
            cells.append("n/a" if "error" in r else f"{r['us']:.1f} ({r['speedup_vs_bf16']:.2f}×)")
        q = rows["quantizer"]
        lines.append(f"| {shape} | {tokens} | " + " | ".join(cells) + f" | {q['us']:.1f} ({q['fraction_of_copy_bandwidth']:.0%}) |")
    errors = sorted({f"{name}: {rows[name]['error']}"
                     for rows in results.values() for name in names if "error" in rows[name]})
    lines += ["", "n/a: " + "; ".join(errors)] if errors else []
    return "\n".join(lines) + "\n"


def source_commit(folder: Path = Path(__file__).resolve().parent) -> str:
    """``NVFP4LAB_COMMIT`` when set (a copy of the tree without ``.git``, as on the lent GPU
    machines), else ``git rev-parse HEAD`` of the checkout holding ``folder`` (nvfp4lab's
    own), or ``"unknown"`` when that is no git checkout or git is missing."""
    if os.environ.get("NVFP4LAB_COMMIT"):
        return os.environ["NVFP4LAB_COMMIT"]
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def run_meta(card: str, fp8_cast_mode: str | None) -> dict:
    """The JSON's ``meta``: what ran, where, and from which commit."""
    return {"card": card, "torch": torch.__version__, "commit": source_commit(),
            "method": "CUDA graph replay, median of 5×20, L2-rotated weights",
            "fp8_blockwise_cast": fp8_cast_mode}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--tokens", type=int, nargs="+", default=TOKENS)
    parser.add_argument("--shapes", type=str, nargs="+", default=[",".join(map(str, s)) for s in SHAPES],
                        help="G,K,N triples")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("the benchmark needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = False
    card = torch.cuda.get_device_name()
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes]
    results = {}
    points = [(s, t) for s in shapes for t in args.tokens]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = card.replace(" ", "_")
    meta = run_meta(card, FP8_CAST.mode if FP8_CAST else None)
    for (g, k, n), t in tqdm(points, desc="benchmark"):
        results[f"{g},{k},{n} T={t}"] = bench_point(Problem(g, k, n, t))
        meta["fp8_blockwise_cast"] = FP8_CAST.mode if FP8_CAST else None  # known once a point has cast
        torch.cuda.empty_cache()
        # written after every point: an interrupted run keeps what it measured
        (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
        (args.out / f"{stem}.md").write_text(markdown(card, results, meta["fp8_blockwise_cast"]))
    print(markdown(card, results, meta["fp8_blockwise_cast"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
