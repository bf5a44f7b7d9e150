"""Host side of the CuTeDSL kernels: compile once per configuration, launch from torch
tensors on the current stream.

Kernels are compiled on first use (``functools.cache`` per kernel configuration; shapes
are runtime arguments, so one compilation serves every T, G, K, N) and called with raw
device pointers, so a launch costs no DLPack conversion and can be captured in a CUDA
graph. Nothing here reads device memory on the host: no synchronisation.
"""

from __future__ import annotations

import functools
import os

import torch

os.environ.setdefault("CUTE_DSL_ARCH", "sm_90a")

import cuda.bindings.driver as cuda  # noqa: E402
import cutlass  # noqa: E402
import cutlass.cute as cute  # noqa: E402
from cutlass import Int32  # noqa: E402
from cutlass.cute.runtime import make_fake_stream, make_ptr  # noqa: E402

from nvfp4lab.kernels import amax as amax_kernel  # noqa: E402
from nvfp4lab.kernels import decode_gemm as decode_kernel  # noqa: E402
from nvfp4lab.kernels import grouped_gemm as gemm_kernel  # noqa: E402
from nvfp4lab.kernels import grouped_gemm_wgmma as wgmma_kernel  # noqa: E402
from nvfp4lab.kernels import prefill_gemm as prefill_kernel  # noqa: E402
from nvfp4lab.kernels import quantize_activations as quant_kernel  # noqa: E402
from nvfp4lab.kernels import split_k_reduce as reduce_kernel  # noqa: E402

GMEM = cute.AddressSpace.gmem
_DTYPES = {
    torch.bfloat16: cutlass.BFloat16,
    torch.float32: cutlass.Float32,
    torch.int32: cutlass.Int32,
    torch.uint8: cutlass.Uint8,
}


def pointer(t: torch.Tensor | None, dtype=None, align: int = 16):
    """A CuTe pointer to ``t``'s data (a dummy address when ``t`` is None: compile only)."""
    dtype = dtype or _DTYPES[t.dtype]
    if t is not None and t.data_ptr() % align:
        raise ValueError(f"a kernel operand must start on a {align}-byte boundary (got address {t.data_ptr():#x})")
    return make_ptr(dtype, 16 * 1024 if t is None else t.data_ptr(), GMEM, assumed_align=align)


def stream_of(device: torch.device | None):
    if device is None:
        return make_fake_stream()
    return cuda.CUstream(torch.cuda.current_stream(device).cuda_stream)


# ------------------------------------------------------------------ compilation
# Each compile_* builds the kernel from placeholder pointers; the pointer dtypes and
# alignments are part of the compiled signature, the addresses and sizes are not.

def _compiler(keep_ptx: bool):
    """``cute.compile``, keeping the PTX (in ``CUTE_DSL_DUMP_DIR``) when asked."""
    return cute.compile[cute.KeepPTX()] if keep_ptx else cute.compile

def _quantize_args(x=None, source=None, data=None, scales=None, used=None):
    return (
        pointer(x, cutlass.BFloat16, 32),
        pointer(source, cutlass.Float32, 4),
        pointer(data, cutlass.Uint32, 16),
        pointer(scales, cutlass.Uint8, 4),
        pointer(used, cutlass.Float32, 4),
    )


@functools.cache
def compile_quantize_activations(dynamic: bool, shared: bool, packed_scales: bool = True, keep_ptx: bool = False):
    return _compiler(keep_ptx)(quant_kernel.quantize_activations, *_quantize_args(), *[Int32(1)] * 4,
                               make_fake_stream(), dynamic, shared, packed_scales)


def _amax_args(x=None, amax_bits=None):
    return pointer(x, cutlass.BFloat16, 32), pointer(amax_bits, cutlass.Int32, 4)


@functools.cache
def compile_group_amax(keep_ptx: bool = False):
    return _compiler(keep_ptx)(amax_kernel.group_amax, *_amax_args(), *[Int32(1)] * 3, make_fake_stream())


