"""Block-diagonal Hadamard rotations: the matrices, fast == reference, exact folds into the
grouped weights and into a GQA decoder's value and output projections, bad input."""

import math

import pytest
import torch

from helpers import gqa_attention, gqa_layer
from nvfp4lab.transforms import hadamard as hd


def sylvester(n):
    """Unnormalized Sylvester matrix by the recursion, independently of the library."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    return h


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 32, 128, 256])
def test_hadamard_matrix_is_the_normalized_sylvester_matrix_symmetric_and_orthogonal(n):
    h = hd.hadamard_matrix(n)
    assert h.dtype == torch.float64 and h.shape == (n, n)
    assert torch.allclose(h, sylvester(n) / math.sqrt(n), rtol=0, atol=1e-15)
    assert torch.equal(h, h.T)
    assert torch.allclose(h @ h.T, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-13)


def test_block_hadamard_with_signs_is_orthogonal_and_block_diagonal(rng):
    signs = torch.where(torch.rand(16, generator=rng) < 0.5, -1.0, 1.0)
    r = hd.block_hadamard_matrix(64, 16, signs)
    assert torch.allclose(r @ r.T, torch.eye(64, dtype=torch.float64), rtol=0, atol=1e-14)
    block = signs.double()[:, None] * hd.hadamard_matrix(16)
    for b in range(4):
        assert torch.equal(r[16 * b : 16 * b + 16, 16 * b : 16 * b + 16], block)
    off = r.clone()
    for b in range(4):
        off[16 * b : 16 * b + 16, 16 * b : 16 * b + 16] = 0
    assert not off.any()


@pytest.mark.parametrize("block", [1, 2, 16, 64, 128])
@pytest.mark.parametrize("with_signs", [False, True])
def test_fast_butterfly_equals_the_reference_matrix_product(rng, block, with_signs):
    x = torch.randn(7, 3, 256, generator=rng, dtype=torch.float64)
    signs = torch.where(torch.rand(block, generator=rng) < 0.5, -1.0, 1.0) if with_signs else None
    fast = hd.rotate_activations(x, block, signs)
    matrix = hd.rotate_activations(x, block, signs, method="matrix")
    assert fast.dtype == torch.float64
    assert torch.allclose(fast, matrix, rtol=0, atol=1e-13)
    x32 = x.float()
    fast32 = hd.rotate_activations(x32, block, signs)
    assert torch.allclose(fast32, hd.rotate_activations(x32, block, signs, method="matrix"), rtol=0, atol=1e-5)


def test_fast_hadamard_transform_of_a_long_row_is_the_matrix_product(rng):
    x = torch.randn(3, 1024, generator=rng, dtype=torch.float64)
    assert torch.allclose(hd.fast_hadamard_transform(x), x @ hd.hadamard_matrix(1024), rtol=0, atol=1e-12)
    assert hd.fast_hadamard_transform(x.bfloat16()).dtype == torch.float32


def test_a_spike_rotates_to_a_flat_block_and_norms_are_kept(rng):
    x = torch.zeros(1, 32, dtype=torch.float64)
    x[0, 3] = 8.0
    y = hd.rotate_activations(x, 16)
    assert torch.equal(y[0, :16].abs(), torch.full((16,), 2.0, dtype=torch.float64))  # 8/√16, exact
    assert not y[0, 16:].any()
    z = torch.randn(5, 128, generator=rng, dtype=torch.float64)
    assert torch.allclose(hd.rotate_activations(z, 32).norm(dim=-1), z.norm(dim=-1), rtol=1e-14)


@pytest.mark.parametrize("block", [16, 64, 128])
def test_rotated_activations_times_folded_weights_equal_the_layer(rng, block):
    x = torch.randn(9, 3, 256, generator=rng, dtype=torch.float64)
    w = torch.randn(3, 256, 40, generator=rng, dtype=torch.float64)
    signs = torch.where(torch.rand(block, generator=rng) < 0.5, -1.0, 1.0)
    for s in (None, signs):
        z = torch.einsum("tgk,gkn->tgn", hd.rotate_activations(x, block, s), hd.fold_into_weights(w, block, s))
        reference = torch.einsum("tgk,gkn->tgn", x, w)
        assert torch.allclose(z, reference, rtol=0, atol=1e-12 * reference.abs().max())
    # bf16 operands are computed in float32: the same up to float32 rounding
    x16, w16 = x.bfloat16(), w.bfloat16()
    z32 = torch.einsum("tgk,gkn->tgn", hd.rotate_activations(x16, block), hd.fold_into_weights(w16, block))
    reference = torch.einsum("tgk,gkn->tgn", x.bfloat16().float(), w.bfloat16().float())
    assert z32.dtype == torch.float32
    assert torch.allclose(z32, reference, rtol=0, atol=1e-5 * reference.abs().max())


def test_output_projection_fold_is_the_grouped_fold_in_linear_orientation(rng):
    heads, d, hidden, groups = 4, 32, 48, 2
    w_o = torch.randn(hidden, heads * d, generator=rng, dtype=torch.float64)
    grouped = w_o.T.reshape(groups, heads * d // groups, hidden)  # as models.projection.LayerWeights
    folded = hd.fold_into_output_projection(w_o, 16)
    assert torch.allclose(folded.T.reshape(groups, -1, hidden), hd.fold_into_weights(grouped, 16), rtol=0, atol=1e-14)


@pytest.mark.parametrize("block", [8, 32])
def test_value_projection_fold_makes_gqa_attention_output_come_out_rotated(rng, block):
    heads, kv_heads, d, hidden, seq = 6, 2, 32, 40, 11
    x, w_q, w_k, w_v, b_v, w_o = gqa_layer(rng, heads, kv_heads, d, hidden, seq, qk_scale=8)
    signs = torch.where(torch.rand(block, generator=rng) < 0.5, -1.0, 1.0)

    o = gqa_attention(x, w_q, w_k, w_v, b_v, heads, kv_heads, d)
    folded_v = hd.fold_into_value_projection(w_v, d, block, signs)
    folded_b = hd.fold_into_value_projection(b_v, d, block, signs)
    o_rotated = gqa_attention(x, w_q, w_k, folded_v, folded_b, heads, kv_heads, d)
    assert torch.allclose(o_rotated, hd.rotate_activations(o, block, signs), rtol=0, atol=1e-12)
    # and the whole attention block is unchanged once o_proj takes the fold
    y = o @ w_o.T
    y_folded = o_rotated @ hd.fold_into_output_projection(w_o, block, signs).T
    assert torch.allclose(y_folded, y, rtol=0, atol=1e-11 * y.abs().max())


def test_value_projection_default_block_is_one_hadamard_per_head(rng):
    w_v = torch.randn(2 * 16, 8, generator=rng, dtype=torch.float64)
    per_head = hd.fold_into_value_projection(w_v, 16)
    assert torch.allclose(per_head, hd.fold_into_value_projection(w_v, 16, 16, method="matrix"), rtol=0, atol=1e-14)
    expected = torch.cat([hd.hadamard_matrix(16).T @ w_v[:16], hd.hadamard_matrix(16).T @ w_v[16:]])
    assert torch.allclose(per_head, expected, rtol=0, atol=1e-14)


def test_bad_input_is_rejected_with_a_clear_message():
    x = torch.randn(4, 48)
    with pytest.raises(ValueError, match="power of two"):
        hd.rotate_activations(x, 12)
    with pytest.raises(ValueError, match="power of two"):
        hd.hadamard_matrix(0)
    with pytest.raises(ValueError, match="power of two"):
        hd.rotate_activations(x, True)
    with pytest.raises(ValueError, match="not a multiple of the block size 32"):
        hd.rotate_activations(x, 32)
    with pytest.raises(ValueError, match="power of two"):
        hd.fast_hadamard_transform(torch.randn(3, 6))
    with pytest.raises(TypeError, match="dtype"):
        hd.rotate_activations(torch.ones(2, 16, dtype=torch.int32), 16)
    with pytest.raises(TypeError, match="torch.Tensor"):
        hd.rotate_activations([1.0] * 16, 16)
    bad = x.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        hd.rotate_activations(bad, 16)
    with pytest.raises(ValueError, match="non-finite"):
        hd.fast_hadamard_transform(bad)
    with pytest.raises(ValueError, match="signs must have shape"):
        hd.rotate_activations(x, 16, torch.ones(8))
    with pytest.raises(ValueError, match=r"only \+1 and -1"):
        hd.rotate_activations(x, 16, torch.full((16,), 0.5))
    with pytest.raises(ValueError, match="method"):
        hd.rotate_activations(x, 16, method="slow")
    with pytest.raises(ValueError, match=r"K \(dim -2 of w\)=48"):
        hd.fold_into_weights(torch.randn(2, 48, 8), 32)
    with pytest.raises(ValueError, match="must divide head_dim"):
        hd.fold_into_value_projection(torch.randn(64, 8), 16, 32)
    with pytest.raises(ValueError, match="power of two"):
        hd.fold_into_value_projection(torch.randn(48, 8), 24)  # default block = D = 24
    with pytest.raises(ValueError, match="not a multiple of head_dim"):
        hd.fold_into_value_projection(torch.randn(40, 8), 16)
    with pytest.raises(ValueError, match="w_v must be"):
        hd.fold_into_value_projection(torch.randn(2, 32, 8), 16)
