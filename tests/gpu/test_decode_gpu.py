"""The one-launch decode forward (T <= 32, its capacity: the tests raise
``launch.DECODE_MAX_TOKENS`` to it, so the layer selects the decode kernel wherever it can) on
the GPU (skipped without one): exact weight decode for every scale byte and code, the layer
against the reference, determinism and CUDA-graph replay with new inputs (the split-K counters
must reset themselves)."""

import pytest
import torch

from nvfp4lab import Nvfp4GroupedLinear, quantize_nvfp4
from nvfp4lab.formats import e2m1_float_from_code, e4m3_float_from_byte, pack_e2m1, unpack_e2m1
from nvfp4lab.kernels import launch
from nvfp4lab.kernels.decode_layout import pack_decode_weights

from test_kernels_gpu import CUDA, SHAPES, activations, assert_replays_with_new_inputs, assert_within_summation_order

MODES = [("shared", "static"), ("per_group", "dynamic"), ("per_group", "static"), ("shared", "dynamic")]


@pytest.fixture(autouse=True)
def decode_at_capacity(monkeypatch):
    """The layer takes the decode kernel for every T it can (up to ``decode_gemm.MAX_TOKENS``)."""
    monkeypatch.setattr(launch, "DECODE_MAX_TOKENS", launch.decode_kernel.MAX_TOKENS)


def test_every_scale_byte_and_code_decodes_exactly_on_the_gpu():
    finite = [b for b in range(256) if b & 0x7F != 0x7F]
    scales = torch.tensor(finite + [0x01, 0x80], dtype=torch.uint8).view(1, 16, 16)  # 16 rows × 16 blocks, K=256
    codes = torch.arange(16, dtype=torch.uint8).repeat(1, 16, 16)
    data = pack_e2m1(codes).view(torch.uint8)
    words, scale_bytes = pack_decode_weights(data.to(CUDA), scales.view(torch.float8_e4m3fn).to(CUDA))
    w_true = e2m1_float_from_code(unpack_e2m1(data)) * e4m3_float_from_byte(scales).repeat_interleave(16, -1)  # (1,16,256)
    gs_a = torch.full((1,), 1.0 / 2688, device=CUDA)
    gs_w = torch.ones(1, device=CUDA)
    counters = torch.zeros(1, dtype=torch.int32, device=CUDA)
    for first in range(0, 256, 16):  # 16 tokens, token t picks column first + t: no summation at all
        x = torch.zeros(16, 1, 256, dtype=torch.bfloat16)
        x[torch.arange(16), 0, first + torch.arange(16)] = 1.0
        z = torch.empty(16, 1, 16, dtype=torch.bfloat16, device=CUDA)
        launch.decode_forward(x.to(CUDA), gs_a, words, scale_bytes, gs_w, z, counters, dynamic=False, shared=True)
        q = quantize_nvfp4(x, gs_a.cpu())
        a_value = (e2m1_float_from_code(unpack_e2m1(q.data)) * q.scales.float().repeat_interleave(16, -1)).sum(-1)  # (16,1)
        expected = (w_true[0, :, first:first + 16].T * a_value) * (gs_a.cpu() * gs_w.cpu())  # fp32, as the kernel
        expected = expected + 0.0  # an accumulator that starts at +0 turns a -0 product into +0
        assert torch.equal(z.cpu()[:, 0].view(torch.int16), expected.to(torch.bfloat16).view(torch.int16)), first


def layers_for(groups, k, n, activation_scale, source, max_tokens=32, seed=0):
    g = torch.Generator(device=CUDA).manual_seed(seed)
    w = (torch.randn(groups, k, n, generator=g, device=CUDA) / 64).to(torch.bfloat16)
    made = {}
    for backend in ("cutedsl", "reference"):
        layer = Nvfp4GroupedLinear(groups, k // 512, 512, n, max_num_tokens=max_tokens, device=CUDA, backend=backend,
                                   activation_scale=activation_scale, activation_scale_source=source, check_finite=False)
        layer.set_bf16_weight(w)
        layer.finalize_weights()
        layer.set_activation_global_scale(torch.full((groups,), 3.0 / 2688))
        made[backend] = layer
    return made


@pytest.mark.parametrize("groups, k, n", SHAPES)
@pytest.mark.parametrize("activation_scale, source", MODES)
def test_decode_forward_matches_the_reference_layer(groups, k, n, activation_scale, source):
    torch.backends.cuda.matmul.allow_tf32 = False
    layers = layers_for(groups, k, n, activation_scale, source)
    for tokens in (1, 5, 8, 9, 16, 17, 24, 32):  # one, two and four token tiles
        assert launch.decode_selected(tokens, groups, k, n)
        o = activations(tokens, groups, k, seed=tokens).view(tokens, groups * k // 512, 512)
        z = layers["cutedsl"](o).clone()
        ref = layers["reference"](o).clone()
        assert_within_summation_order(z, ref)
        again = layers["cutedsl"](o)
        assert torch.equal(z.view(torch.int16), again.view(torch.int16)), "not deterministic"


@pytest.mark.parametrize("tokens", [1, 16, 32])
def test_decode_forward_replays_in_a_cuda_graph_with_new_inputs(tokens):
    groups, k, n = 8, 4096, 1024
    layers = layers_for(groups, k, n, "per_group", "dynamic")
    assert_replays_with_new_inputs(layers["cutedsl"], layers["reference"], tokens, groups, k, seeds=range(50, 54))
    assert int(layers["cutedsl"]._decode_counters.abs().sum()) == 0  # every launch leaves its counters at zero


@pytest.mark.parametrize("shared", [False, True])
def test_fused_amax_gives_the_amax_launchs_output_bit_for_bit(shared):
    """Dynamic scales with the amax found in the decode kernel's prologue equal those from the
    ``group_amax`` launch exactly (a max is exact in any order), at one, two and four token
    tiles (the layer takes the fused form where ``launch.decode_fuses_amax`` says so)."""
    groups, k, n = 8, 4096, 1024
    layer = layers_for(groups, k, n, "shared" if shared else "per_group", "dynamic")["cutedsl"]
    words, word_scales = layer._decode_weights
    counters = launch.decode_counters(groups, n, CUDA)
    amax_bits = torch.zeros(groups, dtype=torch.int32, device=CUDA)
    for tokens in (1, 9, 32):
        x = activations(tokens, groups, k, seed=50 + tokens)
        z = {}
        for fused in (False, True):
            z[fused] = torch.full((tokens, groups, n), float("nan"), dtype=torch.bfloat16, device=CUDA)
            if not fused:
                launch.group_amax(x, amax_bits)
            source = amax_bits.view(torch.float32) if not fused else torch.full((groups,), float("nan"), device=CUDA)
            launch.decode_forward(x, source, words, word_scales, layer.weight_q.global_scale, z[fused], counters,
                                  dynamic=True, shared=shared, fused_amax=fused)
        assert torch.equal(z[True].view(torch.int16), z[False].view(torch.int16)), f"T={tokens}"
    with pytest.raises(ValueError, match="needs dynamic=True"):
        launch.decode_forward(x, source, words, word_scales, layer.weight_q.global_scale, z[True], counters,
                              dynamic=False, shared=shared, fused_amax=True)