def _gemm_args(mat_a=None, scale_a=None, mat_b=None, scale_b=None, offsets=None, gs_a=None, gs_b=None, out=None,
               partials=None):
    return (
        pointer(mat_a, cutlass.Uint32, 16),
        pointer(scale_a, cutlass.Uint32, 16),
        pointer(mat_b, cutlass.Uint32, 16),
        pointer(scale_b, cutlass.Uint32, 16),
        pointer(offsets, cutlass.Int32, 4),
        pointer(gs_a, cutlass.Float32, 4),
        pointer(gs_b, cutlass.Float32, 4),
        pointer(out, cutlass.BFloat16, 4),
        pointer(partials, cutlass.Float32, 4),
    )


CONFIGS = {"small": gemm_kernel.SMALL, "wgmma": wgmma_kernel.WGMMA}
#: Token counts up to this use the decode configuration (BM=16, deep cp.async ring).
SMALL_TOKENS = 32


@functools.cache
def compile_grouped_gemm(config: str, padded_output: bool, split_k: bool = False, keep_ptx: bool = False):
    entry = wgmma_kernel.grouped_gemm_wgmma if config == "wgmma" else gemm_kernel.grouped_gemm
    return _compiler(keep_ptx)(entry, *_gemm_args(), *[Int32(1)] * 8, make_fake_stream(), CONFIGS[config],
                               padded_output, split_k)


def _reduce_args(partials=None, gs_a=None, gs_b=None, out=None):
    return (pointer(partials, cutlass.Float32, 4), pointer(gs_a, cutlass.Float32, 4), pointer(gs_b, cutlass.Float32, 4),
            pointer(out, cutlass.BFloat16, 2))


@functools.cache
def compile_split_k_reduce(keep_ptx: bool = False):
    return _compiler(keep_ptx)(reduce_kernel.split_k_reduce, *_reduce_args(), *[Int32(1)] * 4, make_fake_stream())


def _decode_args(x=None, source=None, words=None, scales=None, gs_w=None, out=None, partials=None, counters=None):
    return (
        pointer(x, cutlass.BFloat16, 32),
        pointer(source, cutlass.Float32, 4),
        pointer(words, cutlass.Uint32, 16),
        pointer(scales, cutlass.Uint32, 8),
        pointer(gs_w, cutlass.Float32, 4),
        pointer(out, cutlass.BFloat16, 8),
        pointer(partials, cutlass.Float32, 16),
        pointer(counters, cutlass.Int32, 4),
    )


@functools.cache
def compile_decode_forward(n_tiles: int, dynamic: bool, shared: bool, split_k: bool, guarded: bool = True,
                           keep_ptx: bool = False):
    return _compiler(keep_ptx)(decode_kernel.decode_forward, *_decode_args(), *[Int32(1)] * 5, make_fake_stream(),
                               n_tiles, dynamic, shared, split_k, guarded)


def _prefill_args(a_data=None, a_scales=None, words=None, scales=None, gs_a=None, gs_w=None, out=None):
    return (
        pointer(a_data, cutlass.Uint32, 16),
        pointer(a_scales, cutlass.Uint32, 16),
        pointer(words, cutlass.Uint32, 16),
        pointer(scales, cutlass.Uint32, 8),
        pointer(gs_a, cutlass.Float32, 4),
        pointer(gs_w, cutlass.Float32, 4),
        pointer(out, cutlass.BFloat16, 2),
    )


@functools.cache
def compile_prefill_gemm(keep_ptx: bool = False):
    return _compiler(keep_ptx)(prefill_kernel.prefill_gemm, *_prefill_args(), *[Int32(1)] * 5, make_fake_stream())


