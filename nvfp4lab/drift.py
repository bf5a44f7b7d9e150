"""Robustness of static global scales to drift between calibration and inference.

``drift_scenarios(x)`` derives evaluation sets from held-out activations ``x (T, G, K)``:
the same distribution, scaled ×4 and ×1/4, with 1 % new outlier tokens (×16), and with
one group's magnitude ×8. ``drift_report`` calibrates once (a recipe and a sharing) and
reports, per scenario and per group, the SQNR of z and the fraction of clipped
activation elements.
"""

from __future__ import annotations

import torch

from nvfp4lab import baselines, metrics
from nvfp4lab.quantize import quantize_nvfp4
from nvfp4lab.scale_modes import ScaleMode


def drift_scenarios(x: torch.Tensor, seed: int = 0, drifted_group: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    outliers = x.clone()
    chosen = torch.rand(x.shape[0], generator=g) < 0.01
    chosen[0] = True  # at least one new outlier token
    outliers[chosen] *= 16
    group_up = x.clone()
    group_up[:, drifted_group] *= 8
    return {
        "same distribution": x,
        "scaled x4": x * 4,
        "scaled x1/4": x / 4,
        "1% outlier tokens x16": outliers,
        f"group {drifted_group} x8": group_up,
    }


def drift_report(calibrator, calibration: torch.Tensor, held_out: torch.Tensor, weights: torch.Tensor) -> list[dict]:
    """Calibrate ``calibrator`` on ``calibration`` and evaluate every drift scenario of
    ``held_out``; rows of {scenario, group, sqnr_db, clipped_fraction}."""
    calibrator.observe(calibration)
    static = calibrator.global_scale()
    mode = ScaleMode(calibrator.sharing, "static")
    w_hat = baselines.nvfp4_weights(weights)
    rows = []
    for name, x in drift_scenarios(held_out).items():
        scale = mode.global_scale(x, static)
        z, _ = baselines.nvfp4_output(x, weights, scale, w_hat)
        sqnr = metrics.sqnr_db_per_group(baselines.reference_output(x, weights), z)
        clipped = metrics.clipped_fraction_per_group(x, quantize_nvfp4(x, scale, check_finite=False))
        for group in range(x.shape[1]):
            rows.append({"scenario": name, "group": group, "sqnr_db": float(sqnr[group]),
                         "clipped_fraction": float(clipped[group])})
    return rows
