"""Every CuTeDSL kernel compiles for sm_90a without a GPU, and its PTX uses the
instructions the numerics depend on (CI has no GPU: this is its kernel check)."""

import collections
import functools
import os
import pathlib

import pytest
import torch

os.environ.setdefault("CUTE_DSL_ARCH", "sm_90a")
from nvfp4lab import kernels  # noqa: E402  (first: it points CuTeDSL's dump folder away from the tree)

pytest.importorskip("cutlass.cute")
from nvfp4lab.kernels import launch  # noqa: E402
from nvfp4lab.kernels import prefill_gemm as prefill_kernel  # noqa: E402
from nvfp4lab.kernels import quantize_activations as quant_kernel  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def ptx_lines(compiled) -> list[str]:
    """The PTX of a kernel compiled with ``keep_ptx``, one whitespace-normalised line per
    instruction; fails when no PTX was kept."""
    ptx = compiled.artifacts.PTX or ""
    if "\n" not in ptx:  # CuTeDSL gives the dumped file's path until it has read the file back
        assert pathlib.Path(ptx).is_file(), f"the compiled kernel kept no PTX ({ptx!r}): the checks would pass vacuously"
        ptx = pathlib.Path(ptx).read_text()
    assert ".entry" in ptx, "the kept PTX holds no kernel entry"
    return [" ".join(line.split()) for line in ptx.splitlines() if line.strip() and not line.strip().startswith("//")]


def instructions(compiled) -> collections.Counter:
    """Opcode counts of a kernel compiled with ``keep_ptx``."""
    return collections.Counter(line.split()[0] for line in ptx_lines(compiled))


def test_arch_is_sm_90a():
    assert os.environ["CUTE_DSL_ARCH"] == "sm_90a"


def test_kept_ptx_goes_to_the_dump_folder_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    launch.compile_split_k_reduce.cache_clear()
    instructions(launch.compile_split_k_reduce(keep_ptx=True))
    assert not list(tmp_path.iterdir()), "CuTeDSL wrote into the working directory"
    assert not list(REPO.glob("*.ptx")), "PTX files at the repository root"
    dump = pathlib.Path(kernels.DUMP_DIR)
    assert REPO not in dump.resolve().parents and any(dump.glob("*split_k_reduce*.ptx"))


@pytest.mark.parametrize("padded_output", [False, True])
def test_grouped_gemm_uses_bf16_tensor_core_mma_with_fp32_accumulation(padded_output):
    ops = instructions(launch.compile_grouped_gemm("small", padded_output, keep_ptx=True))
    # a warp tile of 16×16 is 2 m16n8 MMAs per 16 of K, 4 per stage
    assert ops["mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"] == 2 * 4
    assert ops["ldmatrix.sync.aligned.m8n8.x4.shared.b16"] > 0
    assert ops["cp.async.cg.shared.global"] + ops["cp.async.ca.shared.global"] > 0
    assert ops["mul.rn.bf16x2"] > 0  # the exact two-element decode
    assert not any(op.startswith(("fma.rn.ftz", "mul.ftz", "div.approx", "div.full")) for op in ops)


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("packed_scales", [False, True])
def test_quantizer_uses_exact_division_and_hardware_e4m3_rounding(dynamic, shared, packed_scales):
    ops = instructions(launch.compile_quantize_activations(dynamic, shared, packed_scales, keep_ptx=True))
    blocks = quant_kernel.blocks_per_thread(packed_scales)  # 4 when K % 64 == 0
    assert ops["cvt.rn.satfinite.e4m3x2.f32"] == blocks and ops["cvt.rn.f16x2.e4m3x2"] == blocks
    assert ops["div.rn.f32"] == 1 + 3 * blocks + dynamic  # 1/gs once; (amax/6)/gs, (1/gs)/s per block [; amax/2688]
    # each block has a loop without the clamp (normal scales) and one with it: 16 multiplies
    # and 16 rounding adds each, the clamp (max/min) only in the second
    assert ops["mul.rn.f32"] == 32 * blocks and ops["add.rn.f32"] == 32 * blocks
    assert ops["max.f32"] == (16 + 32) * blocks and ops["min.f32"] >= 16 * blocks  # clamps; each code's max(|y|, 1)
    assert ops["max.NaN.f32"] >= 16 * blocks  # NaN-keeping block amax
    assert ops["abs.f32"] == (16 + 32) * blocks  # the amax's, and each code's |y|
    assert ops["ld.global.v4.b32"] == 2 * blocks  # 32 B in per block
    if packed_scales:  # 4 blocks: 32 B of codes in two 16-byte stores, the 4 scale bytes in one word
        assert ops["st.global.v4.b32"] == 2 and ops["st.global.b8"] == 0 and ops["shfl.sync.bfly.b32"] == 0
    else:
        assert ops["st.global.v2.b32"] == 1 and ops["st.global.b8"] == 1
    assert not any("approx" in op or "ftz" in op for op in ops)


