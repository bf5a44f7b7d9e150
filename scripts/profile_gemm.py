"""Run one grouped-GEMM configuration a few times, for a profiler to attach to:
``ncu -k regex:grouped_gemm python scripts/profile_gemm.py G K N T``."""

import sys

import torch

from nvfp4lab import layouts, quantize_nvfp4
from nvfp4lab.gemm import cutedsl_grouped_gemm
from nvfp4lab.quantize import dynamic_global_scale

groups, k, n, tokens = (int(v) for v in sys.argv[1:5])
x = torch.randn(groups, tokens, k, device="cuda").to(torch.bfloat16)
w = torch.randn(groups, n, k, device="cuda").to(torch.bfloat16)
gs_a = dynamic_global_scale(x, per_group=True, group_dim=0)
gs_b = dynamic_global_scale(w, per_group=True, group_dim=0)
mat_a, scale_a, offsets = layouts.grouped_a_operand(quantize_nvfp4(x, gs_a, group_dim=0))
mat_b, scale_b = layouts.grouped_b_operand(quantize_nvfp4(w, gs_b, group_dim=0))
for _ in range(3):
    cutedsl_grouped_gemm(mat_a, mat_b, scale_a, scale_b, offsets, gs_a, gs_b, tokens=tokens)
torch.cuda.synchronize()
