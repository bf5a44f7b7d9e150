"""Max and headroom calibrators.

* ``MaxCalibrator(margin=1)``: ``gs = margin · amax / 2688`` with ``amax`` the running max
  of |x| over every observed token (per group, or over all groups when shared). Cost:
  one pass, O(G) state. ModelOpt's default ``max`` calibrator, with a margin option.
* ``HeadroomCalibrator(headroom=4)``: the max calibrator with ``margin = headroom``: room
  for outliers up to ``headroom ×`` the calibrated max before anything clips, paid for by
  shifting every block scale down by ``log2(headroom)`` binades (harmless while block
  scales stay normal: E4M3 spans 2^-6..448, a factor 28672; see
  ``metrics.quantization_stats``' subnormal count). After ModelOpt's
  ``NVFP4ActHeadroomCalibrator`` argument that plain max leaves no headroom.
"""

from __future__ import annotations

import torch

from nvfp4lab.calibration.base import Calibrator


class MaxCalibrator(Calibrator):
    def __init__(self, sharing: str = "per_group", margin: float = 1.0, groups: int | None = None):
        super().__init__(sharing, groups)
        if not margin > 0:
            raise ValueError(f"margin must be positive; got {margin}")
        self.margin = float(margin)

    def global_scale(self) -> torch.Tensor:
        self._require_data()
        return self._merge(self.amax * self.margin)


class HeadroomCalibrator(MaxCalibrator):
    def __init__(self, sharing: str = "per_group", headroom: float = 4.0, groups: int | None = None):
        if not headroom >= 1:
            raise ValueError(f"headroom must be >= 1; got {headroom}")
        super().__init__(sharing, margin=headroom, groups=groups)
        self.headroom = float(headroom)
