"""The benchmark's FP8 blockwise baseline quantizes exactly like the study's FP8 recipe
(``baselines.fp8_activations`` / ``fp8_weights``), in the layouts cuBLAS's blockwise
``_scaled_mm`` expects. (The GEMM itself runs on the GPU: tests/gpu.)"""

import pytest
import torch
from helpers import heavy_tailed

from nvfp4lab import baselines, fp8_blockwise


def test_activations_equal_the_study_recipe_and_have_power_of_two_scales():
    x = heavy_tailed((5, 3, 512), torch.Generator().manual_seed(1)).to(torch.bfloat16)
    x[1, 2, 128:256] = 0  # an all-zero block gets scale 1
    x8, scales = fp8_blockwise.quantize_activations(x)
    assert x8.shape == (8, 3, 512) and x8.dtype == torch.float8_e4m3fn, "T padded to a multiple of 4"
    assert scales.shape == (3, 4, 8) and scales.is_contiguous()
    assert not x8[5:].float().any() and torch.all(scales[:, :, 5:] == 1)
    mantissa, _ = torch.frexp(scales)
    assert torch.all(mantissa == 0.5), "decode scales are powers of two"
    assert scales[2, 1, 1] == 1.0
    assert torch.equal(fp8_blockwise.dequantize(x8, scales, activations=True)[:5], baselines.fp8_activations(x))


def test_weights_equal_the_study_recipe():
    w_nk = heavy_tailed((2, 256, 512), torch.Generator().manual_seed(2)).to(torch.bfloat16)  # (G, N, K)
    w8, scales = fp8_blockwise.quantize_weights(w_nk)
    assert w8.shape == (2, 256, 512) and scales.shape == (2, 2, 4)
    want = baselines.fp8_weights(w_nk.transpose(1, 2)).transpose(1, 2)  # the study's (G, K, N) recipe
    assert torch.equal(fp8_blockwise.dequantize(w8, scales, activations=False), want)


@pytest.mark.parametrize("shape, message",
                         [((2, 1, 100), "K"), ((1, 200, 512), "N and K"), ((1, 128, 384), "multiple of 4")])
def test_shapes_cublas_cannot_take_are_refused(shape, message):
    with pytest.raises(ValueError, match=message):
        if shape[1] == 1:
            fp8_blockwise.quantize_activations(torch.zeros(shape))
        else:
            fp8_blockwise.quantize_weights(torch.zeros(shape))
