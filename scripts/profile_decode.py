"""The layer's forward for a profiler, or a sweep of the decode kernel's CTA target:
``ncu -k regex:decode python scripts/profile_decode.py G K N T`` (a few launches of the forward
T takes: the decode kernel for T <= 16, else the quantizer and the prefill or grouped GEMM), or
``python scripts/profile_decode.py G K N T --sweep`` (µs per call: CUDA graph, weights rotated beyond L2).
Needs a CUDA GPU of compute capability 9.0+ and CuTeDSL."""

import argparse
import os

import torch

from nvfp4lab.cli import positive_int
from nvfp4lab.kernels import gpu_supported


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, what in (("G", "groups"), ("K", "reduction width per group"), ("N", "outputs per group"),
                       ("T", "tokens")):
        parser.add_argument(name, type=positive_int, help=what)
    parser.add_argument("--sweep", action="store_true",
                        help="time the decode kernel at the CTA targets in $TARGETS (default '132 264 528')")
    args = parser.parse_args(argv)
    if not gpu_supported(torch.device("cuda")):
        parser.error("needs a CUDA GPU with compute capability >= 9.0 and CuTeDSL (nvidia-cutlass-dsl)")
    return args


def sweep(groups: int, k: int, n: int, tokens: int) -> None:
    from nvfp4lab.bench import Problem, copies_for, time_graph
    from nvfp4lab.kernels import launch

    p = Problem(groups, k, n, tokens)
    copies = copies_for(p.words.numel() * 4)
    weights = [(None, None, p.words.clone(), p.word_scales.clone()) for _ in range(copies)]
    for target in [int(v) for v in os.environ.get("TARGETS", "132 264 528").split()]:
        launch.multiprocessors = lambda index, target=target: target  # the layer's forward aims at this CTA count
        splits = launch.decode_splits(groups, n, k, target, tokens)
        for dynamic in (False, True):
            us = time_graph(lambda i: p.forward(weights[i], dynamic=dynamic), copies)
            print(f"G,K,N={groups},{k},{n} T={tokens} dynamic={dynamic} CTA target {target}: "
                  f"splits {splits}: {us:.1f} µs")


def forward(groups: int, k: int, n: int, tokens: int) -> None:
    from nvfp4lab.bench import Problem

    p = Problem(groups, k, n, tokens)
    for _ in range(3):
        p.forward((p.mat_b, p.scale_b, p.words, p.word_scales), dynamic=False)
    torch.cuda.synchronize()


def main(argv=None) -> int:
    args = parse(argv)
    (sweep if args.sweep else forward)(args.G, args.K, args.N, args.T)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
