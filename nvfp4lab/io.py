"""Loading users' tensors: activations ``(T, H, D)`` or ``(T, G, K)`` and weights
``(G, K, N)`` or ``(G·N, K)`` from safetensors files, with clear errors.

Every check runs here, before any expensive work, and each failure is a ``ValueError``
or ``TypeError`` with a one-line message naming the file, the tensor and the problem.
Activations keep their stored dtype when it is bf16, fp16 or fp32 (a V4-Flash dump of
268 M bf16 elements stays 0.5 GB; consumers convert token chunks to float32); other
floating dtypes become float32. Weights are returned as float32. Nothing loaded is
modified in place.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nvfp4lab import streaming
from nvfp4lab import validation as v


def _load_tensor(path: str | Path, key: str | None, what: str) -> tuple[torch.Tensor, str]:
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} path {path} is a folder; give the safetensors file inside it")
    if not path.is_file():
        raise ValueError(f"{what} file not found: {path} (relative paths start from {Path.cwd()})")
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
    if tensor.dtype not in v.FLOAT_INPUT_DTYPES:
        tensor = tensor.to(torch.float32)
    if tensor.dim() >= 1 and 0 in tensor.shape[1:]:
        raise ValueError(f"{what} {key!r} has an empty dimension: shape {tuple(tensor.shape)}")
    if tensor.dim() >= 1 and tensor.numel():
        streaming.check_finite(tensor, f"{what} {key!r}")
    return tensor, key


def load_activations(path, groups: int, key: str | None = None) -> torch.Tensor:
    """``(T, G, K)`` (bf16, fp16 or fp32, as stored) from a ``(T, H, D)`` or ``(T, G, K)``
    tensor (``H`` divisible by ``groups``; heads of a group contiguous, as DeepSeek V4's
    ``wo_a``). Rejects an empty or all-zero tensor."""
    x, key = _load_tensor(path, key, "activations")
    if x.dim() != 3:
        raise ValueError(f"activations {key!r} must be 3-D (T, H, D) or (T, G, K); got shape {tuple(x.shape)}")
    tokens, heads, head_dim = x.shape
    if groups <= 0 or heads % groups:
        raise ValueError(f"activations {key!r} have {heads} heads/groups (shape {tuple(x.shape)}), "
                         f"not divisible by groups={groups}")
    if tokens == 0:
        raise ValueError(f"activations {key!r} have no tokens: shape {tuple(x.shape)}")
    x = x.reshape(tokens, groups, heads // groups * head_dim)
    v.check_block_multiple(x.shape[-1], f"activations {key!r}")
    if not bool(streaming.group_amax(x).gt(0).any()):
        raise ValueError(f"activations {key!r} are all zero: there is nothing to calibrate")
    return x


def load_weights(path, groups: int, in_features: int, key: str | None = None) -> torch.Tensor:
    """``(G, K, N)`` float32 from a bmm-form ``(G, K, N)`` or dense ``(G·N, K)`` tensor.
    Rejects a group whose weights are all zero (its output, and its SQNR, would be 0/0)."""
    w, key = _load_tensor(path, key, "weights")
    if w.dim() == 3 and w.shape[0] == groups and w.shape[1] == in_features:
        w = w.to(torch.float32)
    elif w.dim() == 2 and w.shape[1] == in_features and w.shape[0] % groups == 0:
        w = w.to(torch.float32).reshape(groups, -1, in_features).transpose(1, 2).contiguous()
    else:
        raise ValueError(
            f"weights {key!r} must be (G={groups}, K={in_features}, N) or (G·N, K={in_features}); got {tuple(w.shape)}"
        )
    zero = (w.abs().amax(dim=(1, 2)) == 0).nonzero().flatten().tolist()
    if zero:
        raise ValueError(f"weights {key!r} of group(s) {zero} are all zero: their output has no signal to measure")
    return w
