"""The benchmark's FP8 blockwise baseline on the GPU: cuBLAS's blockwise ``_scaled_mm`` must
compute the product of the recipe's dequantized operands (the study's FP8 recipe), and the
activation cast must give the CPU bytes."""

import pytest
import torch

from nvfp4lab import fp8_blockwise

CUDA = torch.device("cuda")


@pytest.mark.parametrize("tokens", [1, 130])
def test_blockwise_gemm_equals_the_product_of_the_dequantized_operands(tokens):
    g = torch.Generator(device=CUDA).manual_seed(0)
    gain = torch.logspace(-3, 1, 1024, device=CUDA)
    x = (torch.randn(tokens, 2, 1024, generator=g, device=CUDA) * gain).to(torch.bfloat16)
    w = (torch.randn(2, 256, 1024, generator=g, device=CUDA) / 32).to(torch.bfloat16)
    x8, xs = fp8_blockwise.quantize_activations(x)
    w8, ws = fp8_blockwise.quantize_weights(w)
    cpu_x8, cpu_xs = fp8_blockwise.quantize_activations(x.cpu())
    assert torch.equal(x8.cpu().view(torch.uint8), cpu_x8.view(torch.uint8)) and torch.equal(xs.cpu(), cpu_xs)
    if tuple(int(v) for v in torch.version.cuda.split(".")[:2]) < (12, 9):
        pytest.skip("cuBLAS has blockwise FP8 scaling from CUDA 12.9")
    rows = fp8_blockwise.padded_tokens(tokens)
    out = fp8_blockwise.grouped_matmul(x8, xs, w8, ws, torch.empty(2, rows, 256, dtype=torch.bfloat16, device=CUDA))
    exact = torch.einsum("tgk,gnk->gtn", fp8_blockwise.dequantize(x8.cpu(), xs.cpu(), activations=True),
                         fp8_blockwise.dequantize(w8.cpu(), ws.cpu(), activations=False))
    error = (out.cpu().double() - exact).norm() / exact.norm()
    assert error < 4e-3, f"relative Frobenius error {error:.2e}: the scales were not applied blockwise"


@pytest.mark.parametrize("tokens", [1, 130])
def test_the_fused_triton_cast_gives_the_eager_bytes(tokens):
    pytest.importorskip("triton")
    g = torch.Generator(device=CUDA).manual_seed(1)
    gain = torch.logspace(-4, 2, 512, device=CUDA)
    x = (torch.randn(tokens, 3, 512, generator=g, device=CUDA) * gain).to(torch.bfloat16)
    x[0, 1, :128] = 0  # an all-zero block: scale 1
    fused8, fused_scales = fp8_blockwise.quantize_activations_fused(x)
    eager8, eager_scales = fp8_blockwise.quantize_activations(x)
    assert torch.equal(fused_scales, eager_scales)
    assert torch.equal(fused8.view(torch.uint8), eager8.view(torch.uint8))


def test_the_fused_cast_refuses_what_its_kernel_cannot_take():
    with pytest.raises(ValueError, match="contiguous bf16"):
        fp8_blockwise.quantize_activations_fused(torch.zeros(4, 2, 256, device=CUDA))
    with pytest.raises(ValueError, match="power of two"):
        fp8_blockwise.quantize_activations_fused(torch.zeros(4, 2, 384, dtype=torch.bfloat16, device=CUDA))
