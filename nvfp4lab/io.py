"""Loading users' tensors: activations ``(T, H, D)`` or ``(T, G, K)`` and weights
``(G, K, N)`` or ``(G·N, K)`` from safetensors files, with clear errors.

Nothing loaded is modified in place; everything returned is a new float32 tensor.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nvfp4lab import validation as v


def _load_tensor(path: str | Path, key: str | None, what: str) -> tuple[torch.Tensor, str]:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} file not found: {path}")
    try:
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises its own types for corrupt files
        raise ValueError(f"{what} file {path} is not a readable safetensors file: {error}") from error
    if key is None:
        if len(tensors) != 1:
            raise ValueError(f"{what} file {path} holds {sorted(tensors)}; name one with its key option")
        key = next(iter(tensors))
    if key not in tensors:
        raise ValueError(f"{what} file {path} has no tensor {key!r}; it holds {sorted(tensors)}")
    tensor = tensors[key]
    if not tensor.is_floating_point():
        raise TypeError(f"{what} {key!r} must be floating point; got {tensor.dtype}")
    v.check_finite(tensor, f"{what} {key!r}")
    return tensor.to(torch.float32), key


def load_activations(path, groups: int, key: str | None = None) -> torch.Tensor:
    """``(T, G, K)`` float32 from a ``(T, H, D)`` or ``(T, G, K)`` tensor (``H`` divisible
    by ``groups``; heads of a group contiguous, as DeepSeek V4's ``wo_a``)."""
    x, key = _load_tensor(path, key, "activations")
    if x.dim() != 3:
        raise ValueError(f"activations {key!r} must be (T, H, D) or (T, G, K); got shape {tuple(x.shape)}")
    if groups <= 0 or x.shape[1] % groups:
        raise ValueError(f"activations {key!r} have {x.shape[1]} heads/groups, not divisible by groups={groups}")
    x = x.reshape(x.shape[0], groups, -1)
    v.check_block_multiple(x.shape[-1], f"activations {key!r}")
    return x


def load_weights(path, groups: int, in_features: int, key: str | None = None) -> torch.Tensor:
    """``(G, K, N)`` float32 from a bmm-form ``(G, K, N)`` or dense ``(G·N, K)`` tensor."""
    w, key = _load_tensor(path, key, "weights")
    if w.dim() == 3 and w.shape[0] == groups and w.shape[1] == in_features:
        return w
    if w.dim() == 2 and w.shape[1] == in_features and w.shape[0] % groups == 0:
        return w.reshape(groups, -1, in_features).transpose(1, 2).contiguous()
    raise ValueError(
        f"weights {key!r} must be (G={groups}, K={in_features}, N) or (G·N, K={in_features}); got {tuple(w.shape)}"
    )
