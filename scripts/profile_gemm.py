"""Run one grouped-GEMM configuration of ``nvfp4lab.gemm``'s ``"cutedsl"`` backend a few
times, for a profiler to attach to: ``ncu -k regex:grouped_gemm python scripts/profile_gemm.py
G K N T`` (per-group dynamic global scales, random bf16 operands). Needs a CUDA GPU of compute
capability 9.0+ and CuTeDSL."""

import argparse

import torch

from nvfp4lab.cli import positive_int
from nvfp4lab.kernels import gpu_supported


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    for name, what in (("G", "groups"), ("K", "reduction width (multiple of 64)"),
                       ("N", "outputs per group (multiple of 128)"), ("T", "tokens per group")):
        parser.add_argument(name, type=positive_int, help=what)
    args = parser.parse_args(argv)
    if not gpu_supported(torch.device("cuda")):
        parser.error("needs a CUDA GPU with compute capability >= 9.0 and CuTeDSL (nvidia-cutlass-dsl)")
    return args


def run(groups: int, k: int, n: int, tokens: int) -> None:
    from nvfp4lab import layouts, quantize_nvfp4
    from nvfp4lab.gemm import cutedsl_grouped_gemm
    from nvfp4lab.quantize import dynamic_global_scale

    x = torch.randn(groups, tokens, k, device="cuda").to(torch.bfloat16)
    w = torch.randn(groups, n, k, device="cuda").to(torch.bfloat16)
    gs_a = dynamic_global_scale(x, per_group=True, group_dim=0)
    gs_b = dynamic_global_scale(w, per_group=True, group_dim=0)
    mat_a, scale_a, offsets = layouts.grouped_a_operand(quantize_nvfp4(x, gs_a, group_dim=0))
    mat_b, scale_b = layouts.grouped_b_operand(quantize_nvfp4(w, gs_b, group_dim=0))
    for _ in range(3):
        cutedsl_grouped_gemm(mat_a, mat_b, scale_a, scale_b, offsets, gs_a, gs_b, tokens=tokens)
    torch.cuda.synchronize()


def main(argv=None) -> int:
    args = parse(argv)
    run(args.G, args.K, args.N, args.T)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
