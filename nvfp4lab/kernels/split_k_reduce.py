"""CuTeDSL kernel: finish a split-K grouped GEMM.

``z[t, g, n] = bf16( (Σ_s partials[s, t, g, n]) · (gs_a[g] · gs_b[g] · 2^18) )``, the
splits added in order 0, 1, … (deterministic). ``partials`` carry the GEMM kernel's
``2^-18`` operand scaling (see ``grouped_gemm``), undone here exactly.
"""

from __future__ import annotations

import cuda.bindings.driver as cuda
import cutlass
import cutlass.cute as cute
from cutlass import BFloat16, Float32, Int32

from nvfp4lab.kernels.grouped_gemm import ALPHA_POST

THREADS = 256


@cute.kernel
def split_k_reduce_kernel(partials: cute.Tensor, gs_a: cute.Tensor, gs_b: cute.Tensor, out: cute.Tensor,
                          elements: Int32, groups: Int32, n_out: Int32, splits: Int32):
    tidx, _, _ = cute.arch.thread_idx()
    bidx, _, _ = cute.arch.block_idx()
    index = bidx * THREADS + tidx
    if index < elements:
        g = (index // n_out) % groups
        total = partials[index]
        for s in cutlass.range(1, splits):
            total = total + partials[s * elements + index]
        alpha = (gs_a[g] * gs_b[g]) * Float32(ALPHA_POST)
        out[index] = (total * alpha).to(BFloat16)


@cute.jit
def split_k_reduce(partials_ptr: cute.Pointer, gs_a_ptr: cute.Pointer, gs_b_ptr: cute.Pointer, out_ptr: cute.Pointer,
                   elements: Int32, groups: Int32, n_out: Int32, splits: Int32, stream: cuda.CUstream):
    """Host entry: ``partials (splits, T·G·N)`` fp32 -> ``out (T·G·N)`` bf16."""
    partials = cute.make_tensor(partials_ptr, cute.make_layout(splits * elements))
    gs_a = cute.make_tensor(gs_a_ptr, cute.make_layout(groups))
    gs_b = cute.make_tensor(gs_b_ptr, cute.make_layout(groups))
    out = cute.make_tensor(out_ptr, cute.make_layout(elements))
    split_k_reduce_kernel(partials, gs_a, gs_b, out, elements, groups, n_out, splits).launch(
        grid=[(elements + THREADS - 1) // THREADS, 1, 1], block=[THREADS, 1, 1], stream=stream
    )
