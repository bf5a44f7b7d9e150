"""Swizzled scale layouts: the formula, round trips, torchao's to_blocked, grouped operands."""

import pytest
import torch

from nvfp4lab import layouts, quantize_nvfp4
from nvfp4lab.layouts import round_up, swizzle_scales, swizzled_offset, unswizzle_scales

SHAPES = [(1, 1), (7, 3), (128, 4), (129, 5), (300, 256), (256, 512)]


def random_bytes(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.int32).to(torch.uint8)


@pytest.mark.parametrize("rows, cols", SHAPES)
def test_swizzle_places_every_scale_at_the_formula_offset(rows, cols):
    scales = random_bytes((rows, cols))
    swizzled = swizzle_scales(scales)
    assert swizzled.shape == (round_up(rows, 128), round_up(cols, 4))
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    offset = swizzled_offset(r, c, cols)
    flat = swizzled.flatten()
    assert torch.equal(flat[offset], scales)
    padding = torch.ones_like(flat, dtype=torch.bool)
    padding[offset.flatten()] = False
    assert (flat[padding] == 0).all()


@pytest.mark.parametrize("rows, cols", SHAPES)
def test_unswizzle_inverts_swizzle_for_2d_batched_and_flat_forms(rows, cols):
    scales = random_bytes((3, rows, cols)).view(torch.float8_e4m3fn)
    swizzled = swizzle_scales(scales)
    assert swizzled.dtype == torch.float8_e4m3fn
    assert torch.equal(unswizzle_scales(swizzled, rows, cols).view(torch.uint8), scales.view(torch.uint8))
    flat = swizzled.reshape(3, -1)
    assert torch.equal(unswizzle_scales(flat, rows, cols).view(torch.uint8), scales.view(torch.uint8))
    for g in range(3):  # batched equals one at a time
        assert torch.equal(swizzled[g].view(torch.uint8), swizzle_scales(scales[g]).view(torch.uint8))


@pytest.mark.parametrize("rows, cols", SHAPES)
def test_swizzle_equals_torchao_to_blocked(rows, cols):
    mx_utils = pytest.importorskip("torchao.prototype.mx_formats.utils")
    scales = random_bytes((rows, cols))
    assert torch.equal(swizzle_scales(scales).flatten(), mx_utils.to_blocked(scales).flatten())


def test_unswizzle_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match="must end in"):
        unswizzle_scales(torch.zeros(100, 4, dtype=torch.uint8), 100, 4)
    with pytest.raises(TypeError, match="float8_e4m3fn or uint8"):
        swizzle_scales(torch.zeros(4, 4))


def test_grouped_a_operand_pads_each_group_and_equals_one_big_swizzle():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 130, 64, generator=g).to(torch.bfloat16)
    q = quantize_nvfp4(x)
    mat_a, scale_a, offsets = layouts.grouped_a_operand(q)
    assert mat_a.shape == (3 * 256, 32) and mat_a.dtype == torch.float4_e2m1fn_x2
    assert scale_a.shape == (3 * 256, 4) and scale_a.dtype == torch.float8_e4m3fn
    assert offsets.dtype == torch.int32 and offsets.tolist() == [256, 512, 768]
    rows = mat_a.view(torch.uint8).reshape(3, 256, 32)
    assert torch.equal(rows[:, :130], q.data.view(torch.uint8)) and (rows[:, 130:] == 0).all()
    padded = torch.zeros(3, 256, 4, dtype=torch.uint8)
    padded[:, :130] = q.scales.view(torch.uint8)
    assert torch.equal(scale_a.view(torch.uint8), swizzle_scales(padded.reshape(768, 4)))


def test_grouped_b_operand_is_k_major_with_flat_per_group_scales():
    w = torch.randn(2, 200, 48).to(torch.bfloat16)  # (G, N, K)
    q = quantize_nvfp4(w)
    mat_b, scale_b = layouts.grouped_b_operand(q)
    assert mat_b.shape == (2, 200, 24)
    assert scale_b.shape == (2, 256 * 4)
    assert torch.equal(unswizzle_scales(scale_b, 200, 3).view(torch.uint8), q.scales.view(torch.uint8))
