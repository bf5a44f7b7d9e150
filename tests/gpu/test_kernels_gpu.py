"""The CuTeDSL kernels against the reference, on the GPU (skipped without one)."""

import pytest
import torch

from nvfp4lab import Nvfp4GroupedLinear, layouts, quantize_nvfp4, run_nvfp4_grouped_gemm
from nvfp4lab.formats import unpack_e2m1
from nvfp4lab.gemm import cutedsl_grouped_gemm
from nvfp4lab.kernels import launch
from nvfp4lab.layouts import ROW_TILE, round_up
from nvfp4lab.quantize import NVFP4Tensor, dynamic_global_scale

CUDA = torch.device("cuda")
SHAPES = [(8, 4096, 1024), (16, 4096, 1024), (8, 8192, 1536)]
TOKENS = [1, 7, 128, 1000, 8192]


def activations(tokens, groups, k, seed=0, device=CUDA):
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(tokens, groups, k, generator=g, device=device)
    gain = torch.logspace(0, -4, groups, device=device)[None, :, None]  # 4 decades of group spread
    x = x * gain * torch.exp(torch.randn(tokens, 1, 1, generator=g, device=device))
    x[:, :, :16] = 0  # a zero block in every row
    if tokens > 3:
        x[1] *= 1e-30  # a token far below the others: underflowing scales
        x[2, 0, 5] = 3e4  # one outlier
    return x.to(torch.bfloat16)