def test_group_amax_reduces_with_one_integer_atomic_per_cta():
    ops = instructions(launch.compile_group_amax(keep_ptx=True))
    assert ops["atom.global.max.s32"] == 1
    assert ops["max.NaN.f32"] > 0


@pytest.mark.parametrize("split_k", [False, True])
def test_large_token_gemm_uses_asynchronous_warpgroup_mma(split_k):
    ops = instructions(launch.compile_grouped_gemm("wgmma", False, split_k, keep_ptx=True))
    assert ops["wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16"] == 4  # BK=64 per stage
    assert ops["fence.proxy.async.shared::cta;"] >= 1  # decoded tiles made visible to the tensor cores
    assert ops["ldmatrix.sync.aligned.m8n8.x4.shared.b16"] == 0


def test_split_k_variant_writes_fp32_partials_and_the_reduce_kernel_compiles():
    ops = instructions(launch.compile_grouped_gemm("small", False, True, keep_ptx=True))
    assert ops["st.global.b32"] > 0 and ops["st.global.b16"] == 0  # partial sums, not bf16
    reduce_ops = instructions(launch.compile_split_k_reduce(keep_ptx=True))
    assert reduce_ops["cvt.rn.bf16.f32"] == 1


def test_split_count_targets_four_ctas_per_sm_and_keeps_k_stages():
    assert launch.split_count(ctas=128, k_tiles=64, sms=132) == 4
    assert launch.split_count(ctas=1024, k_tiles=64, sms=132) == 1
    assert launch.split_count(ctas=8, k_tiles=16, sms=132) == 2  # never below 8 stages per split
    assert launch.split_count(ctas=64, k_tiles=64, sms=132, ctas_per_sm=2) == 4


@pytest.mark.parametrize("n_tiles, dynamic, shared, split_k, guarded",
                         [(1, False, True, True, True), (2, True, False, False, True),
                          (1, False, False, True, False), (2, False, False, True, False),
                          (4, False, False, True, False), (4, True, True, True, True)])
def test_decode_forward_streams_weights_to_registers_and_decodes_in_few_integer_ops(n_tiles, dynamic, shared, split_k,
                                                                                    guarded):
    ops = instructions(launch.compile_decode_forward(n_tiles, dynamic, shared, split_k, guarded, keep_ptx=True))
    mmas = ops["mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"]
    assert mmas == 2 * 4 * 4 * n_tiles  # 2 m-tiles × 4 chunks of a batch × 4 k16 steps × n-tiles, unrolled
    words = 2 * 4 * 4  # code words decoded per batch: per word 4 mul.rn.bf16x2, 13 integer ops
    # 16 B of codes per m-tile and chunk into each of the 2 register buffers (+ 8 B of scales); the prologue
    # loads 32 B of x per block
    weight_loads = 2 * (2 * 4)
    prologue_loads = 2
    if split_k:  # the last CTA adds the partial sums with 16-byte loads, the split loop unrolled
        assert ops["ld.global.v4.b32"] >= weight_loads + prologue_loads + 8
    else:
        assert ops["ld.global.v4.b32"] == weight_loads + prologue_loads
    assert ops["ld.global.v2.b32"] == weight_loads and ops["ld.global.b8"] == 0
    decode_mults = ops["mul.rn.bf16x2"] - 2 * 4  # minus the prologue's 8 (two words per block)
    assert decode_mults == 4 * words
    assert ops["mad.lo.u32"] == words and ops["prmt.b32"] >= words  # both rows' scale multipliers: prmt + one IMAD
    assert ops["ld.shared.b32"] == 2 * n_tiles * 4 * 4 + split_k  # B fragments (+ the last-CTA flag): no weights
    assert ops["and.b64"] == 0, "pointers rounded at run time (Pointer.align) instead of assumed aligned"
    assert ops["bar.sync"] == (3 if split_k else 1)  # one barrier before the main loop, none inside it
    assert ops["atom.global.acq_rel.add.u32"] == int(split_k) and ops["fence.acq_rel.gpu;"] == 2 * split_k
    # the quantizer's rounding in the prologue
    assert ops["div.rn.f32"] == 4 + dynamic
    assert ops["cvt.rn.satfinite.e4m3x2.f32"] == 1
    assert not any(op.startswith(("fma.rn.ftz", "mul.ftz", "div.approx", "div.full")) for op in ops)


