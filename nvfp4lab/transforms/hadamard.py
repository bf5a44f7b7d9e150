"""Block-diagonal Hadamard rotations of a linear layer's contraction dimension K.

Definitions (n and the block size b powers of two, b | K):

    H_1 = [1],   H_2m = [[H_m, H_m], [H_m, -H_m]]          Sylvester, entries ±1
    Ĥ_n = H_n / √n                                          normalized: Ĥ_n Ĥ_nᵀ = I, Ĥ_n = Ĥ_nᵀ
    R   = I_{K/b} ⊗ (diag(σ) Ĥ_b)                           block-diagonal, σ ∈ {±1}^b (default all +1)

``R`` is orthogonal (``R Rᵀ = I``), so for a grouped layer ``z = einsum("tgk,gkn->tgn", x, W)``

    rotate_activations(x) · fold_into_weights(W) = (x R)(Rᵀ W) = x W      exactly in real numbers.

The same R is applied in every block (and so in every head when b ≤ D and b | D): that is
what makes the rotation foldable into a decoder's value projection (see
:func:`fold_into_value_projection`).

Two implementations, tested equal: the reference matrix product (``method="matrix"``,
O(K·b) per row) and the fast Walsh–Hadamard butterfly (``method="fast"``, O(K log b) per
row: log2(b) vectorised stages of ``(a, b) -> (a + b, a − b)``, then one scaling by
``1/√b``, exact when b is a power of four).

Dtypes: bf16, fp16, fp32 and fp64 in; float64 is computed and returned in float64,
everything else in float32 (a rotated bf16 tensor is not rounded back to bf16: cast it
yourself where the deployed kernel would).
"""

from __future__ import annotations

import math

import torch

from nvfp4lab.transforms import _checks as c

METHODS = ("fast", "matrix")


