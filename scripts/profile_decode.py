"""The layer's forward for a profiler, or a sweep of the decode kernel's CTA target:
``ncu -k regex:decode python scripts/profile_decode.py G K N T`` (a few launches of the forward
T takes: the decode kernel for T <= 16, else the quantizer and the grouped GEMM), or
``python scripts/profile_decode.py G K N T --sweep`` (µs per call: CUDA graph, weights rotated beyond L2)."""

import os
import sys

import torch

from nvfp4lab.bench import Problem, copies_for, time_graph
from nvfp4lab.kernels import launch

groups, k, n, tokens = (int(v) for v in sys.argv[1:5])
p = Problem(groups, k, n, tokens)
if "--sweep" in sys.argv:
    copies = copies_for(p.words.numel() * 4)
    weights = [(None, None, p.words.clone(), p.word_scales.clone()) for _ in range(copies)]
    for target in [int(v) for v in os.environ.get("TARGETS", "132 264 528").split()]:
        launch.multiprocessors = lambda index, target=target: target  # the layer's forward aims at this CTA count
        splits = launch.decode_splits(groups, n, k, target, tokens)
        for dynamic in (False, True):
            us = time_graph(lambda i: p.forward(weights[i], dynamic=dynamic), copies)
            print(f"G,K,N={groups},{k},{n} T={tokens} dynamic={dynamic} CTA target {target}: splits {splits}: {us:.1f} µs")
else:
    for _ in range(3):
        p.forward((p.mat_b, p.scale_b, p.words, p.word_scales), dynamic=False)
    torch.cuda.synchronize()
