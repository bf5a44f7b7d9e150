"""Input checks shared by the public API: each raises a message naming the problem.

Shape and dtype problems raise ``ValueError`` / ``TypeError`` before any work is done.
``check_finite`` synchronises with the device, so hot paths skip it while a CUDA graph
is being captured (see :func:`finite_check_allowed`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

FLOAT_INPUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
BLOCK_SIZE = 16


def check_tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_dtype(x: torch.Tensor, name: str, dtypes: Iterable[torch.dtype]) -> None:
    dtypes = tuple(dtypes)
    if x.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype {allowed}; got {str(x.dtype).replace('torch.', '')}")


def check_ndim(x: torch.Tensor, name: str, ndim: int, meaning: str) -> None:
    if x.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D {meaning}; got shape {tuple(x.shape)}")


def check_shape(x: torch.Tensor, name: str, shape: tuple[int, ...]) -> None:
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {tuple(x.shape)}")


def check_block_multiple(k: int, name: str) -> None:
    if k <= 0 or k % BLOCK_SIZE:
        raise ValueError(
            f"{name}: the contraction dimension K={k} must be a positive multiple of {BLOCK_SIZE}"
            " (one E4M3 scale per 16 elements)"
        )


def check_same_device(tensors: dict[str, torch.Tensor], device: torch.device) -> None:
    for name, t in tensors.items():
        if t.device != device:
            raise ValueError(f"{name} is on {t.device}, expected {device}")


def normalize_device(device) -> torch.device:
    """``torch.device`` with an explicit index for CUDA (``"cuda"`` -> ``cuda:<current>``),
    so that it compares equal to ``tensor.device``."""
    try:
        device = torch.device(device) if device is not None else torch.device("cpu")
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must name a torch device such as 'cpu' or 'cuda'; got {device!r}") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device={str(device)!r} was asked for, but {why}; use device='cpu' "
                             "(or device='cuda' if torch.cuda.is_available() else 'cpu')")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        elif device.index >= torch.cuda.device_count():
            raise ValueError(f"device={str(device)!r} was asked for, but only {torch.cuda.device_count()} "
                             "CUDA device(s) are visible")
    return device


def check_contiguous(x: torch.Tensor, name: str) -> None:
    if not x.is_contiguous():
        raise ValueError(f"{name} must be contiguous (got strides {x.stride()}); call .contiguous()")


def check_writable_folder(folder) -> None:
    """Create ``folder`` if needed and check a file can be written there (ValueError)."""
    from pathlib import Path

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"cannot write to the output folder {folder}: {error}") from error


def finite_check_allowed(x: torch.Tensor) -> bool:
    """False while a CUDA graph is captured on the current stream (a check would sync)."""
    return not (x.is_cuda and torch.cuda.is_current_stream_capturing())


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``x`` has NaN or Inf, saying how many and where the first is."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        count = int(bad.sum())
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{name} has {count} non-finite value(s) (NaN/Inf), first at index {first}")


def check_global_scale(scale: torch.Tensor, name: str) -> None:
    """A global scale must be float32, finite and at least 2^-126 (so 1/scale is finite)."""
    check_dtype(scale, name, (torch.float32,))
    if finite_check_allowed(scale):
        ok = torch.isfinite(scale) & (scale >= 2.0**-126)
        if not bool(ok.all()):
            raise ValueError(
                f"{name} must be finite and >= 2^-126 (a normal positive float32); got {scale.tolist()}"
            )
