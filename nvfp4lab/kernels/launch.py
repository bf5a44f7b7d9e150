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
from typing import NamedTuple

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
                           fused_amax: bool = False, keep_ptx: bool = False):
    return _compiler(keep_ptx)(decode_kernel.decode_forward, *_decode_args(), *[Int32(1)] * 5, make_fake_stream(),
                               n_tiles, dynamic, shared, split_k, guarded, fused_amax)


def _prefill_args(a_data=None, a_scales=None, words=None, scales=None, gs_a=None, gs_w=None, out=None, partials=None,
                  counters=None):
    return (
        pointer(a_data, cutlass.Uint32, 16),
        pointer(a_scales, cutlass.Uint32, 16),
        pointer(words, cutlass.Uint32, 16),
        pointer(scales, cutlass.Uint32, 8),
        pointer(gs_a, cutlass.Float32, 4),
        pointer(gs_w, cutlass.Float32, 4),
        pointer(out, cutlass.BFloat16, 2),
        pointer(partials, cutlass.Float32, 16),
        pointer(counters, cutlass.Int32, 4),
    )


@functools.cache
def compile_prefill_gemm(split_k: bool = False, tile_tokens: int = prefill_kernel.TOKENS, keep_ptx: bool = False):
    return _compiler(keep_ptx)(prefill_kernel.prefill_gemm, *_prefill_args(), *[Int32(1)] * 6, make_fake_stream(),
                               split_k, tile_tokens)


@functools.cache
def multiprocessors(device_index: int) -> int:
    """SMs of CUDA device ``device_index`` (asked once per device: the forward's selection reads it
    on every call)."""
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


#: Dynamic scales: the decode kernel computes the amax itself (each CTA over the elements its
#: scale covers: ``T·K``, or ``T·G·K`` when shared) up to this many elements, instead of the
#: amax launch and its zeroing. Timed on the H100 (``bench/results/NVIDIA_H100_80GB_HBM3_decode_amax.md``:
#: 0.5–2.3 µs faster at 8192–32768 elements, mixed at 65536, slower beyond); bit-equal to the
#: amax launch's output (``test_fused_amax_gives_the_amax_launchs_output_bit_for_bit``).
#: Env ``NVFP4LAB_FUSED_AMAX_MAX_ELEMENTS`` (0: never fused).
FUSED_AMAX_MAX_ELEMENTS = int(os.environ.get("NVFP4LAB_FUSED_AMAX_MAX_ELEMENTS", 32768))


def decode_fuses_amax(tokens: int, groups: int, k: int, shared: bool) -> bool:
    """Whether the dynamic decode forward computes its amax in the kernel (no ``group_amax``)."""
    return tokens * k * (groups if shared else 1) <= FUSED_AMAX_MAX_ELEMENTS


