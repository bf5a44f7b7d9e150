"""What every calibrator shares: input checks and the running per-group amax.

A calibrator consumes batches of activations ``x (T, G, K)`` (or ``o (T, H, D)`` with
``groups`` given) one at a time — it keeps O(G) state, or a bounded sample, never the
batches — and returns ``global_scale() -> (G,)`` float32 in dequant form (for
``sharing="shared"`` all G values are equal).
"""

from __future__ import annotations

import torch

from nvfp4lab import validation as v
from nvfp4lab.formats import GLOBAL_SCALE_DIVISOR
from nvfp4lab.quantize import global_scale_from_amax, tensor_amax
from nvfp4lab.scale_modes import SHARINGS


def as_grouped(x: torch.Tensor, groups: int | None) -> torch.Tensor:
    """``(T, G, K)`` float view of a batch given as ``(T, G, K)`` or ``(T, H, D)`` (with
    ``groups``); checks dtype and finiteness."""
    v.check_tensor(x, "batch")
    v.check_dtype(x, "batch", v.FLOAT_INPUT_DTYPES)
    v.check_ndim(x, "batch", 3, "(T, G, K) or (T, H, D)")
    if groups is not None and x.shape[1] != groups:
        if x.shape[1] % groups:
            raise ValueError(f"batch has {x.shape[1]} heads, not divisible into groups={groups}")
        x = x.reshape(x.shape[0], groups, -1)
    v.check_block_multiple(x.shape[-1], "batch")
    v.check_finite(x, "batch")
    return x


class Calibrator:
    """Base: tracks the running amax per group. Subclasses add their statistics."""

    def __init__(self, sharing: str = "per_group", groups: int | None = None):
        if sharing not in SHARINGS:
            raise ValueError(f"sharing must be one of {SHARINGS}; got {sharing!r}")
        self.sharing = sharing
        self.groups = groups
        self.amax: torch.Tensor | None = None  # (G,) float32
        self.tokens_seen = 0

    def observe(self, batch: torch.Tensor) -> None:
        x = as_grouped(batch, self.groups)
        if self.groups is None:
            self.groups = x.shape[1]
        elif x.shape[1] != self.groups:
            raise ValueError(f"batch has {x.shape[1]} groups, earlier batches {self.groups}")
        if x.shape[0] == 0:
            return
        amax = tensor_amax(x, per_group=True)
        self.amax = amax if self.amax is None else torch.maximum(self.amax, amax.to(self.amax.device))
        self.tokens_seen += x.shape[0]
        self._observe(x)

    def _observe(self, x: torch.Tensor) -> None:  # statistics beyond the amax
        pass

    def _require_data(self) -> None:
        if self.amax is None:
            raise ValueError(f"{type(self).__name__} has seen no tokens; call observe() first")

    def _merge(self, per_group_amax: torch.Tensor, divisor: float = GLOBAL_SCALE_DIVISOR) -> torch.Tensor:
        if self.sharing == "shared":
            per_group_amax = per_group_amax.max().expand(per_group_amax.shape[0])
        return global_scale_from_amax(per_group_amax * (GLOBAL_SCALE_DIVISOR / divisor)).contiguous()

    def global_scale(self) -> torch.Tensor:
        raise NotImplementedError
