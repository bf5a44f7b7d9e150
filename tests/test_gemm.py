"""The reference grouped GEMM against a float64 einsum of the dequantized operands."""

import pytest
import torch
from helpers import heavy_tailed

from nvfp4lab import dequantize_nvfp4, quantize_nvfp4, run_nvfp4_grouped_gemm
from nvfp4lab.layouts import grouped_b_operand, swizzle_scales
from nvfp4lab.quantize import dynamic_global_scale


def make_operands(row_counts, n, k, seed=0):
    """Variable-size groups: rows of group g padded to 128, as the layout requires."""
    g = torch.Generator().manual_seed(seed)
    groups = len(row_counts)
    w = heavy_tailed((groups, n, k), g)
    gs_b = dynamic_global_scale(w, per_group=True, group_dim=0)
    wq = quantize_nvfp4(w, gs_b, group_dim=0)
    mat_b, scale_b = grouped_b_operand(wq)
    a_parts, s_parts, expected, ends = [], [], [], []
    gs_a = torch.empty(groups)
    for i, m in enumerate(row_counts):  # test set-up only
        x = heavy_tailed((m, k), g)
        q = quantize_nvfp4(x)
        gs_a[i] = q.global_scale
        mp = -(-m // 128) * 128
        data = torch.zeros(mp, k // 2, dtype=torch.uint8)
        data[:m] = q.data.view(torch.uint8)
        sc = torch.zeros(mp, k // 16, dtype=torch.uint8)
        sc[:m] = q.scales.view(torch.uint8)
        a_parts.append(data)
        s_parts.append(swizzle_scales(sc))
        ends.append((ends[-1] if ends else 0) + mp)
        a = dequantize_nvfp4(q, apply_global_scale=False).double()  # e2m1·s: exact
        b = dequantize_nvfp4(wq, apply_global_scale=False).double()[i]
        exact = (a @ b.T) * (float(q.global_scale) * float(gs_b[i]))
        block = torch.zeros(mp, n, dtype=torch.float64)
        block[:m] = exact
        expected.append(block)
    operands = (
        torch.cat(a_parts).view(torch.float4_e2m1fn_x2),
        mat_b,
        torch.cat(s_parts).view(torch.float8_e4m3fn),
        scale_b,
        torch.tensor(ends, dtype=torch.int32),
        gs_a,
        gs_b,
    )
    return operands, torch.cat(expected)


def assert_close_to_exact(out, exact):
    """fp32 accumulation then one bf16 rounding: within 1 bf16 ulp of the exact result
    plus fp32 summation error (K·2^-24 relative to Σ|terms|, far below a bf16 ulp here)."""
    assert out.dtype == torch.bfloat16
    ulp = torch.where(exact == 0, torch.zeros_like(exact), 2.0 ** (torch.floor(torch.log2(exact.abs())) - 7))
    assert ((out.double() - exact).abs() <= ulp + 1e-30).all()


@pytest.mark.parametrize("row_counts", [[1], [5, 130, 0, 64], [128, 128]])
def test_reference_equals_float64_einsum_up_to_bf16_rounding(row_counts):
    operands, exact = make_operands(row_counts, n=96, k=128)
    out = run_nvfp4_grouped_gemm(*operands)
    assert out.shape == exact.shape
    assert_close_to_exact(out, exact)


def test_bad_operands_are_rejected_before_any_work():
    operands, _ = make_operands([3, 3], n=32, k=64)
    mat_a, mat_b, scale_a, scale_b, offsets, gs_a, gs_b = operands
    cases = [
        ((mat_a.view(torch.uint8), mat_b, scale_a, scale_b, offsets, gs_a, gs_b), TypeError, "mat_a"),
        ((mat_a, mat_b, scale_a[:128], scale_b, offsets, gs_a, gs_b), ValueError, "scale_a"),
        ((mat_a, mat_b, scale_a, scale_b, offsets.long(), gs_a, gs_b), TypeError, "expert_offsets"),
        ((mat_a, mat_b, scale_a, scale_b, torch.tensor([100, 256], dtype=torch.int32), gs_a, gs_b), ValueError, "multiples of 128"),
        ((mat_a, mat_b, scale_a, scale_b, torch.tensor([256, 128], dtype=torch.int32), gs_a, gs_b), ValueError, "non-decreasing"),
        ((mat_a, mat_b, scale_a, scale_b, offsets, gs_a[:1], gs_b), ValueError, "global_scale_a"),
        ((mat_a, mat_b, scale_a, scale_b, offsets, torch.zeros(2), gs_b), ValueError, "global_scale_a"),
        ((mat_a[:, :16], mat_b, scale_a, scale_b, offsets, gs_a, gs_b), ValueError, "K/2"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            run_nvfp4_grouped_gemm(*args)
    with pytest.raises(ValueError, match="backend"):
        run_nvfp4_grouped_gemm(*operands, backend="triton")