def decode_counters(groups: int, n: int, device) -> torch.Tensor:
    """The decode kernel's per-tile split-K counters (zeros; every launch leaves them zero)."""
    return torch.zeros(groups * -(-n // decode_kernel.CHANNELS_PER_CTA), dtype=torch.int32, device=device)


#: The largest T the forward gives the decode kernel when the prefill kernel also takes the
#: shape: the measured crossover (docs/kernels.md, section "T = 17–1024"); shapes the
#: prefill kernel does not take stay on the decode kernel up to its capacity,
#: ``decode_gemm.MAX_TOKENS``. Env ``NVFP4LAB_DECODE_MAX_TOKENS`` for measuring the crossover.
DECODE_MAX_TOKENS = min(int(os.environ.get("NVFP4LAB_DECODE_MAX_TOKENS", 16)), decode_kernel.MAX_TOKENS)


def decode_supported(tokens: int, groups: int, k: int, n: int, sms: int = 132) -> bool:
    """Whether the one-launch decode forward can take this call (T <= ``decode_gemm.MAX_TOKENS``,
    K % 64, N % 16, a split count within its shared-memory slice); see :func:`decode_selected`."""
    return (0 < tokens <= decode_kernel.MAX_TOKENS and k % decode_kernel.K_CHUNK == 0 and n % 16 == 0
            and decode_splits(groups, n, k, sms, tokens) is not None)


def decode_selected(tokens: int, groups: int, k: int, n: int, sms: int = 132) -> bool:
    """Whether the forward runs the decode kernel: it can take the call, and T <= ``DECODE_MAX_TOKENS``
    or the prefill kernel cannot take the shape (else the quantizer + prefill or grouped GEMM)."""
    return decode_supported(tokens, groups, k, n, sms) and (tokens <= DECODE_MAX_TOKENS
                                                            or not prefill_supported(groups, k, n))


# ------------------------------------------------------------------ launches
def group_amax(x: torch.Tensor, amax_bits: torch.Tensor) -> None:
    """``amax_bits (G,)`` int32 := bits of ``max |x[:, g, :]|`` for ``x (T, G, K)`` bf16."""
    tokens, groups, k = x.shape
    amax_bits.zero_()
    compile_group_amax()(*_amax_args(x, amax_bits), Int32(tokens), Int32(groups), Int32(k // 16), stream_of(x.device))


#: The quantizer takes one thread per 64-element row slice (4 blocks, one 4-byte scale store)
#: only when that gives at least this many waves of full SMs (2048 threads each); smaller calls
#: take one thread per 16-element block, 4× the threads for the same bytes (measured in
#: ``bench/results/NVIDIA_H100_80GB_HBM3_prefill_paths.md``; docs/kernels.md, section "T = 17–1024").
QUANTIZER_SLICE_MIN_WAVES = 1.0
THREADS_PER_SM = 2048


def quantizer_row_slices(rows: int, groups: int, k: int, sms: int) -> bool:
    """True when the quantizer should run one thread per 64-element row slice (K % 64 == 0 and
    ``rows · G · K/64 >= QUANTIZER_SLICE_MIN_WAVES · sms · 2048``; ``rows`` = the padded rows
    per group it writes), False for one thread per 16-element block. Both write the same bytes."""
    return k % 64 == 0 and rows * groups * (k // 64) >= QUANTIZER_SLICE_MIN_WAVES * sms * THREADS_PER_SM


def quantize_activations(
    x: torch.Tensor,
    scale_source: torch.Tensor,
    data: torch.Tensor,
    scales: torch.Tensor,
    used_scale: torch.Tensor,
    *,
    dynamic: bool,
    shared: bool,
    row_slices: bool | None = None,
) -> None:
    """Quantize ``x (T, G, K)`` bf16 into ``data (G·Mp, K/2)`` uint8 and ``scales
    (G·Mp, round_up(K/16,4))`` uint8 (swizzled), with ``Mp = round_up(T, 128)``.

    ``scale_source (G,)`` float32 holds the static global scales or (``dynamic``) the
    per-group amaxes; ``used_scale (G,)`` receives the global scale each group used.
    ``row_slices``: one thread per 64-element row slice (needs K % 64 == 0) or per 16-element
    block; None takes :func:`quantizer_row_slices`'s choice (same bytes either way).
    """
    tokens, groups, k = x.shape
    rows_per_group = data.shape[0] // groups
    if row_slices is None:
        row_slices = quantizer_row_slices(rows_per_group, groups, k, multiprocessors(x.device.index or 0))
    elif row_slices and k % 64:
        raise ValueError(f"quantize_activations: row_slices needs K % 64 == 0, got K = {k}")
    compile_quantize_activations(dynamic, shared, row_slices)(
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


#: Where the forward's GEMM is the warp-specialized prefill kernel (``prefill_gemm``, 256
#: channels × 64 or 128 tokens per CTA, one CTA per SM): every T above the decode kernel's
#: range whose shape its tiles take, with K split (``prefill_splits``) where that shortens the
#: launch. The split count comes from a cost model in units of one CTA's 64-K stage (about 1 µs
#: on the H100): ``ceil(tiles·s / SMs)`` waves of CTAs, each costing ``PREFILL_CTA_STAGES`` (launch,
#: pipeline fill, epilogue) + ``K/64 / s`` stages + ``PREFILL_SPLIT_STAGES · s`` for the split-K
#: partials and the last CTA's reduction (s > 1). Fit to the H100 sweep of every split count
#: (``bench/results/NVIDIA_H100_80GB_HBM3_prefill_paths.md``): it picks the measured best split count
#: (and tile) at all 18 (shape, T) points of T = 17–512.
PREFILL_CTA_STAGES = 7.0
PREFILL_SPLIT_STAGES = 3.5
PREFILL_MIN_K_TILES = 8  # 64-K stages per split at least: the pipeline's prologue and epilogue amortized


def prefill_supported(groups: int, k: int, n: int) -> bool:
    """Whether the prefill kernel takes this shape (its tiles: K % 64 == 0, N % 256 == 0)."""
    return groups > 0 and k % prefill_kernel.BK == 0 and n % prefill_kernel.CHANNELS == 0


#: Token counts up to this run the prefill kernel with 64-token tiles (else 128).
PREFILL_SMALL_TILE_TOKENS = int(os.environ.get("NVFP4LAB_PREFILL_SMALL_TILE_TOKENS", prefill_kernel.SMALL_TOKENS))


def prefill_tile_tokens(tokens: int) -> int:
    """Tokens per prefill-kernel CTA for a call of ``tokens`` tokens: 64 or 128."""
    return prefill_kernel.SMALL_TOKENS if tokens <= PREFILL_SMALL_TILE_TOKENS else prefill_kernel.TOKENS


def prefill_tiles(tokens: int, groups: int, n: int, tile_tokens: int | None = None) -> int:
    """Output tiles (256 channels × ``tile_tokens`` tokens of one group; default
    :func:`prefill_tile_tokens`) of a prefill-kernel call."""
    tile_tokens = tile_tokens or prefill_tile_tokens(tokens)
    return (n // prefill_kernel.CHANNELS) * -(-tokens // tile_tokens) * groups


def prefill_split_cost(tiles: int, k_tiles: int, splits: int, sms: int) -> float:
    """The model behind :func:`prefill_splits`: the launch's time in 64-K stage units,
    ``ceil(tiles·s / sms) · (PREFILL_CTA_STAGES + k_tiles/s + PREFILL_SPLIT_STAGES·s [s > 1])``."""
    waves = -(-tiles * splits // sms)
    return waves * (PREFILL_CTA_STAGES + k_tiles / splits + (PREFILL_SPLIT_STAGES * splits if splits > 1 else 0.0))


def prefill_split_candidates(k: int) -> list[int]:
    """The K split counts the prefill kernel may take, ascending: 1, and each power of two that
    divides K/64 and leaves at least ``PREFILL_MIN_K_TILES`` stages of 64 per split."""
    k_tiles = k // prefill_kernel.BK
    candidates = [1]
    while k_tiles % (2 * candidates[-1]) == 0 and k_tiles // (2 * candidates[-1]) >= PREFILL_MIN_K_TILES:
        candidates.append(2 * candidates[-1])
    return candidates


def prefill_splits(tokens: int, groups: int, k: int, n: int, sms: int, tile_tokens: int | None = None) -> int:
    """K splits (one of :func:`prefill_split_candidates`) of the prefill kernel with
    ``tile_tokens``-token tiles (default :func:`prefill_tile_tokens`): the one
    :func:`prefill_split_cost` puts lowest (ties: fewer)."""
    tiles, k_tiles = prefill_tiles(tokens, groups, n, tile_tokens), k // prefill_kernel.BK
    return min(prefill_split_candidates(k), key=lambda splits: prefill_split_cost(tiles, k_tiles, splits, sms))


def prefill_selected(tokens: int, groups: int, k: int, n: int, sms: int) -> bool:
    """Whether the forward of ``tokens`` tokens runs its GEMM on the prefill kernel: its tiles
    take the shape and the decode kernel is not selected (:func:`decode_selected`)."""
    return prefill_supported(groups, k, n) and not decode_selected(tokens, groups, k, n, sms)


class ForwardPlan(NamedTuple):
    """The launches of one forward call, in order (see :func:`forward_plan`).

    ``amax``: ``group_amax`` writes the dynamic amax first; ``decode``: the one-launch decode
    kernel (its prologue quantizes x, and finds the amax itself when ``fused_amax``) is the
    whole forward; otherwise ``quantize_activations`` then the prefill kernel (``prefill``) or
    the grouped GEMM."""

    amax: bool
    decode: bool
    fused_amax: bool
    prefill: bool


def forward_plan(tokens: int, groups: int, k: int, n: int, sms: int, *, dynamic: bool, shared: bool,
                 fragment_weights: bool = True) -> ForwardPlan:
    """Which kernels the forward of ``tokens`` tokens through ``(G, K, N)`` runs on ``sms``
    multiprocessors, with ``dynamic`` activation scales (``shared``: one for all groups);
    ``fragment_weights``: the weights exist in the decode layout that the decode and prefill
    kernels read (else only the grouped GEMM can run). The one rule the layer and the
    benchmark both follow."""
    decode = fragment_weights and decode_selected(tokens, groups, k, n, sms)
    fused_amax = decode and dynamic and decode_fuses_amax(tokens, groups, k, shared)
    prefill = fragment_weights and not decode and prefill_supported(groups, k, n)  # = prefill_selected
    return ForwardPlan(amax=dynamic and not fused_amax, decode=decode, fused_amax=fused_amax, prefill=prefill)


def prefill_counters(max_tokens: int, groups: int, n: int, device) -> torch.Tensor:
    """The prefill kernel's per-tile split-K counters for calls of up to ``max_tokens``
    tokens (zeros; every launch leaves them zero)."""
    most = max(prefill_tiles(max_tokens, groups, n, tile) for tile in prefill_kernel.TILE_TOKENS)
    return torch.zeros(max(1, most), dtype=torch.int32, device=device)


def prefill_gemm(a_data: torch.Tensor, a_scales: torch.Tensor, words: torch.Tensor, scales: torch.Tensor,
                 gs_a: torch.Tensor, gs_w: torch.Tensor, out: torch.Tensor, counters: torch.Tensor | None = None,
                 *, splits: int | None = None, tile_tokens: int | None = None) -> None:
    """``out (T, G, N)`` bf16 := the NVFP4 product of x, quantized by :func:`quantize_activations`
    into ``a_data (G·Mp, K/2)`` / ``a_scales (G·Mp, K/16)`` uint8 (``Mp`` a multiple of 128,
    at least T) with global scales ``gs_a (G,)`` float32, and the weights in the decode layout
    (``words``, ``scales`` from ``decode_layout.pack_decode_weights``; ``gs_w (G,)`` float32).
    ``splits`` (default :func:`prefill_splits`) > 1 needs ``counters`` from
    :func:`prefill_counters` covering T; ``tile_tokens`` (64 or 128) defaults to
    :func:`prefill_tile_tokens`. Shapes, dtypes, devices and contiguity are checked
    here (no values: no sync)."""
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
    tile_tokens = tile_tokens or prefill_tile_tokens(tokens)
    if tile_tokens not in prefill_kernel.TILE_TOKENS:
        problems.append(f"tile_tokens={tile_tokens} must be one of {prefill_kernel.TILE_TOKENS}")
        tile_tokens = prefill_kernel.TOKENS
    if splits is None:  # the split count of the tile that runs
        splits = (prefill_splits(tokens, groups, k, n, multiprocessors(out.device.index or 0), tile_tokens)
                  if not problems else 1)
    k_tiles = k // prefill_kernel.BK
    if splits < 1 or k_tiles % splits:
        problems.append(f"splits={splits} must be a positive divisor of K/64 = {k_tiles}")
    tiles = prefill_tiles(tokens, groups, n, tile_tokens) if groups else 0
    if splits > 1 and (counters is None or counters.dtype != torch.int32 or counters.numel() < tiles
                       or counters.device != out.device):
        problems.append(f"split K needs counters: int32 on {out.device} with at least {tiles} elements "
                        "(launch.prefill_counters)")
    if problems:
        raise ValueError(f"prefill_gemm (T={tokens}, G={groups}, K={k}, N={n}): " + "; ".join(problems))
    if tokens == 0:
        return
    partials = None
    if splits > 1:  # from torch's caching allocator: no sync, and graph-capturable
        partials = torch.empty(splits * tiles * prefill_kernel.CHANNELS * tile_tokens, dtype=torch.float32,
                               device=out.device)
    compile_prefill_gemm(splits > 1, tile_tokens)(
        *_prefill_args(a_data.view(torch.int32), a_scales.view(torch.int32), words, scales.view(torch.int32), gs_a,
                       gs_w, out, partials, counters if splits > 1 else None),
        Int32(tokens), Int32(groups), Int32(n), Int32(k), Int32(rows // groups), Int32(splits), stream_of(out.device),
    )


def decode_forward(x: torch.Tensor, scale_source: torch.Tensor, words: torch.Tensor, scales: torch.Tensor,
                   gs_w: torch.Tensor, out: torch.Tensor, counters: torch.Tensor, *, dynamic: bool, shared: bool,
                   fused_amax: bool = False) -> None:
    """The decode forward ``x (T, G, K)`` bf16 -> ``out (T, G, N)`` bf16 (T <= 32) in one launch,
    weights in the decode layout (``decode_layout.pack_decode_weights``), x quantized in the
    kernel's prologue. ``scale_source``: static global scales or (``dynamic``) ``group_amax``'s
    result viewed as float32, unread with ``fused_amax`` (dynamic scales from the amax each CTA
    computes itself; see :func:`decode_fuses_amax`); ``counters``: from :func:`decode_counters`."""
    if fused_amax and not dynamic:
        raise ValueError("fused_amax computes dynamic scales: it needs dynamic=True")
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
    compile_decode_forward(n_tiles, dynamic, shared, splits > 1, guarded, fused_amax)(
        *_decode_args(x, scale_source, words, scales.view(torch.int32), gs_w, out, partials, counters),
        Int32(tokens), Int32(groups), Int32(n), Int32(k), Int32(splits), stream_of(x.device),
    )