def kernel_operand(x, mode, row_slices=None):
    tokens, groups, k = x.shape
    rows_p = round_up(tokens, ROW_TILE)
    data = torch.full((groups * rows_p, k // 2), 0xAB, dtype=torch.uint8, device=x.device)  # garbage
    scales = torch.zeros((groups * rows_p, round_up(k // 16, 4)), dtype=torch.uint8, device=x.device)
    used = torch.empty(groups, device=x.device)
    shared = mode.startswith("shared")
    if mode.endswith("dynamic"):
        amax_bits = torch.empty(groups, dtype=torch.int32, device=x.device)
        launch.group_amax(x, amax_bits)
        source = amax_bits.view(torch.float32)
    else:
        source = torch.logspace(-2, -6, groups, device=x.device)
        if shared:
            source = source.max().expand(groups).contiguous()
    launch.quantize_activations(x, source, data, scales, used, dynamic=mode.endswith("dynamic"), shared=shared,
                                row_slices=row_slices)
    return data, scales, used, source


def reference_operand(x, mode, source):
    per_group = mode.startswith("per_group")
    if mode.endswith("dynamic"):
        gs = dynamic_global_scale(x.cpu(), per_group=per_group)
        gs = gs if per_group else gs.expand(x.shape[1]).contiguous()
    else:
        gs = source.cpu()
    q = quantize_nvfp4(x.cpu(), gs, check_finite=False)  # (T, G, K)
    by_group = NVFP4Tensor(q.data.transpose(0, 1), q.scales.transpose(0, 1), gs, torch.Size((x.shape[1], x.shape[0], x.shape[2])), q.dtype, 0)
    mat_a, scale_a, offsets = layouts.grouped_a_operand(by_group)
    return mat_a.view(torch.uint8), scale_a.view(torch.uint8), gs


@pytest.mark.parametrize("mode", ["shared static", "per_group static", "shared dynamic", "per_group dynamic"])
@pytest.mark.parametrize("tokens, groups, k", [(1, 8, 4096), (7, 2, 96), (130, 3, 64), (1000, 8, 4096), (257, 16, 512)])
def test_quantizer_bytes_equal_the_reference(tokens, groups, k, mode):
    x = activations(tokens, groups, k)
    data, scales, used, source = kernel_operand(x, mode)
    ref_data, ref_scales, ref_gs = reference_operand(x, mode, source)
    assert torch.equal(used.cpu(), ref_gs)
    assert torch.equal(data.cpu(), ref_data), f"{(data.cpu() != ref_data).sum()} data bytes differ"
    assert torch.equal(scales.cpu(), ref_scales), f"{(scales.cpu() != ref_scales).sum()} scale bytes differ"


@pytest.mark.parametrize("row_slices", [True, False])
@pytest.mark.parametrize("mode", ["per_group static", "shared dynamic"])
@pytest.mark.parametrize("tokens, groups, k", [(33, 8, 4096), (300, 3, 512)])
def test_quantizer_thread_granularities_give_the_reference_bytes(tokens, groups, k, mode, row_slices):
    """One thread per 64-element row slice or per 16-element block (``launch.quantizer_row_slices``
    picks by size): the same bytes, the reference's."""
    x = activations(tokens, groups, k, seed=tokens)
    data, scales, used, source = kernel_operand(x, mode, row_slices)
    ref_data, ref_scales, ref_gs = reference_operand(x, mode, source)
    assert torch.equal(used.cpu(), ref_gs)
    assert torch.equal(data.cpu(), ref_data), f"{(data.cpu() != ref_data).sum()} data bytes differ"
    assert torch.equal(scales.cpu(), ref_scales), f"{(scales.cpu() != ref_scales).sum()} scale bytes differ"


def test_quantizer_edge_magnitudes_bytes_equal():
    x = torch.zeros(5, 2, 64)
    x[0, 0] = torch.tensor([2.0**-133, 1e-38, 3e38, -3e38] * 16)[:64]
    x[1, 1] = torch.linspace(-1, 1, 64) * 1e-20
    # E2M1 tie points in a tensor of their own: amax 10.5 gives gs = 1/256 exactly, the tie
    # block's scale 256 and an element multiplier of exactly 1, so the ties reach the
    # rounding as they are (next to the 3e38 above they would all quantize to zero)
    ties = torch.zeros(2, 2, 64)
    ties[0, :, :16] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0] * 2)
    ties[1, :, 16:32] = 10.5
    for tensor in (x, ties):
        tensor = tensor.to(torch.bfloat16).to(CUDA)
        for mode in ("shared dynamic", "per_group dynamic"):
            data, scales, used, source = kernel_operand(tensor, mode)
            ref_data, ref_scales, _ = reference_operand(tensor, mode, source)
            assert torch.equal(data.cpu(), ref_data) and torch.equal(scales.cpu(), ref_scales)
    codes = unpack_e2m1(quantize_nvfp4(ties.to(torch.bfloat16)).data)[0, 0, :8].tolist()
    assert codes == [0, 2, 2, 4, 4, 6, 6, 7]  # ties to the even code: 0, 1, 1, 2, 2, 4, 4, 6


def test_quantizer_bytes_equal_the_reference_at_the_smallest_global_scale():
    """gs = 2^-126, the smallest the API accepts, with normal block scales: the quantizer's
    clamp-free loop at the edge of its bound (1/gs = 2^126, amax/6 near 2^-128, subnormal)."""
    x = (activations(130, 2, 64).float() * 2.0**-121).to(torch.bfloat16)  # block scales near 5: normal
    rows_p = round_up(130, ROW_TILE)
    data = torch.full((2 * rows_p, 32), 0xAB, dtype=torch.uint8, device=CUDA)
    scales = torch.zeros((2 * rows_p, 4), dtype=torch.uint8, device=CUDA)
    used = torch.empty(2, device=CUDA)
    source = torch.full((2,), 2.0**-126, device=CUDA)
    launch.quantize_activations(x, source, data, scales, used, dynamic=False, shared=False)
    ref_data, ref_scales, _ = reference_operand(x, "per_group static", source)
    assert torch.equal(scales.cpu(), ref_scales) and torch.equal(data.cpu(), ref_data)


def gemm_operands(tokens, groups, k, n, seed=0):
    x = activations(tokens, groups, k, seed)
    data, scales, used, _ = kernel_operand(x, "per_group dynamic")
    w = torch.randn(groups, n, k, device=CUDA, generator=torch.Generator(device=CUDA).manual_seed(seed + 1))
    w = (w * torch.logspace(0, -2, n, device=CUDA)[None, :, None]).to(torch.bfloat16)
    gs_b = dynamic_global_scale(w, per_group=True, group_dim=0)
    wq = quantize_nvfp4(w, gs_b, group_dim=0, check_finite=False)
    mat_b, scale_b = layouts.grouped_b_operand(wq)
    rows_p = round_up(tokens, ROW_TILE)
    offsets = torch.arange(1, groups + 1, dtype=torch.int32, device=CUDA) * rows_p
    return (data.view(torch.float4_e2m1fn_x2), mat_b, scales.view(torch.float8_e4m3fn), scale_b, offsets, used, gs_b)


def capture_graph(call):
    """Capture ``call()`` in a CUDA graph on a side stream (after one warm-up call that
    compiles outside the capture); returns ``(graph, the captured call's output)``."""
    call()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream), torch.cuda.graph(graph, stream=stream):
        out = call()
    torch.cuda.current_stream().wait_stream(stream)
    return graph, out


def assert_replays_with_new_inputs(layer, reference, tokens, groups, k, seeds):
    """Capture ``layer``'s forward on a static ``o (T, G·K/512, 512)`` in a CUDA graph, then for
    each seed copy new activations into ``o``, replay, and compare with ``reference``'s forward."""
    static_o = activations(tokens, groups, k, seed=1).view(tokens, groups * k // 512, 512).clone()
    graph, static_z = capture_graph(lambda: layer(static_o))
    for seed in seeds:
        static_o.copy_(activations(tokens, groups, k, seed=seed).view(tokens, groups * k // 512, 512))
        graph.replay()
        torch.cuda.synchronize()
        assert_within_summation_order(static_z, reference(static_o).clone())


def assert_within_summation_order(out, ref):
    """Relative Frobenius error < 2e-3 and every element within 2 bf16 ulps of the
    reference (ulp of the larger of |ref| and 2^-10·rms, so cancellations to ~0 do not
    demand ulps of a number smaller than the fp32 summation noise)."""
    ref64, out64 = ref.double(), out.double()
    rel = ((out64 - ref64).norm() / ref64.norm()).item()
    assert rel < 2e-3, rel
    floor = ref64.square().mean().sqrt() * 2.0**-10
    ulp = 2.0 ** (torch.floor(torch.log2(torch.maximum(ref64.abs(), floor))) - 7)
    worst = ((out64 - ref64).abs() / ulp).max().item()
    assert worst <= 2.0, worst


@pytest.mark.parametrize("groups, k, n", SHAPES)
@pytest.mark.parametrize("tokens", TOKENS)
def test_grouped_gemm_matches_the_reference(groups, k, n, tokens):
    torch.backends.cuda.matmul.allow_tf32 = False
    ops = gemm_operands(tokens, groups, k, n)
    ref = run_nvfp4_grouped_gemm(*ops, backend="reference")  # fp32 on the GPU, no TF32
    padded = run_nvfp4_grouped_gemm(*ops, backend="cutedsl")
    assert_within_summation_order(padded, ref)
    z = cutedsl_grouped_gemm(*ops, tokens=tokens)
    rows_p = round_up(tokens, ROW_TILE)
    ref_z = ref.view(groups, rows_p, n)[:, :tokens].transpose(0, 1)
    assert_within_summation_order(z, ref_z)  # z may come from the split-K path: another summation order


@pytest.mark.parametrize("activation_scale", ["shared", "per_group"])
@pytest.mark.parametrize("source", ["static", "dynamic"])
def test_linear_on_cuda_matches_the_reference_layer_and_replays_in_a_cuda_graph(activation_scale, source):
    groups, hpg, d, n, max_tokens = 8, 8, 512, 1024, 256
    w = (torch.randn(groups, hpg * d, n) / 64).to(torch.bfloat16)
    layers = {}
    for device, backend in ((CUDA, "auto"), (torch.device("cpu"), "reference")):
        layer = Nvfp4GroupedLinear(groups, hpg, d, n, max_num_tokens=max_tokens, device=device,
                                   activation_scale=activation_scale, activation_scale_source=source, backend=backend)
        layer.set_bf16_weight(w.to(device))
        layer.finalize_weights()
        layer.set_activation_global_scale(torch.full((groups,), 4.0 / 2688))
        layers[device.type] = layer
    assert layers["cuda"].backend == "cutedsl"
    assert torch.equal(layers["cuda"]._mat_b.view(torch.uint8).cpu(), layers["cpu"]._mat_b.view(torch.uint8))
    assert torch.equal(layers["cuda"]._scale_b.view(torch.uint8).cpu(), layers["cpu"]._scale_b.view(torch.uint8))

    def check(o):
        z = layers["cuda"](o.to(CUDA)).cpu()
        ref = layers["cpu"](o.cpu()).clone()
        assert_within_summation_order(z, ref)

    for tokens in (1, 77, 256):
        check(activations(tokens, groups, hpg * d, seed=tokens, device=torch.device("cpu")).view(tokens, groups * hpg, d))

    cuda_layer = layers["cuda"]
    cuda_layer.check_finite = False
    static_o = torch.zeros(77, groups * hpg, d, dtype=torch.bfloat16, device=CUDA)
    static_o.copy_(activations(77, groups, hpg * d, seed=1).view(77, groups * hpg, d))
    graph, static_z = capture_graph(lambda: cuda_layer(static_o))
    for seed in range(3):
        o = activations(77, groups, hpg * d, seed=100 + seed).view(77, groups * hpg, d)
        static_o.copy_(o)
        graph.replay()
        torch.cuda.synchronize()
        ref = layers["cpu"](o.cpu()).clone()
        assert_within_summation_order(static_z.cpu(), ref)


def test_cuda_path_rejects_bad_input_before_launching():
    layer = Nvfp4GroupedLinear(2, 1, 64, 128, max_num_tokens=8, device=CUDA)
    layer.set_bf16_weight(torch.randn(2, 64, 128, dtype=torch.bfloat16, device=CUDA))
    layer.finalize_weights()
    with pytest.raises(ValueError, match="max_num_tokens"):
        layer(torch.zeros(9, 2, 64, dtype=torch.bfloat16, device=CUDA))
    with pytest.raises(ValueError, match="is on cpu"):
        layer(torch.zeros(3, 2, 64, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="bfloat16"):
        layer(torch.zeros(3, 2, 64, dtype=torch.float16, device=CUDA))
    with pytest.raises(ValueError, match="non-finite"):
        layer(torch.full((3, 2, 64), float("nan"), dtype=torch.bfloat16, device=CUDA))
    ops = gemm_operands(5, 2, 64, 128)
    with pytest.raises(ValueError, match="tokens=200"):
        cutedsl_grouped_gemm(*ops, tokens=200)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_reference_quantizer_gives_the_same_bytes_on_cuda_and_cpu(dtype):
    x = activations(300, 4, 512).to(dtype)
    for gs in (None, dynamic_global_scale(x, per_group=True)):
        on_gpu = quantize_nvfp4(x, gs, check_finite=False)
        on_cpu = quantize_nvfp4(x.cpu(), None if gs is None else gs.cpu(), check_finite=False)
        assert torch.equal(on_gpu.global_scale.cpu(), on_cpu.global_scale)
        assert torch.equal(on_gpu.scales.view(torch.uint8).cpu(), on_cpu.scales.view(torch.uint8))
        assert torch.equal(on_gpu.data.view(torch.uint8).cpu(), on_cpu.data.view(torch.uint8))


def test_quantizer_bytes_equal_the_reference_on_every_bf16_bit_pattern():
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    values = bits[torch.isfinite(bits)]
    values = torch.cat([values, torch.zeros(-values.numel() % 64, dtype=torch.bfloat16)])  # whole rows of K=64
    g = torch.Generator().manual_seed(0)
    shuffled = values[torch.randperm(values.numel(), generator=g)]  # mixed magnitudes per block
    for x in (values, shuffled):
        x3 = x.reshape(-1, 1, 64).to(CUDA)  # (T, G=1, K=64)
        for mode in ("shared static", "per_group dynamic"):
            data, scales, used, source = kernel_operand(x3, mode)
            ref_data, ref_scales, _ = reference_operand(x3, mode, source)
            assert torch.equal(data.cpu(), ref_data) and torch.equal(scales.cpu(), ref_scales), mode
