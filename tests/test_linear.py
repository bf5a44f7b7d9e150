"""Nvfp4GroupedLinear against float64 einsums of its own dequantized operands and
against the unquantized layer."""

import numpy as np
import pytest
import torch
from helpers import heavy_tailed, oracle_quantize

from nvfp4lab import Nvfp4GroupedLinear, dequantize_nvfp4, metrics
from nvfp4lab.formats import unpack_e2m1

G, HPG, D, N = 2, 2, 64, 48  # K = 128


def make_layer(weight_form, activation_scale="shared", source="static", max_tokens=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    w_bmm = (torch.randn(G, HPG * D, N, generator=g) * torch.linspace(0.1, 2, N)).to(torch.bfloat16)
    layer = Nvfp4GroupedLinear(G, HPG, D, N, max_num_tokens=max_tokens,
                               activation_scale=activation_scale, activation_scale_source=source)
    if weight_form == "bmm":
        layer.set_bf16_weight(w_bmm)
    else:  # dense (G·N, K): row g·N + n is output channel n of group g
        layer.set_bf16_weight(w_bmm.transpose(1, 2).reshape(G * N, HPG * D).contiguous())
    layer.finalize_weights()
    return layer, w_bmm


def attention_output(tokens, seed=1, group_gain=(1.0, 0.05)):
    o = heavy_tailed((tokens, G * HPG, D), torch.Generator().manual_seed(seed)).float()
    gain = torch.tensor(group_gain).repeat_interleave(HPG)[None, :, None]
    return (o * gain).to(torch.bfloat16)


@pytest.mark.parametrize("weight_form", ["bmm", "dense"])
@pytest.mark.parametrize("activation_scale", ["shared", "per_group"])
@pytest.mark.parametrize("source", ["static", "dynamic"])
def test_forward_equals_einsum_of_its_dequantized_operands(weight_form, activation_scale, source):
    layer, w = make_layer(weight_form, activation_scale, source)
    o = attention_output(200)
    calibration = attention_output(500, seed=7)
    if source == "static":
        layer.compute_activation_global_scale(calibration)
    z = layer(o)
    assert z.shape == (200, G, N) and z.dtype == torch.bfloat16

    xq = layer.quantize_activations(o)  # (T, G, K)
    a = dequantize_nvfp4(xq, apply_global_scale=False).double()
    b = dequantize_nvfp4(layer.weight_q, apply_global_scale=False).double()  # (G, N, K)
    gs = xq.global_scale.double() * layer.weight_q.global_scale.double()
    exact = torch.einsum("tgk,gnk->tgn", a, b) * gs[None, :, None]
    ulp = 2.0 ** (torch.floor(torch.log2(exact.abs().clamp(min=1e-30))) - 7)
    assert ((z.double() - exact).abs() <= ulp).all()

    if activation_scale == "per_group":
        assert xq.global_scale[0] > 10 * xq.global_scale[1]  # the quiet group got its own
    else:
        assert xq.global_scale[0] == xq.global_scale[1]

    # The activation bytes the layer multiplies are the independent oracle's, with the
    # global scale of its mode recomputed here: amax (of the calibration set when static,
    # of o when dynamic; per group or the max over groups) / 2688.
    x = o.view(200, G, HPG * D).float()
    seen = (calibration if source == "static" else o).view(-1, G, HPG * D).float()
    amax = seen.abs().amax(dim=(0, 2))
    if activation_scale == "shared":
        amax = amax.max().expand(G)
    gs = (amax / 2688).clamp(min=2.0**-126).numpy()
    codes, scale_bytes = oracle_quantize(x.reshape(-1, HPG * D).numpy(), np.tile(gs, 200))
    assert torch.equal(unpack_e2m1(xq.data).reshape(codes.shape), torch.from_numpy(codes))
    assert torch.equal(xq.scales.view(torch.uint8).reshape(scale_bytes.shape), torch.from_numpy(scale_bytes))
    w_nk = w.transpose(1, 2).float()  # weights: per-group dynamic scale, the same oracle
    w_gs = (w_nk.abs().amax(dim=(1, 2)) / 2688).clamp(min=2.0**-126).numpy()
    w_codes, w_scales = oracle_quantize(w_nk.reshape(-1, HPG * D).numpy(), np.repeat(w_gs, N))
    assert torch.equal(unpack_e2m1(layer.weight_q.data).reshape(w_codes.shape), torch.from_numpy(w_codes))
    assert torch.equal(layer.weight_q.scales.view(torch.uint8).reshape(w_scales.shape), torch.from_numpy(w_scales))


def test_weight_forms_give_identical_bytes():
    bmm, _ = make_layer("bmm")
    dense, _ = make_layer("dense")
    assert torch.equal(bmm._mat_b.view(torch.uint8), dense._mat_b.view(torch.uint8))
    assert torch.equal(bmm._scale_b.view(torch.uint8), dense._scale_b.view(torch.uint8))


def test_shared_static_scale_makes_the_quiet_group_lose_precision_against_per_group():
    results = {}
    for mode in ("shared", "per_group"):
        layer, w = make_layer("bmm", mode)
        layer.compute_activation_global_scale(attention_output(400, seed=3, group_gain=(1.0, 1e-4)))
        o = attention_output(200, group_gain=(1.0, 1e-4))
        unquantized = torch.einsum("tgk,gkn->tgn", o.view(200, G, HPG * D).double(), w.double())
        results[mode] = metrics.sqnr_db_per_group(unquantized, layer(o))
    assert results["per_group"][1] > results["shared"][1] + 3.0  # subnormal scales cost dB


def test_bad_inputs_and_misuse_raise_clear_errors():
    layer = Nvfp4GroupedLinear(G, HPG, D, N, max_num_tokens=16)
    with pytest.raises(RuntimeError, match="set_bf16_weight"):
        layer(attention_output(4))
    with pytest.raises(RuntimeError, match="before set_bf16_weight"):
        layer.finalize_weights()
    with pytest.raises(ValueError, match="G·N, K"):
        layer.set_bf16_weight(torch.zeros(G, N, HPG * D, dtype=torch.bfloat16))
    w_nan = torch.zeros(G, HPG * D, N, dtype=torch.bfloat16)
    w_nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        layer.set_bf16_weight(w_nan)
    layer.set_bf16_weight(torch.randn(G, HPG * D, N).to(torch.bfloat16))
    layer.finalize_weights()
    with pytest.raises(ValueError, match="max_num_tokens"):
        layer(attention_output(17))
    with pytest.raises(TypeError, match="bfloat16"):
        layer(attention_output(4).float())
    with pytest.raises(ValueError, match="H=4, D=64"):
        layer(torch.zeros(4, 3, 64, dtype=torch.bfloat16))
    o = attention_output(4)
    o[1, 2, 3] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        layer(o)
    with pytest.raises(ValueError, match="multiple of 16"):
        Nvfp4GroupedLinear(G, 1, 40, N)
    with pytest.raises(ValueError, match="activation_scale"):
        Nvfp4GroupedLinear(G, HPG, D, N, activation_scale="per_token")
    with pytest.raises(ValueError, match="one value for all groups"):
        layer.set_activation_global_scale(torch.tensor([1.0, 2.0]))
    assert layer(o[:0]).shape == (0, G, N)


def test_setting_weights_again_requires_finalizing_again():
    layer, _ = make_layer("bmm")
    layer.set_bf16_weight(torch.randn(G, HPG * D, N).to(torch.bfloat16))
    with pytest.raises(RuntimeError, match="finalize_weights"):
        layer(attention_output(3))


def test_a_rejected_call_leaves_the_layer_working_and_unchanged():
    layer, _ = make_layer("bmm")
    o = attention_output(40)
    before = layer(o).clone()
    scale_before = layer.activation_global_scale.clone()
    bad = o.clone()
    bad[0, 0, 0] = float("nan")
    for call in (lambda: layer(bad), lambda: layer(attention_output(301)), lambda: layer(o.float()),
                 lambda: layer.compute_activation_global_scale(bad),
                 lambda: layer.set_activation_global_scale(torch.tensor([0.0, 1.0]))):
        with pytest.raises((ValueError, TypeError)):
            call()
    assert torch.equal(layer.activation_global_scale, scale_before)
    assert torch.equal(layer(o), before)


def test_all_zero_input_and_all_zero_groups_give_exact_zeros():
    layer, _ = make_layer("bmm", source="dynamic")
    o = attention_output(9)
    o[:, :HPG] = 0  # group 0 entirely zero
    z = layer(o)
    assert (z[:, 0] == 0).all() and (z[:, 1] != 0).any()
    assert (layer(torch.zeros_like(o)) == 0).all()


# ------------------------------------------------------------------ the API: run, custom op, compile
def test_run_call_forward_and_the_custom_op_give_the_same_bytes():
    layer, _ = make_layer("bmm", "per_group", "dynamic")
    o = attention_output(50)
    z = layer.run(o).clone()
    assert torch.equal(layer(o), z) and torch.equal(layer.forward(o), z)
    via_op = torch.ops.nvfp4lab.grouped_linear(o, layer._handle)
    assert torch.equal(via_op, z) and via_op.data_ptr() != layer(o).data_ptr()  # the op returns a new tensor
    result = torch.library.opcheck(torch.ops.nvfp4lab.grouped_linear.default, (o, layer._handle))
    assert set(result.values()) == {"SUCCESS"}, result


class TwoCalls(torch.nn.Module):
    """Model code around the layer: two calls (an eager call returns a view of the
    layer's buffer, valid until the next call, so the first result is used before)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, o):
        first = self.layer(o * 0.5).float().relu()
        second = self.layer(o)
        return first + 2 * second.float()


def test_torch_compile_fullgraph_of_a_module_calling_the_layer_equals_eager():
    layer, _ = make_layer("bmm", "shared", "static")
    layer.compute_activation_global_scale(attention_output(300, seed=7))
    model = TwoCalls(layer)
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.backends.common.aot_autograd(fw_compiler=lambda g, _: g)(gm, example_inputs)

    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=recording_backend)
    for tokens, seed in ((64, 1), (64, 2), (37, 3)):
        o = attention_output(tokens, seed=seed)
        assert torch.equal(compiled(o), model(o))
    op = torch.ops.nvfp4lab.grouped_linear
    calls = [n for g in graphs for n in g.graph.nodes if n.target in (op, op.default)]
    assert len(calls) == 2 * len(graphs)  # one opaque op per call, nothing traced inside the layer


def test_compiled_calls_check_shapes_at_trace_time():
    layer, _ = make_layer("bmm")
    torch._dynamo.reset()
    compiled = torch.compile(TwoCalls(layer), fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match="H=4, D=64"):
        compiled(torch.zeros(4, 3, 64, dtype=torch.bfloat16))
    with pytest.raises(Exception, match="max_num_tokens=300"):
        compiled(attention_output(301))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_asking_for_cuda_without_it_is_a_clear_error():
    with pytest.raises(ValueError, match="device='cuda' was asked for, but (this torch was built without CUDA|no CUDA)"):
        Nvfp4GroupedLinear(G, HPG, D, N, device="cuda")
