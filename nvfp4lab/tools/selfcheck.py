"""A small workload over every kernel and code path, on odd sizes, checked against the
reference: ``python -m nvfp4lab.tools.selfcheck``. Run it under
``compute-sanitizer --tool memcheck`` (and ``racecheck``) to check memory safety.

Paths: dynamic per-group amax, quantizer (odd T, K not a multiple of 64 for the
quantizer, zero padding rows; a thread per 16-element block and per 64-element row slice),
grouped GEMM small / wgmma / split-K / padded output, and the layer's forward (the decode
kernel up to T = 32 at N = 384, static and dynamic; the prefill kernel on odd K and T).
"""

from __future__ import annotations

import torch

from nvfp4lab import Nvfp4GroupedLinear, layouts, quantize_nvfp4, run_nvfp4_grouped_gemm
from nvfp4lab.gemm import cutedsl_grouped_gemm
from nvfp4lab.kernels import gpu_supported, launch
from nvfp4lab.layouts import ROW_TILE, round_up
from nvfp4lab.quantize import NVFP4Tensor, dynamic_global_scale


def check_quantizer(tokens: int, groups: int, k: int) -> None:
    x = (torch.randn(tokens, groups, k, device="cuda") * 3).to(torch.bfloat16)
    rows_p = round_up(tokens, ROW_TILE)
    data = torch.empty(groups * rows_p, k // 2, dtype=torch.uint8, device="cuda")
    scales = torch.zeros(groups * rows_p, round_up(k // 16, 4), dtype=torch.uint8, device="cuda")
    used = torch.empty(groups, device="cuda")
    amax_bits = torch.empty(groups, dtype=torch.int32, device="cuda")
    launch.group_amax(x, amax_bits)
    gs = dynamic_global_scale(x.cpu(), per_group=True)
    q = quantize_nvfp4(x.cpu(), gs)
    by_group = NVFP4Tensor(q.data.transpose(0, 1), q.scales.transpose(0, 1), gs, torch.Size((groups, tokens, k)), q.dtype, 0)
    ref_data, ref_scales, _ = layouts.grouped_a_operand(by_group)
    for row_slices in (False, True) if k % 64 == 0 else (False,):  # a thread per 16-element block / 64-element slice
        data.fill_(0xAB)
        scales.zero_()  # padding columns stay zero (never written); the rest must be written again
        launch.quantize_activations(x, amax_bits.view(torch.float32), data, scales, used, dynamic=True, shared=False,
                                    row_slices=row_slices)
        assert torch.equal(data.cpu(), ref_data.view(torch.uint8)), (tokens, groups, k, row_slices)
        assert torch.equal(scales.cpu(), ref_scales.view(torch.uint8)), (tokens, groups, k, row_slices)


def check_gemm(tokens: int, groups: int, k: int, n: int) -> None:
    x = torch.randn(groups, tokens, k, device="cuda").to(torch.bfloat16)
    w = torch.randn(groups, n, k, device="cuda").to(torch.bfloat16)
    mat_a, scale_a, offsets = layouts.grouped_a_operand(quantize_nvfp4(x, dynamic_global_scale(x, per_group=True, group_dim=0), group_dim=0))
    gs_a = dynamic_global_scale(x, per_group=True, group_dim=0)
    gs_b = dynamic_global_scale(w, per_group=True, group_dim=0)
    mat_b, scale_b = layouts.grouped_b_operand(quantize_nvfp4(w, gs_b, group_dim=0))
    ops = (mat_a, mat_b, scale_a, scale_b, offsets, gs_a, gs_b)
    ref = run_nvfp4_grouped_gemm(*ops).float()
    padded = run_nvfp4_grouped_gemm(*ops, backend="cutedsl").float()
    z = cutedsl_grouped_gemm(*ops, tokens=tokens).float()
    rows_p = round_up(tokens, ROW_TILE)
    ref_z = ref.view(groups, rows_p, n)[:, :tokens].transpose(0, 1)
    for got, want in ((padded, ref), (z, ref_z)):
        error = ((got - want).norm() / want.norm()).item()
        assert error < 2e-3, (tokens, groups, k, n, error)


def check_prefill() -> None:
    """The warp-specialized prefill GEMM above the decode range: K = 192 (an odd number of
    64-K stages: one split), N = 768 (several channel tiles), T across the token tiles; then
    K = 512 with 1, 2, 4 and 8 K splits (``launch.prefill_splits`` forced)."""
    for heads, splits_tried in ((3, (1,)), (8, (1, 2, 4, 8))):
        w = torch.randn(2, heads * 64, 768, device="cuda").to(torch.bfloat16)
        layers = [Nvfp4GroupedLinear(2, heads, 64, 768, max_num_tokens=300, device="cuda", backend=backend)
                  for backend in ("cutedsl", "reference")]
        for layer in layers:
            layer.set_bf16_weight(w)
            layer.finalize_weights()
        chosen = launch.prefill_splits
        try:
            for splits in splits_tried:
                launch.prefill_splits = lambda *args, splits=splits: splits
                for tokens in (33, 128, 256, 300):
                    assert launch.prefill_selected(tokens, 2, heads * 64, 768, 132)
                    o = torch.randn(tokens, 2 * heads, 64, device="cuda").to(torch.bfloat16)
                    got, want = layers[0](o).float(), layers[1](o).float()
                    error = ((got - want).norm() / want.norm()).item()
                    assert error < 2e-3, ("prefill", heads * 64, splits, tokens, error)
        finally:
            launch.prefill_splits = chosen


def main() -> int:
    if not gpu_supported(torch.device("cuda")):
        print("selfcheck: needs a CUDA GPU with compute capability >= 9.0 and CuTeDSL (nvidia-cutlass-dsl)")
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    for shape in ((1, 3, 96), (7, 2, 48), (129, 5, 64), (300, 2, 1040)):
        check_quantizer(*shape)
    for shape in ((1, 2, 128, 128), (7, 3, 64, 256), (40, 2, 192, 128), (130, 2, 128, 384), (1, 8, 4096, 1024)):
        check_gemm(*shape)
    w = torch.randn(2, 128, 384, device="cuda").to(torch.bfloat16)
    for source in ("dynamic", "static"):  # N = 384, no prefill tile: the decode kernel to T = 32 (a partly filled CTA)
        layers = [Nvfp4GroupedLinear(2, 2, 64, 384, max_num_tokens=50, device="cuda", activation_scale_source=source,
                                     activation_scale="per_group", backend=backend) for backend in ("cutedsl", "reference")]
        for layer in layers:
            layer.set_bf16_weight(w)
            layer.finalize_weights()
        for tokens in (1, 9, 16, 24, 33, 50):  # the decode kernel (1, 2, 4 token tiles), then quantizer + wgmma GEMM
            o = torch.randn(tokens, 4, 64, device="cuda").to(torch.bfloat16)
            got, want = layers[0](o).float(), layers[1](o).float()
            error = ((got - want).norm() / want.norm()).item()
            assert error < 2e-3, (source, tokens, error)
    check_prefill()
    torch.cuda.synchronize()
    print("selfcheck: all kernel paths match the reference")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