@pytest.mark.parametrize("shared", [False, True])
def test_fused_amax_adds_a_cta_reduction_and_nothing_to_the_main_loop(shared):
    """The decode kernel with ``fused_amax``: the amax is a CTA reduction (warp shuffles with the
    NaN-propagating max, one more CTA barrier, the dynamic scale's division) over 32-byte loads of
    x, no global atomic; the MMAs, weight loads and decode are the other variant's."""
    fused = instructions(launch.compile_decode_forward(2, True, shared, True, False, True, keep_ptx=True))
    launched = instructions(launch.compile_decode_forward(2, True, shared, True, False, False, keep_ptx=True))
    assert fused["shfl.sync.bfly.b32"] >= 5 and launched["shfl.sync.bfly.b32"] == 0
    assert fused["bar.sync"] == launched["bar.sync"] + 1
    assert fused["atom.global.max.s32"] == 0 and fused["atom.global.acq_rel.add.u32"] == 1  # only split K's count
    assert fused["div.rn.f32"] == launched["div.rn.f32"]  # amax / 2688 and 1 / gs, as with the launched amax
    assert fused["ld.global.v4.b32"] == launched["ld.global.v4.b32"] + 2  # one 16-element block of x per item
    for op in ("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", "ld.global.v2.b32", "mul.rn.bf16x2",
               "cvt.rn.satfinite.e4m3x2.f32"):
        assert fused[op] == launched[op], op


def test_decode_splits_give_about_two_ctas_per_sm_within_the_shared_memory_slice():
    assert launch.decode_splits(8, 1024, 4096, sms=132) == 8  # 32 CTAs × 8 = 256
    assert launch.decode_splits(16, 1024, 4096, sms=132) == 4  # 64 × 4
    assert launch.decode_splits(8, 1536, 8192, sms=132) == 8  # 48 × 8 = 384
    assert launch.decode_splits(8, 1536, 8192, sms=8) == 4  # few SMs: only the 2048-element slice limit
    assert launch.decode_splits(8, 1536, 8192, sms=8, tokens=16) == 8  # two token tiles: 1024-element slices
    assert launch.decode_splits(8, 1024, 4096, sms=132, tokens=16) == 4  # two token tiles: about one CTA per SM
    assert launch.decode_splits(16, 1024, 4096, sms=132, tokens=9) == 4  # 64 × 4, the 1024-element slice limit
    assert launch.decode_splits(8, 1536, 8192, sms=132, tokens=16) == 8  # 48 × 8, the slice limit again
    assert launch.decode_splits(8, 1024, 4096, sms=132, tokens=32) == 8  # four token tiles: 512-element slices
    assert launch.decode_splits(8, 1536, 8192, sms=132, tokens=17) == 16  # 48 × 16, the slice limit
    assert [launch.decode_token_tiles(t) for t in (1, 8, 9, 16, 17, 32)] == [1, 1, 2, 2, 4, 4]
    assert launch.decode_splits(1, 256, 64 * 33, sms=132) is None  # 33 chunks: no power-of-two split fits