def hadamard_matrix(n: int, *, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The normalized Sylvester Hadamard matrix ``Ĥ_n`` ``(n, n)``: entry ``(i, j)`` is
    ``(−1)^popcount(i & j) / √n``. ``n`` must be a power of two."""
    c.power_of_two(n, "n")
    index = torch.arange(n, device=device)
    bits = index[:, None] & index[None, :]
    parity = torch.zeros_like(bits)
    for shift in range(max(n.bit_length() - 1, 0)):  # log2(n) bit positions, not data
        parity ^= (bits >> shift) & 1
    signs = 1.0 - 2.0 * parity.to(torch.float64)
    return (signs / math.sqrt(n)).to(dtype)


def _signs(signs, block: int, device) -> torch.Tensor | None:
    if signs is None:
        return None
    c.float_tensor(signs, "signs", 1, f"(block={block},)")
    if signs.shape[0] != block:
        raise ValueError(f"signs must have shape ({block},), one per element of a block; got {tuple(signs.shape)}")
    if not bool(((signs == 1) | (signs == -1)).all()):
        raise ValueError("signs must hold only +1 and -1")
    return signs.to(device)


def block_hadamard_matrix(k: int, block: int, signs: torch.Tensor | None = None, *,
                          dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """``R = I_{K/b} ⊗ (diag(σ) Ĥ_b)`` ``(K, K)``: the rotation of :func:`rotate_activations`.

    Args:
        k: K, a multiple of ``block``.
        block: b, a power of two (16 matches an NVFP4 block, 128 an FP8 block, D a head).
        signs: σ ``(b,)`` of ±1 (the same in every block), or ``None`` for all +1.
    """
    c.power_of_two(block, "block")
    c.positive_int(k, "k")
    c.divides(block, k, "block_hadamard_matrix", "K")
    h = hadamard_matrix(block, dtype=torch.float64, device=device)
    sign = _signs(signs, block, device)
    if sign is not None:
        h = sign.to(torch.float64)[:, None] * h
    return torch.kron(torch.eye(k // block, dtype=torch.float64, device=device), h).to(dtype)


def _butterfly(y: torch.Tensor) -> torch.Tensor:
    """``y · Ĥ_n`` along the last dimension of ``y`` (float32/float64, n a power of two): at
    stage h = 1, 2, 4, …, n/2 every pair (i, i + h) with bit h of i clear becomes
    (y_i + y_{i+h}, y_i − y_{i+h}); then × 1/√n."""
    n = y.shape[-1]
    rows = y.reshape(-1, n)
    h = 1
    while h < n:  # log2(n) stages, each one vectorised over every row and pair
        pairs = rows.view(-1, n // (2 * h), 2, h)
        rows = torch.stack((pairs[:, :, 0] + pairs[:, :, 1], pairs[:, :, 0] - pairs[:, :, 1]), dim=2)
        h *= 2
    return (rows * (1.0 / math.sqrt(n))).reshape(y.shape)


def fast_hadamard_transform(x: torch.Tensor) -> torch.Tensor:
    """``x · Ĥ_n`` along the last dimension (n = ``x.shape[-1]``, a power of two) by the
    O(n log n) butterfly. ``x`` (..., n) bf16/fp16/fp32/fp64, finite -> float32 (float64
    for float64)."""
    c.float_tensor(x, "x", min_ndim=1, meaning="(..., n)")
    c.power_of_two(x.shape[-1], "the last dimension of x")
    return _butterfly(x.to(c.compute_dtype(x)))


def _rotate_last(x: torch.Tensor, block: int, signs, method: str) -> torch.Tensor:
    """``x · R`` along the last dimension (checked by the caller)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    dtype = c.compute_dtype(x)
    k = x.shape[-1]
    sign = _signs(signs, block, x.device)
    if method == "matrix":
        return x.to(dtype) @ block_hadamard_matrix(k, block, sign, dtype=dtype, device=x.device)
    blocks = x.to(dtype).reshape(*x.shape[:-1], k // block, block)
    if sign is not None:  # x R = (x diag(σ)) Ĥ, block by block
        blocks = blocks * sign.to(dtype)
    return _butterfly(blocks).reshape(x.shape)


def _check_block(k: int, block: int, name: str, what: str) -> None:
    c.power_of_two(block, "block")
    c.divides(block, k, name, what)


def rotate_activations(x: torch.Tensor, block: int, signs: torch.Tensor | None = None, *,
                       method: str = "fast") -> torch.Tensor:
    """``x · R``: every block of ``block`` consecutive elements of the last dimension times
    ``diag(σ) Ĥ_b``.

    Args:
        x: ``(..., K)`` (e.g. ``(T, G, K)`` or ``(T, H·D)``), bf16/fp16/fp32/fp64, finite.
        block: b, a power of two dividing K.
        signs: σ ``(b,)`` ±1 or ``None``.
        method: ``"fast"`` (butterfly) or ``"matrix"`` (reference).

    Returns:
        ``(..., K)`` float32 (float64 for float64 input).
    """
    c.float_tensor(x, "x", min_ndim=1, meaning="(..., K)")
    _check_block(x.shape[-1], block, "rotate_activations", "K")
    return _rotate_last(x, block, signs, method)


def fold_into_weights(w: torch.Tensor, block: int, signs: torch.Tensor | None = None, *,
                      method: str = "fast") -> torch.Tensor:
    """``Rᵀ · W`` per group along K, so that ``rotate_activations(x) · fold_into_weights(W) = x · W``.

    Args:
        w: ``(G, K, N)`` grouped weights (or any ``(..., K, N)``), bf16/fp16/fp32/fp64, finite.
        block, signs, method: as :func:`rotate_activations` (the same values must be used there).

    Returns:
        ``(..., K, N)`` float32 (float64 for float64 input).
    """
    c.float_tensor(w, "w", min_ndim=2, meaning="(..., K, N)")
    _check_block(w.shape[-2], block, "fold_into_weights", "K (dim -2 of w)")
    # (Rᵀ W)ᵀ = Wᵀ R: rotate the rows of Wᵀ.
    return _rotate_last(w.transpose(-1, -2), block, signs, method).transpose(-1, -2)


def fold_into_output_projection(w_o: torch.Tensor, block: int, signs: torch.Tensor | None = None, *,
                                method: str = "fast") -> torch.Tensor:
    """``W_o · R`` for a decoder's ``o_proj`` weight in ``nn.Linear`` orientation
    ``(hidden, H·D)`` (``y = o W_oᵀ``): then ``(o R)(W_o R)ᵀ = o W_oᵀ``. The grouped view of
    the result is :func:`fold_into_weights` of the grouped view. Returns float32 (float64)."""
    c.float_tensor(w_o, "w_o", 2, "(hidden, heads·head_dim)")
    _check_block(w_o.shape[-1], block, "fold_into_output_projection", "K = heads·head_dim")
    return _rotate_last(w_o, block, signs, method)


def fold_into_value_projection(w_v: torch.Tensor, head_dim: int, block: int | None = None,
                               signs: torch.Tensor | None = None, *, method: str = "fast") -> torch.Tensor:
    """Fold the activation rotation of ``o_proj``'s input into the value projection.

    Per head h, the attention output is ``o_h = P_h V_{kv(h)}`` (``P_h`` the softmax
    probabilities, ``kv(h)`` the KV head h reads under grouped-query attention), and
    ``V_j = X W_{v,j}ᵀ (+ b_{v,j})`` with ``W_{v,j}`` rows ``j·D … (j+1)·D − 1`` of ``w_v``.
    With ``R_D = I_{D/b} ⊗ diag(σ) Ĥ_b`` (the D×D diagonal block of R):

        o_h R_D = P_h (V_{kv(h)} R_D) = P_h X (R_Dᵀ W_{v,kv(h)})ᵀ

    so replacing each head's rows ``W_{v,j}`` by ``R_Dᵀ W_{v,j}`` (and a bias ``b_{v,j}`` by
    ``R_Dᵀ b_{v,j}``) makes the attention output come out rotated, ``o R`` with
    ``R = I_H ⊗ R_D``, at no cost at inference; ``o_proj`` then takes
    :func:`fold_into_output_projection` (or :func:`fold_into_weights` in grouped form).

    GQA caveat: the fold is exact because R applies the *same* ``R_D`` to every head, so the
    query heads sharing a KV head all see the same rotation. A rotation that differs per
    head (e.g. per-head random signs, or a Hadamard block spanning several heads: b > D)
    cannot fold into ``w_v`` (the product ``P_h V`` mixes tokens, not channels, so only a
    per-KV-head right factor commutes with it) and would have to run online. Hence b must
    divide D. The fold also assumes nothing sits between V and ``P·V`` on the channel
    axis (no norm on V, no RoPE on V, as in Llama/Qwen2/Gemma 3).

    Args:
        w_v: ``(kv_heads·D, hidden)`` value-projection weight (``nn.Linear`` orientation), or
            its bias ``(kv_heads·D,)``; bf16/fp16/fp32/fp64, finite.
        head_dim: D.
        block: b, a power of two dividing D; ``None`` means D (one Hadamard per head; D
            must then be a power of two).
        signs: σ ``(b,)`` ±1 or ``None``.

    Returns:
        The folded tensor, same shape, float32 (float64 for float64 input).
    """
    c.float_tensor(w_v, "w_v", min_ndim=1, meaning="(kv_heads·head_dim, hidden) or a bias")
    if w_v.dim() > 2:
        raise ValueError(f"w_v must be (kv_heads·head_dim, hidden) or a bias (kv_heads·head_dim,); "
                         f"got {tuple(w_v.shape)}")
    c.positive_int(head_dim, "head_dim")
    block = head_dim if block is None else block
    c.power_of_two(block, "block")
    if head_dim % block:
        raise ValueError(f"block={block} must divide head_dim={head_dim}: "
                         "a rotation spanning heads does not fold into w_v")
    if w_v.shape[0] % head_dim:
        raise ValueError(f"w_v's first dimension {w_v.shape[0]} is not a multiple of head_dim={head_dim}")
    rows = w_v if w_v.dim() == 2 else w_v[:, None]
    # R_Dᵀ acting on each head's rows = (rowsᵀ R_D)ᵀ: rotate the columns of rowsᵀ, which are
    # consecutive along dim 0 of rows, block by block (blocks never straddle heads as b | D).
    folded = _rotate_last(rows.T, block, signs, method).T
    return folded if w_v.dim() == 2 else folded[:, 0]
