"""Calibrators for static global activation scales (``nvfp4lab.scale_modes``).

=====================  ============================================  ==================
calibrator             global scale                                  cost
=====================  ============================================  ==================
``MaxCalibrator``      margin · running amax / 2688                  1 pass, O(G)
``HeadroomCalibrator`` headroom · running amax / 2688                1 pass, O(G)
``PercentileCalibrator``  q-th percentile of |x| or block amax / 2688  1 pass, O(G·8960)
``MseCalibrator``      argmin over 49 multipliers of the MSE of x    1 pass + 49 quant.
                       (``target="activations"``) or of z (``"output"``) of a sample
=====================  ============================================  ==================

Every calibrator: ``c.observe(batch)`` for each batch (``(T, G, K)``, or ``(T, H, D)``
with ``groups=G``), then ``c.global_scale() -> (G,)`` float32 (equal values when
``sharing="shared"``). Four-over-six block scales are a quantizer option
(``quantize_nvfp4(..., block_rule="four_over_six")``), not a calibrator.
"""

from nvfp4lab.calibration.base import Calibrator
from nvfp4lab.calibration.max import HeadroomCalibrator, MaxCalibrator
from nvfp4lab.calibration.mse import MseCalibrator
from nvfp4lab.calibration.percentile import PercentileCalibrator

__all__ = ["Calibrator", "HeadroomCalibrator", "MaxCalibrator", "MseCalibrator", "PercentileCalibrator"]