def test_decode_path_takes_only_the_shapes_it_supports():
    assert launch.decode_supported(16, 8, 4096, 1024) and launch.decode_supported(1, 2, 128, 384)
    assert launch.decode_supported(32, 8, 4096, 1024)
    assert not launch.decode_supported(33, 8, 4096, 1024)  # four token tiles at most
    assert not launch.decode_supported(0, 8, 4096, 1024)
    assert not launch.decode_supported(1, 8, 96, 1024)  # K % 64
    assert not launch.decode_supported(1, 8, 4096, 1000)  # N % 16


@pytest.mark.parametrize("tile_tokens", prefill_kernel.TILE_TOKENS)
def test_prefill_gemm_is_warp_specialized_with_register_weights_and_mbarriers(tile_tokens):
    compiled = launch.compile_prefill_gemm(False, tile_tokens, keep_ptx=True)
    ops = instructions(compiled)
    with_text = collections.Counter(ptx_lines(compiled))
    tile = f"m64n{tile_tokens}k16"
    blocks = prefill_kernel.M_BLOCKS
    # RS-form wgmma: 64 channels × the CTA's tokens × k16, the A operand a brace list of 4
    # registers (not a descriptor): 4 k16 steps × M_BLOCKS groups × 2 unrolled k-tiles
    rs_form = [line for line in with_text if line.startswith(f"wgmma.mma_async.sync.aligned.{tile}.f32.bf16.bf16")]
    assert ops[f"wgmma.mma_async.sync.aligned.{tile}.f32.bf16.bf16"] == 4 * blocks * 2
    assert rs_form and all("}, {%r" in line for line in rs_form), "the weights must come from registers"
    # register reallocation between the producer and the consumers, within the 384 × 168 pool
    assert with_text["setmaxnreg.dec.sync.aligned.u32 56;"] == 1 and with_text["setmaxnreg.inc.sync.aligned.u32 224;"] == 1
    # mbarriers instead of CTA-wide barriers in the main loop: bar.sync only for the pipeline's
    # init and the producer warpgroup's named barrier
    assert ops["mbarrier.init.shared.b64"] == 2 * prefill_kernel.X_STAGES and ops["mbarrier.try_wait.parity.shared.b64"] >= 2
    assert ops["bar.sync"] == 2 and ops["fence.proxy.async.shared::cta;"] == 1
    # the producer decodes its chunks (4 words, 4 mul.rn.bf16x2 each) once per k-tile; the
    # consumers decode 4 k16 steps of 4 registers at 1 + 2·2 sites (before the loop, then after
    # each group of the two unrolled k-tiles)
    x_chunks = tile_tokens * prefill_kernel.CHUNKS_PER_ROW // prefill_kernel.PRODUCER_THREADS
    w_sites = 1 + 2 * 2
    assert ops["mul.rn.bf16x2"] == x_chunks * 4 * 4 + w_sites * 4 * 4
    assert ops["mad.lo.u32"] == w_sites * 4  # one per k16 step: rows r and r+8 together
    # weights: one 16-byte + one 8-byte load per lane, chunk and block (ring of 2, refilled in
    # each unrolled k-tile), no run-time pointer rounding; x: cp.async only
    assert ops["ld.global.v4.b32"] == ops["ld.global.v2.b32"] == 2 * blocks + 2 * blocks
    assert ops["and.b64"] == 0, "pointers rounded at run time (Pointer.align) instead of assumed aligned"
    assert ops["cp.async.cg.shared.global"] == (prefill_kernel.RAW_STAGES - 1 + 1) * (x_chunks + 1)
    assert ops["st.shared.v4.b32"] == x_chunks * 4  # decoded x: 64 bytes per chunk
    assert not any(op.startswith(("fma.rn.ftz", "mul.ftz", "div.approx", "div.full")) for op in ops)


