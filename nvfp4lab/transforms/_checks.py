"""Input checks of the transforms: each raises a one-line message naming the argument.

Shape problems raise ``ValueError``, dtype problems ``TypeError`` (as
:mod:`nvfp4lab.validation`), before any work is done.
"""

from __future__ import annotations

import torch

from nvfp4lab import validation as v

#: The dtypes a transform accepts (float64 too: it is how exactness is tested).
TRANSFORM_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)


def float_tensor(x: object, name: str, ndim: int | None = None, meaning: str = "", *, finite: bool = True,
                 min_ndim: int | None = None) -> torch.Tensor:
    """``x`` checked: a tensor of a :data:`TRANSFORM_DTYPES` dtype, ``ndim`` dimensions
    (or at least ``min_ndim``), finite unless ``finite=False``."""
    v.check_tensor(x, name)
    v.check_dtype(x, name, TRANSFORM_DTYPES)
    if ndim is not None:
        v.check_ndim(x, name, ndim, meaning)
    if min_ndim is not None and x.dim() < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions {meaning}; got shape {tuple(x.shape)}")
    if finite and v.finite_check_allowed(x):
        v.check_finite(x, name)
    return x


def power_of_two(n: object, name: str) -> int:
    """``n`` as an int, checked to be a power of two >= 1 (Sylvester Hadamard sizes)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or n & (n - 1):
        raise ValueError(f"{name} must be a power of two (1, 2, 4, …, 16, …, 128, …); got {n!r}")
    return n


def positive_int(n: object, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive integer; got {n!r}")
    return n


def divides(block: int, k: int, name: str, what: str) -> None:
    if k % block:
        raise ValueError(f"{name}: {what}={k} is not a multiple of the block size {block}")


def block_multiple_of_16(k: int, name: str) -> None:
    v.check_block_multiple(k, name)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; every other float dtype is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32