@functools.cache
def multiprocessors(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def split_count(ctas: int, k_tiles: int, sms: int, ctas_per_sm: int = 4) -> int:
    """Splits of K (a power of two) so that about ``ctas_per_sm`` CTAs per SM share the
    work, each split keeping at least 8 K-stages."""
    splits = 1
    while ctas * splits * 2 <= ctas_per_sm * sms and k_tiles // (splits * 2) >= 8:
        splits *= 2
    return splits


def gemm_config(tokens: int | None, rows_per_group_hint: int) -> str:
    """The GEMM configuration for ``tokens`` rows per group (``None``: the padded form,
    ``rows_per_group_hint`` rows): ``"small"`` (mma.sync, BM=16) up to ``SMALL_TOKENS``,
    else ``"wgmma"`` (128 × 128 warpgroup MMA)."""
    count = rows_per_group_hint if tokens is None else tokens
    return "small" if count <= SMALL_TOKENS else "wgmma"


def decode_token_tiles(tokens: int) -> int:
    """Token tiles of 8 the decode kernel runs for ``tokens`` (1, 2 or 4)."""
    return 1 if tokens <= 8 else 2 if tokens <= 16 else 4


def decode_splits(groups: int, n: int, k: int, sms: int, tokens: int = 1) -> int | None:
    """K slices (a power of two dividing K/64) for the decode kernel: the fewest that give
    about two CTAs per SM for T <= 8, about one for T > 8 (two or four token tiles: more MMAs
    and partial sums per CTA), each slice at most ``MAX_SLICE`` / token tiles; None
    when no split fits. Measured best on the H100 for the three benchmark shapes (T=1: 256,
    256, 384 CTAs; T=16: 128, 256, 384; ``bench/results/*_decode_paths.md``)."""
    max_slice = decode_kernel.MAX_SLICE // decode_token_tiles(tokens)
    chunks = k // decode_kernel.K_CHUNK
    ctas = groups * -(-n // decode_kernel.CHANNELS_PER_CTA)
    target = (1.9 if tokens <= 8 else 0.95) * sms
    splits = 1
    while chunks % (2 * splits) == 0 and (k // splits > max_slice or ctas * splits < target):
        splits *= 2
    return splits if k // splits <= max_slice else None


def decode_counters(groups: int, n: int, device) -> torch.Tensor:
    """The decode kernel's per-tile split-K counters (zeros; every launch leaves them zero)."""
    return torch.zeros(groups * -(-n // decode_kernel.CHANNELS_PER_CTA), dtype=torch.int32, device=device)


def decode_supported(tokens: int, groups: int, k: int, n: int, sms: int = 132) -> bool:
    """Whether the one-launch decode forward takes this shape (else the quantizer + GEMM)."""
    return (0 < tokens <= decode_kernel.MAX_TOKENS and k % decode_kernel.K_CHUNK == 0 and n % 16 == 0
            and decode_splits(groups, n, k, sms, tokens) is not None)


# ------------------------------------------------------------------ launches
def group_amax(x: torch.Tensor, amax_bits: torch.Tensor) -> None:
    """``amax_bits (G,)`` int32 := bits of ``max |x[:, g, :]|`` for ``x (T, G, K)`` bf16."""
    tokens, groups, k = x.shape
    amax_bits.zero_()
    compile_group_amax()(*_amax_args(x, amax_bits), Int32(tokens), Int32(groups), Int32(k // 16), stream_of(x.device))


def quantize_activations(
    x: torch.Tensor,
    scale_source: torch.Tensor,
    data: torch.Tensor,
    scales: torch.Tensor,
    used_scale: torch.Tensor,
    *,
    dynamic: bool,
    shared: bool,
) -> None:
    """Quantize ``x (T, G, K)`` bf16 into ``data (G·Mp, K/2)`` uint8 and ``scales
    (G·Mp, round_up(K/16,4))`` uint8 (swizzled), with ``Mp = round_up(T, 128)``.

    ``scale_source (G,)`` float32 holds the static global scales or (``dynamic``) the
    per-group amaxes; ``used_scale (G,)`` receives the global scale each group used.
    """
    tokens, groups, k = x.shape
    rows_per_group = data.shape[0] // groups
    compile_quantize_activations(dynamic, shared, k % 64 == 0)(
        *_quantize_args(x, scale_source, data, scales, used_scale),
        Int32(tokens), Int32(groups), Int32(k // 16), Int32(rows_per_group), stream_of(x.device),
    )


def grouped_gemm(mat_a, scale_a, mat_b, scale_b, offsets, gs_a, gs_b, out, *, tokens: int | None) -> None:
    """Launch the grouped GEMM. ``tokens`` given: write ``out`` as ``z (T, G, N)``;
    None: write the padded ``(R, N)`` form."""
    rows, half_k = mat_a.shape
    groups, n, _ = mat_b.shape
    padded = tokens is None
    config = gemm_config(tokens, rows // max(groups, 1))
    cfg = CONFIGS[config]
    k = 2 * half_k
    m_tiles = rows // cfg.bm if padded else -(-tokens // cfg.bm)
    row_stride = n if padded else groups * n
    splits = 1
    if not padded:
        ctas_per_sm = 4 if config == "small" else 2  # what their shared memory allows
        splits = split_count((n // cfg.bn) * m_tiles * groups, k // gemm_kernel.BK,
                             multiprocessors(mat_a.device.index or 0), ctas_per_sm)
    partials = None
    if splits > 1:  # from torch's caching allocator: no sync, and graph-capturable
        partials = torch.empty(splits * tokens * groups * n, dtype=torch.float32, device=mat_a.device)
    stream = stream_of(mat_a.device)
    compile_grouped_gemm(config, padded, splits > 1)(
        *_gemm_args(mat_a, scale_a, mat_b, scale_b, offsets, gs_a, gs_b, out, partials),
        Int32(rows), Int32(groups), Int32(n), Int32(k), Int32(0 if padded else tokens),
        Int32(m_tiles), Int32(row_stride), Int32(splits), stream,
    )
    if splits > 1:
        compile_split_k_reduce()(*_reduce_args(partials, gs_a, gs_b, out), Int32(tokens * groups * n), Int32(groups),
                                 Int32(n), Int32(splits), stream)


#: The forward's GEMM is the warp-specialized prefill kernel (``prefill_gemm``, 256 channels ×
#: 128 tokens per CTA, one CTA per SM) from one full token tile (T >= 128) on when its grid has
#: at least this fraction of the SMs in CTAs, else the grouped GEMM (split K over more,
#: smaller CTAs). Measured on the H200 for the three benchmark shapes at T = 64..8192
#: (``bench/results/NVIDIA_H200_prefill_paths.md``): the prefill kernel wins from 64 CTAs of
#: full tiles on, loses at 32 and 48 CTAs and at T = 64 (half-empty tiles).
PREFILL_MIN_WAVE = float(os.environ.get("NVFP4LAB_PREFILL_MIN_WAVE", 0.45))  # experiments may override it


def prefill_supported(groups: int, k: int, n: int) -> bool:
    """Whether the prefill kernel takes this shape (its tiles: K % 64 == 0, N % 256 == 0)."""
    return groups > 0 and k % prefill_kernel.BK == 0 and n % prefill_kernel.CHANNELS == 0


def prefill_selected(tokens: int, groups: int, k: int, n: int, sms: int) -> bool:
    """Whether the forward of ``tokens`` tokens runs its GEMM on the prefill kernel: at least
    one full token tile and at least ``PREFILL_MIN_WAVE · sms`` CTAs."""
    if tokens < prefill_kernel.TOKENS or not prefill_supported(groups, k, n):
        return False
    ctas = (n // prefill_kernel.CHANNELS) * -(-tokens // prefill_kernel.TOKENS) * groups
    return ctas >= PREFILL_MIN_WAVE * sms


def prefill_gemm(a_data: torch.Tensor, a_scales: torch.Tensor, words: torch.Tensor, scales: torch.Tensor,
                 gs_a: torch.Tensor, gs_w: torch.Tensor, out: torch.Tensor) -> None:
    """``out (T, G, N)`` bf16 := the NVFP4 product of x, quantized by :func:`quantize_activations`
    into ``a_data (G·Mp, K/2)`` / ``a_scales (G·Mp, K/16)`` uint8 (``Mp`` a multiple of 128,
    at least T) with global scales ``gs_a (G,)`` float32, and the weights in the decode layout
    (``words``, ``scales`` from ``decode_layout.pack_decode_weights``; ``gs_w (G,)`` float32).
    Shapes, dtypes, devices and contiguity are checked here (no values: no sync)."""
    tokens, groups, n = out.shape
    rows, half_k = a_data.shape
    k = 2 * half_k
    problems = []
    if not prefill_supported(groups, k, n):
        problems.append(f"needs K % {prefill_kernel.BK} == 0 and N % {prefill_kernel.CHANNELS} == 0")
    if groups == 0 or rows % groups or (rows // groups) % 128 or rows // groups < tokens:
        problems.append("a_data needs G·Mp rows with Mp a multiple of 128 and at least T")
    expected = {
        "a_data": (a_data, torch.uint8, (rows, half_k)),
        "a_scales": (a_scales, torch.uint8, (rows, k // 16)),
        "words": (words, torch.int32, (groups, n // 16, k // 64, 32, 4)),
        "scales": (scales, torch.uint8, (groups, n // 16, k // 64, 8, 8)),
        "gs_a": (gs_a, torch.float32, (groups,)),
        "gs_w": (gs_w, torch.float32, (groups,)),
        "out": (out, torch.bfloat16, (tokens, groups, n)),
    }
    for name, (tensor, dtype, shape) in expected.items():
        if tensor.dtype != dtype or tuple(tensor.shape) != shape:
            problems.append(f"{name} must be {dtype} {shape}, got {tensor.dtype} {tuple(tensor.shape)}")
        elif not tensor.is_contiguous() or tensor.device != out.device:
            problems.append(f"{name} must be contiguous and on {out.device}")
    if problems:
        raise ValueError(f"prefill_gemm (T={tokens}, G={groups}, K={k}, N={n}): " + "; ".join(problems))
    if tokens == 0:
        return
    compile_prefill_gemm()(
        *_prefill_args(a_data.view(torch.int32), a_scales.view(torch.int32), words, scales.view(torch.int32), gs_a,
                       gs_w, out),
        Int32(tokens), Int32(groups), Int32(n), Int32(k), Int32(rows // groups), stream_of(out.device),
    )


def decode_forward(x: torch.Tensor, scale_source: torch.Tensor, words: torch.Tensor, scales: torch.Tensor,
                   gs_w: torch.Tensor, out: torch.Tensor, counters: torch.Tensor, *, dynamic: bool, shared: bool) -> None:
    """The decode forward ``x (T, G, K)`` bf16 -> ``out (T, G, N)`` bf16 (T <= 32) in one launch,
    weights in the decode layout (``decode_layout.pack_decode_weights``), x quantized in the
    kernel's prologue. ``scale_source``: static global scales or (``dynamic``) ``group_amax``'s
    result viewed as float32; ``counters``: from :func:`decode_counters`."""
    tokens, groups, k = x.shape
    n = out.shape[2]
    if out.data_ptr() % 8 or not out.is_contiguous():  # the split-K reduction stores 4 channels at once
        raise ValueError("decode_forward needs a contiguous out starting at an 8-byte boundary")
    splits = decode_splits(groups, n, k, multiprocessors(x.device.index or 0), tokens)
    partials = None
    if splits > 1:  # from torch's caching allocator: no sync, and graph-capturable
        partials = torch.empty(splits * tokens * groups * n, dtype=torch.float32, device=x.device)
    n_tiles = decode_token_tiles(tokens)
    # no bounds checks in the main loop when every warp has channels and the ring divides the slice
    guarded = n % decode_kernel.CHANNELS_PER_CTA != 0 or (k // 64 // splits) % decode_kernel.BATCH != 0
    compile_decode_forward(n_tiles, dynamic, shared, splits > 1, guarded)(
        *_decode_args(x, scale_source, words, scales.view(torch.int32), gs_w, out, partials, counters),
        Int32(tokens), Int32(groups), Int32(n), Int32(k), Int32(splits), stream_of(x.device),
    )
