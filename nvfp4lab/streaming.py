"""Walking a large ``(T, ...)`` tensor in token chunks, so that no pass over it needs
more than one chunk's worth of temporaries.

``token_chunks(x, max_elements)`` yields views ``x[start : start + n]`` with
``n = max(1, max_elements // (elements per token))``; the helpers below reduce over the
chunks. Everything is exact (max and all are order-independent).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

#: Elements of one chunk: 2^22 (16 MiB as float32, 32 MiB as float64 temporaries).
CHUNK_ELEMENTS = 1 << 22


def tokens_per_chunk(per_token: int, max_elements: int = CHUNK_ELEMENTS) -> int:
    """Tokens in a chunk when each token holds ``per_token`` elements (at least 1)."""
    if max_elements <= 0:
        raise ValueError(f"max_elements must be positive; got {max_elements}")
    return max(1, max_elements // max(1, per_token))


def token_chunks(x: torch.Tensor, max_elements: int = CHUNK_ELEMENTS, per_token: int | None = None
                 ) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, x[start : start + n])`` over the first dimension of ``x``; ``per_token``
    (default: the elements of one ``x[t]``) sets ``n`` when the work per token is larger
    than the token (e.g. an output wider than the input)."""
    step = tokens_per_chunk(per_token if per_token is not None else x[0:1].numel(), max_elements)
    for start in range(0, x.shape[0], step):
        yield start, x[start : start + step]


def group_amax(x: torch.Tensor, max_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """``(G,)`` float32 ``max |x[:, g]|`` of ``x (T, G, K)`` (zeros when ``T = 0``)."""
    amax = torch.zeros(x.shape[1], dtype=torch.float32, device=x.device)
    for _, chunk in token_chunks(x, max_elements):
        amax = torch.maximum(amax, chunk.detach().abs().amax(dim=(0, 2)).to(torch.float32))
    return amax


def check_finite(x: torch.Tensor, name: str, max_elements: int = CHUNK_ELEMENTS) -> None:
    """Raise ``ValueError`` naming the first NaN/Inf of ``x`` (chunk by chunk)."""
    for start, chunk in token_chunks(x, max_elements):
        bad = ~torch.isfinite(chunk)
        if bool(bad.any()):
            first = [int(i) for i in bad.nonzero()[0]]
            first[0] += start
            raise ValueError(f"{name} has non-finite values (NaN/Inf), the first at index {tuple(first)}")
