"""Recipe × mode evaluation: calibrate on one set of activations, evaluate on another.

``evaluate(calibration, held_out, weights)`` returns one :class:`Result` per row:

* baselines ``bf16``, ``fp8`` (when K, N are multiples of 128) and ``w4a16``;
* NVFP4 W4A4, ``dynamic`` scales, shared and per group, with ``max6`` and four-over-six
  block scales;
* NVFP4 W4A4, ``static`` scales from each calibration recipe (``RECIPES``), shared and
  per group.

Each row reports, on the held-out set: SQNR of z against the unquantized layer (float64),
the worst group's SQNR, the fraction of activation elements clipped (their block scale
overflowed: the static scale was too small) and of subnormal block scales.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from nvfp4lab import baselines, metrics
from nvfp4lab.calibration import HeadroomCalibrator, MaxCalibrator, MseCalibrator, PercentileCalibrator
from nvfp4lab.formats import GLOBAL_SCALE_DIVISOR
from nvfp4lab.quantize import FOUR_OVER_SIX_DIVISOR
from nvfp4lab.scale_modes import SHARINGS, ScaleMode


def recipes(weights: torch.Tensor | None):
    """Static calibration recipes: name -> factory(sharing) of a calibrator."""
    table = {
        "max": lambda sharing: MaxCalibrator(sharing),
        "headroom x4": lambda sharing: HeadroomCalibrator(sharing, headroom=4.0),
        "percentile 99.99": lambda sharing: PercentileCalibrator(sharing, percentile=99.99),
        "percentile 99.9 of blocks": lambda sharing: PercentileCalibrator(sharing, percentile=99.9, of="blocks"),
        "mse activations": lambda sharing: MseCalibrator(sharing, target="activations"),
    }
    if weights is not None:
        table["mse output"] = lambda sharing: MseCalibrator(sharing, target="output", weights=weights)
    return table


@dataclass(frozen=True)
class Job:
    """One NVFP4 W4A4 row: its label, scale mode, calibrator factory (``None`` for dynamic
    modes) and block-scale rule (``"max6"`` or ``"four_over_six"``)."""

    label: str
    mode: ScaleMode
    factory: Callable | None
    rule: str

    def calibrate(self, batches: Iterable[torch.Tensor]) -> torch.Tensor | None:
        """The static ``(G,)`` global scales from calibration batches ``(T, G, K)`` (``None`` when dynamic)."""
        if self.factory is None:
            return None
        calibrator = self.factory(self.mode.sharing)
        for batch in batches:
            calibrator.observe(batch)
        static = calibrator.global_scale()
        if self.rule == "four_over_six":
            static = static * (GLOBAL_SCALE_DIVISOR / FOUR_OVER_SIX_DIVISOR)
        return static

    def global_scale(self, x: torch.Tensor, static: torch.Tensor | None) -> torch.Tensor:
        """The ``(G,)`` global scales this row quantizes ``x (T, G, K)`` with."""
        scale = self.mode.global_scale(x, static)
        if self.mode.source == "dynamic" and self.rule == "four_over_six":
            scale = scale * (GLOBAL_SCALE_DIVISOR / FOUR_OVER_SIX_DIVISOR)
        return scale


def jobs(weights: torch.Tensor | None) -> list[Job]:
    """Every NVFP4 W4A4 row: dynamic (max6 and four-over-six) per sharing, each static
    recipe per sharing, and max calibration with four-over-six block scales."""
    rows = [Job("dynamic" if rule == "max6" else "dynamic + four-over-six", ScaleMode(sharing, "dynamic"), None, rule)
            for sharing in SHARINGS for rule in ("max6", "four_over_six")]
    rows += [Job(name, ScaleMode(sharing, "static"), factory, "max6") for name, factory in recipes(weights).items()
             for sharing in SHARINGS]
    rows += [Job("max + four-over-six", ScaleMode(sharing, "static"), recipes(None)["max"], "four_over_six")
             for sharing in SHARINGS]
    return rows


@dataclass
class Result:
    recipe: str
    mode: str
    sqnr_db: float
    worst_group_sqnr_db: float
    clipped_fraction: float
    subnormal_scale_fraction: float


def _result(recipe, mode, reference, z, xq=None, x=None) -> Result:
    stats = metrics.quantization_stats(x, xq) if xq is not None else None
    return Result(
        recipe=recipe,
        mode=mode,
        sqnr_db=metrics.sqnr_db(reference, z),
        worst_group_sqnr_db=float(metrics.sqnr_db_per_group(reference, z).min()),
        clipped_fraction=stats["clipped_elements"] / stats["elements"] if stats else 0.0,
        subnormal_scale_fraction=stats["subnormal_scale_blocks"] / stats["blocks"] if stats else 0.0,
    )


def evaluate(calibration: torch.Tensor, held_out: torch.Tensor, weights: torch.Tensor, *,
             batch_tokens: int = 256, progress: bool = True) -> list[Result]:
    """Evaluate every baseline, mode and recipe. ``calibration`` and ``held_out`` are
    ``(T, G, K)``, ``weights`` ``(G, K, N)``; calibrators see ``calibration`` in batches of
    ``batch_tokens`` (streaming)."""
    x = held_out
    reference = baselines.reference_output(x, weights)
    w_hat = baselines.nvfp4_weights(weights)
    results = [
        _result("bf16", "-", reference, baselines.bf16_output(x, weights)),
        _result("w4a16", "-", reference, baselines.w4a16_output(x, weights, w_hat)),
    ]
    if x.shape[-1] % 128 == 0 and weights.shape[-1] % 128 == 0:
        results.append(_result("fp8 (1x128 act, 128x128 wt)", "-", reference, baselines.fp8_output(x, weights)))

    for job in tqdm(jobs(weights), desc="recipes", disable=not progress):
        static = job.calibrate(calibration[start : start + batch_tokens] for start in range(0, calibration.shape[0], batch_tokens))
        z, xq = baselines.nvfp4_output(x, weights, job.global_scale(x, static), w_hat, block_rule=job.rule)
        results.append(_result(job.label, job.mode.name, reference, z, xq, x))
    return results


def recommend(results: list[Result]) -> tuple[Result, str]:
    """The recipe to deploy: among NVFP4 W4A4 rows with no clipping on held-out data, the
    highest worst-group SQNR; a static row is preferred over a dynamic one within 0.1 dB
    (it needs no amax pass at inference). Returns the row and the reason in words."""
    candidates = [r for r in results if r.mode != "-"]
    clean = [r for r in candidates if r.clipped_fraction == 0.0] or candidates
    best = max(clean, key=lambda r: r.worst_group_sqnr_db)
    static = [r for r in clean if r.mode.endswith("static") and r.worst_group_sqnr_db >= best.worst_group_sqnr_db - 0.1]
    choice = max(static, key=lambda r: r.worst_group_sqnr_db) if static else best
    why = (
        f"highest worst-group SQNR of z on held-out data ({choice.worst_group_sqnr_db:.2f} dB, "
        f"overall {choice.sqnr_db:.2f} dB) with {'no' if choice.clipped_fraction == 0 else 'the least'} clipping"
    )
    if choice is not best:
        why += f"; within 0.1 dB of the best ({best.recipe}, {best.mode}) and static, so no amax pass at inference"
    return choice, why


def as_rows(results: list[Result]) -> list[dict]:
    return [asdict(r) for r in results]


def markdown_table(results: list[Result]) -> str:
    lines = ["| recipe | mode | SQNR of z (dB) | worst group (dB) | clipped | subnormal scales |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.recipe} | {r.mode} | {r.sqnr_db:.2f} | {r.worst_group_sqnr_db:.2f} | "
                     f"{r.clipped_fraction:.2e} | {r.subnormal_scale_fraction:.2%} |")
    return "\n".join(lines)