def test_prefill_split_k_reduces_in_the_same_launch_with_coalesced_partials():
    """The split-K variant: the consumers' fp32 partials leave as 16-byte stores (2 blocks × 64
    accumulators / 4 per thread), one acquire-release counter bump per CTA between two
    256-thread named barriers, the last CTA's reduction loads 16 bytes at a time in split order
    (no unrolled split loop), and the main loop is the unsplit kernel's (same wgmma, decode and
    barrier counts there)."""
    split = instructions(launch.compile_prefill_gemm(True, keep_ptx=True))
    whole = instructions(launch.compile_prefill_gemm(False, keep_ptx=True))
    accumulators = prefill_kernel.M_BLOCKS * 128 * prefill_kernel.TOKENS // prefill_kernel.CONSUMER_THREADS
    assert split["st.global.v4.b32"] == accumulators // 4 and whole["st.global.v4.b32"] == 0
    assert split["atom.global.acq_rel.add.u32"] == 1 and split["fence.acq_rel.gpu;"] == 2
    assert split["bar.sync"] == whole["bar.sync"] + 2
    # the reduction: split 0's loads, then one loop body over the further splits that loads every
    # quad once (per block, all in flight together) and adds each accumulator once
    assert split["ld.global.v4.b32"] == whole["ld.global.v4.b32"] + 2 * (accumulators // 4)
    assert split["add.f32"] == accumulators and whole.get("add.f32", 0) == 0
    for op in ("wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16", "mul.rn.bf16x2", "mad.lo.u32",
               "cp.async.cg.shared.global", "st.global.b16"):
        assert split[op] == whole[op], op


def test_prefill_splits_minimise_the_wave_cost_model_and_keep_eight_stages_per_split():
    for (groups, k, n), tokens in [((8, 4096, 1024), 33), ((8, 4096, 1024), 128), ((16, 4096, 1024), 256),
                                   ((8, 8192, 1536), 128), ((8, 8192, 1536), 512), ((8, 4096, 1024), 8192)]:
        splits = launch.prefill_splits(tokens, groups, k, n, sms=132)
        tiles, k_tiles = launch.prefill_tiles(tokens, groups, n), k // 64
        assert k_tiles % splits == 0 and (splits == 1 or k_tiles // splits >= launch.PREFILL_MIN_K_TILES)
        allowed = [s for s in (1, 2, 4, 8, 16, 32) if k_tiles % s == 0 and (s == 1 or k_tiles // s >= 8)]
        assert launch.prefill_split_candidates(k) == allowed
        costs = {s: launch.prefill_split_cost(tiles, k_tiles, s, 132) for s in allowed}
        assert costs[splits] == min(costs.values()) and all(costs[s] > costs[splits] for s in allowed if s < splits)
    # two waves of split CTAs cost less than two waves of whole ones when the second wave is partial
    assert launch.prefill_split_cost(192, 128, 2, 132) < launch.prefill_split_cost(192, 128, 1, 132)
    # the measured best split counts (bench/results/NVIDIA_H100_80GB_HBM3_prefill_paths.md)
    assert launch.prefill_splits(17, 8, 4096, 1024, sms=132) == 4  # 64-token tiles: 32 tiles × 4 = 128 CTAs
    assert launch.prefill_splits(32, 16, 4096, 1024, sms=132) == 2  # 64 × 2
    assert launch.prefill_splits(128, 8, 4096, 1024, sms=132) == 4
    assert launch.prefill_splits(256, 8, 4096, 1024, sms=132) == 2  # 64 × 2
    assert launch.prefill_splits(128, 8, 8192, 1536, sms=132) == 2  # 48 × 2 = 96: 4 would be 1.45 waves
    assert launch.prefill_splits(256, 8, 8192, 1536, sms=132) == 1  # 96 tiles: 2 splits would be 1.45 waves
    assert launch.prefill_splits(512, 8, 8192, 1536, sms=132) == 2  # 192 tiles: 1.45 waves either way, shorter CTAs
    assert launch.prefill_splits(512, 16, 4096, 1024, sms=132) == 1
    assert launch.prefill_splits(8192, 8, 4096, 1024, sms=132) == 1  # 2048 tiles
    assert launch.prefill_splits(64, 1, 512, 256, sms=132) == 1  # 8 stages: no room to split
    assert launch.prefill_tiles(129, 8, 1024) == 4 * 2 * 8 and launch.prefill_tile_tokens(64) == 64


def test_prefill_takes_every_t_above_the_decode_range_that_its_tiles_allow():
    top = launch.DECODE_MAX_TOKENS
    assert not launch.prefill_selected(top, 8, 4096, 1024, 132) and launch.decode_selected(top, 8, 4096, 1024, 132)
    assert launch.prefill_selected(top + 1, 8, 4096, 1024, 132) and not launch.decode_selected(top + 1, 8, 4096, 1024)
    assert launch.prefill_selected(8192, 8, 8192, 1536, 132)
    assert not launch.prefill_selected(64, 8, 4096, 1000, 132)  # N % 256: the grouped GEMM
    # a shape the prefill kernel does not take stays on the decode kernel up to its capacity
    assert launch.decode_selected(32, 8, 4096, 1008) and not launch.prefill_selected(32, 8, 4096, 1008, 132)


def test_forward_plan_names_each_launch_of_the_forward_once():
    """The layer's and the benchmark's one rule: amax launch unless the decode prologue finds it;
    the decode kernel, else the prefill kernel where it takes the shape, else the grouped GEMM."""
    plan = functools.partial(launch.forward_plan, groups=8, k=4096, sms=132)
    top = launch.DECODE_MAX_TOKENS
    assert plan(1, n=1024, dynamic=False, shared=False) == launch.ForwardPlan(False, True, False, False)
    fused = plan(1, n=1024, dynamic=True, shared=False)
    assert fused == launch.ForwardPlan(amax=False, decode=True, fused_amax=True, prefill=False)
    assert plan(2, n=1024, dynamic=True, shared=False).fused_amax  # 2 · 4096 elements per group
    assert plan(2, n=1024, dynamic=True, shared=True) == launch.ForwardPlan(True, True, False, False)  # all 8 groups
    assert plan(top, n=1024, dynamic=True, shared=False) == launch.ForwardPlan(True, True, False, False)
    assert plan(top + 1, n=1024, dynamic=True, shared=False) == launch.ForwardPlan(True, False, False, True)
    assert plan(top + 1, n=1024, dynamic=False, shared=False) == launch.ForwardPlan(False, False, False, True)
    assert plan(64, n=1000, dynamic=False, shared=False) == launch.ForwardPlan(False, False, False, False)  # N % 16
    # no weights in the decode layout: only the grouped GEMM can run, at any T
    assert plan(1, n=1024, dynamic=True, shared=False, fragment_weights=False) == launch.ForwardPlan(
        True, False, False, False)
    for tokens in (1, 16, 17, 32, 33, 128, 8192):  # the plan agrees with the selection functions
        for g, k, n in ((8, 4096, 1024), (8, 4096, 1008), (2, 64, 384), (16, 4096, 1000)):
            p = launch.forward_plan(tokens, g, k, n, 132, dynamic=False, shared=False)
            assert (p.decode, p.prefill) == (launch.decode_selected(tokens, g, k, n, 132),
                                             launch.prefill_selected(tokens, g, k, n, 132)), (tokens, g, k, n)


def test_prefill_kernel_takes_the_shapes_its_tiles_allow():
    assert launch.prefill_supported(8, 4096, 1024) and launch.prefill_supported(8, 8192, 1536)
    assert not launch.prefill_supported(8, 4096, 1000) and not launch.prefill_supported(8, 96, 1024)


def test_quantizer_takes_a_thread_per_block_below_one_full_wave_of_row_slices():
    """Row slices (4 blocks a thread) only where they fill every SM's 2048 threads at least once."""
    assert not launch.quantizer_row_slices(128, 8, 4096, sms=132)  # 65536 slices: a quarter wave
    assert not launch.quantizer_row_slices(512, 8, 4096, sms=132)  # 262144 < 270336
    assert launch.quantizer_row_slices(1024, 8, 4096, sms=132)
    assert not launch.quantizer_row_slices(8192, 8, 96, sms=132)  # K % 64: blocks only
    with pytest.raises(ValueError, match="K % 64"):
        launch.quantize_activations(torch.zeros(1, 1, 96, dtype=torch.bfloat16), torch.ones(1),
                                    torch.zeros(128, 48, dtype=torch.uint8), torch.zeros(128, 8, dtype=torch.uint8),
                                    torch.ones(1), dynamic=False, shared=False, row_slices=True)
