"""The decode forward for a profiler or a split sweep:
``ncu -k regex:decode python scripts/profile_decode.py G K N T`` (a few launches), or
``python scripts/profile_decode.py G K N T --sweep`` (µs per call, CUDA graph, for CTA targets)."""

import os
import sys

import torch

from nvfp4lab import Nvfp4GroupedLinear
from nvfp4lab.bench import time_graph

groups, k, n, tokens = (int(v) for v in sys.argv[1:5])
layer = Nvfp4GroupedLinear(groups, k // 512, 512, n, max_num_tokens=tokens, device="cuda", check_finite=False)
layer.set_bf16_weight((torch.randn(groups, k, n, device="cuda") / 64).to(torch.bfloat16))
layer.finalize_weights()
o = torch.randn(tokens, groups * k // 512, 512, device="cuda").to(torch.bfloat16)
if "--sweep" in sys.argv:
    from nvfp4lab.kernels import launch

    for target in (66, 132, 264, 528):
        os.environ["NVFP4LAB_DECODE_CTAS"] = str(target)
        splits = launch.decode_splits(groups, n, k, target)
        print(f"G,K,N={groups},{k},{n} T={tokens} target {target} CTAs: splits {splits}: "
              f"{time_graph(lambda i: layer(o), 1):.1f} µs (weights L2-resident)")
else:
    for _ in range(3):
        layer(o)
    torch.cuda.synchronize()
