"""Global activation-scale modes: who shares a global scale, and where it comes from.

A mode is ``(sharing, source)``:

* sharing ``"shared"``: one global scale for all G groups (the original sketch, and what
  FlashInfer-backed MoE layers in vLLM do); ``"per_group"``: one per group;
* source ``"static"``: calibrated once (``nvfp4lab.calibration``) and fixed at inference;
  ``"dynamic"``: recomputed from every input as ``max(amax/2688, 2^-126)`` (on the GPU by
  ``kernels.amax`` without a host sync).

``ScaleMode.global_scale(x, static_scale)`` returns the ``(G,)`` float32 scales a forward
uses for ``x (T, G, K)``; ``quantize_nvfp4(x, mode.global_scale(x, s))`` and
``Nvfp4GroupedLinear(activation_scale=mode.sharing, activation_scale_source=mode.source)``
are the same numerics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nvfp4lab import validation as v
from nvfp4lab.quantize import dynamic_global_scale

SHARINGS = ("shared", "per_group")
SOURCES = ("static", "dynamic")


@dataclass(frozen=True)
class ScaleMode:
    sharing: str
    source: str

    def __post_init__(self):
        if self.sharing not in SHARINGS:
            raise ValueError(f"sharing must be one of {SHARINGS}; got {self.sharing!r}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}; got {self.source!r}")

    @property
    def name(self) -> str:
        return f"{self.sharing} {self.source}"

    def global_scale(self, x: torch.Tensor, static_scale: torch.Tensor | None = None) -> torch.Tensor:
        """The ``(G,)`` float32 global scales for ``x (T, G, K)``.

        Static modes return ``static_scale`` (``(G,)``; a shared mode needs equal values,
        and gets the max if they differ, as ModelOpt and vLLM merge input scales);
        dynamic modes compute them from ``x``.
        """
        v.check_ndim(x, "x", 3, "(T, G, K)")
        groups = x.shape[1]
        if self.source == "dynamic":
            if self.sharing == "per_group":
                return dynamic_global_scale(x, per_group=True)
            return dynamic_global_scale(x).expand(groups).contiguous()
        if static_scale is None:
            raise ValueError(f"mode {self.name!r} needs a calibrated static_scale")
        static_scale = torch.as_tensor(static_scale, dtype=torch.float32, device=x.device)
        if static_scale.dim() == 0:
            static_scale = static_scale.expand(groups)
        v.check_shape(static_scale, "static_scale", (groups,))
        if self.sharing == "shared":
            static_scale = static_scale.max().expand(groups)
        return static_scale.contiguous()


ALL_MODES = tuple(ScaleMode(sharing, source) for source in SOURCES for sharing in SHARINGS)
