"""The warp-specialized prefill GEMM (``kernels.prefill_gemm``) on the GPU (skipped without
one): exact decode of every weight scale byte and code, the layer against the reference at
token counts around its 128-token tiles and at K with one, three and many 64-K stages,
determinism, CUDA-graph replay with new inputs, clear errors for unsupported operands."""

import pytest
import torch

from nvfp4lab import Nvfp4GroupedLinear, quantize_nvfp4
from nvfp4lab.formats import e2m1_float_from_code, e4m3_float_from_byte, pack_e2m1, unpack_e2m1
from nvfp4lab.kernels import launch
from nvfp4lab.kernels import prefill_gemm as prefill_kernel
from nvfp4lab.kernels.decode_layout import pack_decode_weights
from nvfp4lab.layouts import ROW_TILE, round_up

from test_decode_gpu import MODES, layers_for
from test_kernels_gpu import CUDA, SHAPES, activations, assert_replays_with_new_inputs, assert_within_summation_order


def test_every_scale_byte_and_code_decodes_exactly_in_the_prefill_kernel():
    """256 tokens (two token tiles), token t is the one-hot vector of column t: each output is one product
    ``w[n, t] · a_t · gs``, no summation, so it must equal its fp32 value rounded once."""
    finite = [b for b in range(256) if b & 0x7F != 0x7F]
    scales = torch.tensor(finite + [0x01, 0x80], dtype=torch.uint8).view(1, 16, 16)  # 16 rows × 16 blocks, K=256
    n = prefill_kernel.CHANNELS  # one CTA tile of channels
    scales = scales.repeat(1, n // 16, 1)
    codes = torch.arange(16, dtype=torch.uint8).repeat(1, n, 16)
    codes[0, 16:] = torch.randint(0, 16, (n - 16, 256), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    data = pack_e2m1(codes).view(torch.uint8)
    words, scale_bytes = pack_decode_weights(data.to(CUDA), scales.view(torch.float8_e4m3fn).to(CUDA))
    w_true = e2m1_float_from_code(unpack_e2m1(data)) * e4m3_float_from_byte(scales).repeat_interleave(16, -1)
    tokens, k = 256, 256
    x = torch.zeros(tokens, 1, k, dtype=torch.bfloat16)
    x[torch.arange(tokens), 0, torch.arange(tokens)] = torch.linspace(0.5, 3.0, tokens).to(torch.bfloat16)
    gs_a = torch.full((1,), 1.0 / 2688, device=CUDA)
    gs_w = torch.full((1,), 0.75, device=CUDA)
    a_data = torch.empty(round_up(tokens, ROW_TILE), k // 2, dtype=torch.uint8, device=CUDA)
    a_scales = torch.empty(round_up(tokens, ROW_TILE), k // 16, dtype=torch.uint8, device=CUDA)
    used = torch.empty(1, device=CUDA)
    launch.quantize_activations(x.to(CUDA), gs_a, a_data, a_scales, used, dynamic=False, shared=False)
    z = torch.empty(tokens, 1, n, dtype=torch.bfloat16, device=CUDA)
    launch.prefill_gemm(a_data, a_scales, words, scale_bytes, used, gs_w, z)
    q = quantize_nvfp4(x, gs_a.cpu())
    a_value = (e2m1_float_from_code(unpack_e2m1(q.data)) * q.scales.float().repeat_interleave(16, -1)).sum(-1)  # (T, 1)
    expected = (w_true[0].T * a_value) * (gs_a.cpu() * gs_w.cpu())  # (T, N) fp32, as the kernel
    expected = expected + 0.0  # an accumulator that starts at +0 turns a -0 product into +0
    assert torch.equal(z.cpu()[:, 0].view(torch.int16), expected.to(torch.bfloat16).view(torch.int16))


def record_prefill_calls(monkeypatch) -> list:
    """The list the layer's prefill-kernel calls append their output shape to (the layer selects
    the prefill kernel itself for every T > 32 these tests use: nothing is forced)."""
    calls = []
    real = launch.prefill_gemm
    monkeypatch.setattr(launch, "prefill_gemm",
                        lambda *args, **kwargs: (calls.append(args[6].shape), real(*args, **kwargs))[1])
    return calls


@pytest.mark.parametrize("groups, k, n", SHAPES)
@pytest.mark.parametrize("activation_scale, source", MODES)
def test_prefill_forward_matches_the_reference_layer(groups, k, n, activation_scale, source, monkeypatch):
    """Token counts from just above the decode range (64-token tiles) to below, at and across the
    128-token tile and the 128-row padding."""
    torch.backends.cuda.matmul.allow_tf32 = False
    assert launch.prefill_supported(groups, k, n)
    calls = record_prefill_calls(monkeypatch)
    layers = layers_for(groups, k, n, activation_scale, source, max_tokens=1100)
    token_counts = (launch.DECODE_MAX_TOKENS + 1, 32, 33, 129, 256, 300, 1100)
    for tokens in token_counts:
        o = activations(tokens, groups, k, seed=tokens).view(tokens, groups * k // 512, 512)
        z = layers["cutedsl"](o).clone()
        ref = layers["reference"](o).clone()
        assert_within_summation_order(z, ref)
        again = layers["cutedsl"](o)
        assert torch.equal(z.view(torch.int16), again.view(torch.int16)), "not deterministic"
    assert len(calls) == 2 * len(token_counts), "the layer did not run the prefill kernel"


@pytest.mark.parametrize("heads", [1, 3])  # K = 64 (one stage: the weight ring's loads are clamped) and 192 (odd)
def test_prefill_forward_with_few_k_stages_matches_the_reference_layer(heads, monkeypatch):
    torch.backends.cuda.matmul.allow_tf32 = False
    calls = record_prefill_calls(monkeypatch)
    groups, d, n = 2, 64, 512
    w = (torch.randn(groups, heads * d, n, generator=torch.Generator().manual_seed(heads)) / 8).to(torch.bfloat16)
    layers = []
    for backend in ("cutedsl", "reference"):
        layer = Nvfp4GroupedLinear(groups, heads, d, n, max_num_tokens=300, device=CUDA, backend=backend,
                                   activation_scale_source="dynamic", check_finite=False)
        layer.set_bf16_weight(w.to(CUDA))
        layer.finalize_weights()
        layers.append(layer)
    token_counts = (launch.DECODE_MAX_TOKENS + 1, 130, 300)  # from just above the decode kernel's range
    for tokens in token_counts:
        o = activations(tokens, groups, heads * d, seed=tokens).view(tokens, groups * heads, d)
        assert_within_summation_order(layers[0](o).clone(), layers[1](o).clone())
    assert len(calls) == len(token_counts)


def test_prefill_forward_at_8192_tokens_matches_the_reference_layer():
    torch.backends.cuda.matmul.allow_tf32 = False
    groups, k, n, tokens = 8, 4096, 1024, 8192
    assert launch.prefill_selected(tokens, groups, k, n, launch.multiprocessors(0))  # the layer's own choice
    layers = layers_for(groups, k, n, "per_group", "static", max_tokens=tokens)
    o = activations(tokens, groups, k, seed=3).view(tokens, groups * k // 512, 512)
    assert_within_summation_order(layers["cutedsl"](o).clone(), layers["reference"](o).clone())


def quantized_operands(groups: int, k: int, n: int, tokens: int, seed: int = 0):
    """x quantized by the quantizer kernel and weights in the decode layout, for calling
    ``launch.prefill_gemm`` directly; returns ``(args, reference z)``."""
    layers = layers_for(groups, k, n, "per_group", "static", max_tokens=tokens)
    layer = layers["cutedsl"]
    x = activations(tokens, groups, k, seed=seed).to(CUDA)
    rows_p = round_up(tokens, ROW_TILE)
    a_data = torch.zeros(groups * rows_p, k // 2, dtype=torch.uint8, device=CUDA)
    a_scales = torch.zeros(groups * rows_p, k // 16, dtype=torch.uint8, device=CUDA)
    used = torch.empty(groups, device=CUDA)
    launch.quantize_activations(x, layer.activation_global_scale, a_data, a_scales, used, dynamic=False, shared=False)
    reference = layers["reference"](x.view(tokens, groups * k // 512, 512)).clone()
    args = (a_data, a_scales, *layer._decode_weights, used, layer.weight_q.global_scale)
    return args, reference


@pytest.mark.parametrize("tokens", [40, 128, 300])
def test_prefill_split_k_matches_the_reference_at_every_split_and_is_deterministic(tokens):
    """Each split count (K/64 = 64 stages: 1 … 16 splits of at least 4) with 64- and 128-token tiles
    (64-token tiles at T = 300: odd tiles read the second half of their 128-row scale band) against
    the reference layer (2 bf16 ulps), twice bit for bit (the reduction adds the splits in order,
    whichever CTA is last), and the counters are left at zero for the next launch."""
    torch.backends.cuda.matmul.allow_tf32 = False
    groups, k, n = 8, 4096, 1024
    args, reference = quantized_operands(groups, k, n, tokens, seed=tokens)
    counters = launch.prefill_counters(tokens, groups, n, CUDA)
    for tile in prefill_kernel.TILE_TOKENS:
        for splits in (1, 2, 4, 8, 16):
            z = torch.full((tokens, groups, n), float("nan"), dtype=torch.bfloat16, device=CUDA)
            launch.prefill_gemm(*args, z, counters, splits=splits, tile_tokens=tile)
            assert_within_summation_order(z, reference)
            again = torch.empty_like(z)
            launch.prefill_gemm(*args, again, counters, splits=splits, tile_tokens=tile)
            assert torch.equal(z.view(torch.int16), again.view(torch.int16)), f"{tile}, {splits}: not deterministic"
            assert int(counters.abs().sum()) == 0, f"tile {tile}, splits={splits}: counters not reset"


def test_prefill_split_k_rejects_bad_splits_and_missing_counters():
    groups, k, n, tokens = 2, 512, 256, 64
    args, _ = quantized_operands(groups, k, n, tokens)
    z = torch.empty(tokens, groups, n, dtype=torch.bfloat16, device=CUDA)
    with pytest.raises(ValueError, match="splits=3 must be a positive divisor of K/64 = 8"):
        launch.prefill_gemm(*args, z, launch.prefill_counters(tokens, groups, n, CUDA), splits=3)
    with pytest.raises(ValueError, match="split K needs counters"):
        launch.prefill_gemm(*args, z, None, splits=2)
    with pytest.raises(ValueError, match="at least 2 elements"):
        launch.prefill_gemm(*args, z, torch.zeros(1, dtype=torch.int32, device=CUDA), splits=2)
    with pytest.raises(ValueError, match="tile_tokens=32 must be one of"):
        launch.prefill_gemm(*args, z, None, splits=1, tile_tokens=32)


@pytest.mark.parametrize("tokens", [64, 300])  # split K (2 and 4 splits on 132 SMs)
def test_prefill_forward_replays_in_a_cuda_graph_with_new_inputs(tokens, monkeypatch):
    calls = record_prefill_calls(monkeypatch)
    groups, k, n = 8, 4096, 1024
    layers = layers_for(groups, k, n, "per_group", "dynamic", max_tokens=tokens)
    assert_replays_with_new_inputs(layers["cutedsl"], layers["reference"], tokens, groups, k, seeds=range(70, 73))
    assert calls, "the layer did not run the prefill kernel"


def test_prefill_gemm_rejects_unsupported_operands():
    a = torch.zeros(128, 32, dtype=torch.uint8, device=CUDA)
    s = torch.zeros(128, 4, dtype=torch.uint8, device=CUDA)
    one = torch.ones(1, device=CUDA)
    words = torch.zeros(1, dtype=torch.int32, device=CUDA)
    with pytest.raises(ValueError, match="N=64"):
        launch.prefill_gemm(a, s, words, words, one, one, torch.empty(8, 1, 64, dtype=torch.bfloat16, device=CUDA))
    n = 256
    a = torch.zeros(256, 128, dtype=torch.uint8, device=CUDA)
    s = torch.zeros(256, 16, dtype=torch.uint8, device=CUDA)
    words, scale_bytes = pack_decode_weights(torch.zeros(1, n, 128, dtype=torch.uint8, device=CUDA),
                                             torch.zeros(1, n, 16, dtype=torch.uint8, device=CUDA).view(torch.float8_e4m3fn))
    z = torch.empty(130, 1, n, dtype=torch.bfloat16, device=CUDA)
    with pytest.raises(ValueError, match="Mp a multiple of 128"):  # 130 rows per group: not the quantizer's padding
        launch.prefill_gemm(a[:130], s[:130], words, scale_bytes, one, one, z)
    with pytest.raises(ValueError, match="a_scales must be"):
        launch.prefill_gemm(a, s[:, :8], words, scale_bytes, one, one, z)
    with pytest.raises(ValueError, match="out must be"):
        launch.prefill_gemm(a, s, words, scale_bytes, one, one, z.float())
    with pytest.raises(ValueError, match="words must be contiguous"):
        launch.prefill_gemm(a, s, words.transpose(3, 4).contiguous().transpose(3, 4), scale_bytes, one, one, z)
