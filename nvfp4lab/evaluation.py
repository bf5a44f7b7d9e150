"""Recipe × mode evaluation: calibrate on one set of activations, evaluate on another.

``evaluate(calibration, held_out, weights)`` returns one :class:`Result` per row:

* baselines ``bf16``, ``w4a16`` and ``fp8`` (when K, N are multiples of 128);
* NVFP4 W4A4, ``dynamic`` scales, shared and per group, with ``max6`` and four-over-six
  block scales (the dynamic scale is the held-out set's amax: one forward over it);
* NVFP4 W4A4, ``static`` scales from each calibration recipe (``RECIPES``), shared and
  per group.

Each row reports, on the held-out set: SQNR of z against the unquantized layer (float64),
the worst group's SQNR, the fraction of activation elements clipped (their block scale
overflowed: the static scale was too small) and of subnormal block scales.

Both sets are streamed in token chunks (``nvfp4lab.streaming``): calibrators observe
chunks, and the evaluation sums each group's signal ``Σ z_ref²`` and noise
``Σ (z_ref − z)²`` (float64) chunk by chunk, so memory is bounded by the inputs plus one
chunk's temporaries, whatever T. Every row is token-separable once its global scale is
fixed, so the result equals a single pass up to float64 summation order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from nvfp4lab import baselines, metrics, streaming
from nvfp4lab.calibration import HeadroomCalibrator, MaxCalibrator, MseCalibrator, PercentileCalibrator
from nvfp4lab.quantize import FOUR_OVER_SIX_SCALE_FACTOR, dequantize_nvfp4, global_scale_from_amax, quantize_nvfp4
from nvfp4lab.scale_modes import SHARINGS, ScaleMode

#: Within this many dB of the best row, a static row is preferred (see :func:`recommend`).
STATIC_PREFERENCE_DB = 0.1
RULE = (
    "among the NVFP4 W4A4 rows that clip nothing on the held-out tokens, the highest worst-group "
    f"SQNR of z wins, except that a static row within {STATIC_PREFERENCE_DB} dB of the best is "
    "preferred (a static scale needs no amax pass at inference)"
)


def recipes(weights: torch.Tensor | None, mse_sample_tokens: int = 2048):
    """Static calibration recipes: name -> factory(sharing) of a calibrator.
    ``mse_sample_tokens`` bounds the MSE searches' sample (``(S, G, K)`` float32)."""
    table = {
        "max": lambda sharing: MaxCalibrator(sharing),
        "headroom x4": lambda sharing: HeadroomCalibrator(sharing, headroom=4.0),
        "percentile 99.99": lambda sharing: PercentileCalibrator(sharing, percentile=99.99),
        "percentile 99.9 of blocks": lambda sharing: PercentileCalibrator(sharing, percentile=99.9, of="blocks"),
        "mse activations": lambda sharing: MseCalibrator(sharing, target="activations", sample_tokens=mse_sample_tokens),
    }
    if weights is not None:
        table["mse output"] = lambda sharing: MseCalibrator(sharing, target="output", weights=weights,
                                                            sample_tokens=mse_sample_tokens)
    return table


@dataclass(frozen=True)
class Job:
    """One NVFP4 W4A4 row: its label, scale mode, calibrator factory (``None`` for dynamic
    modes) and block-scale rule (``"max6"`` or ``"four_over_six"``)."""

    label: str
    mode: ScaleMode
    factory: Callable | None
    rule: str

    def calibrator(self):
        """A fresh calibrator for this (static) row."""
        return self.factory(self.mode.sharing)

    @property
    def scale_factor(self) -> float:
        """What the block rule multiplies a max-6 global scale by (1, or 2688/1536)."""
        return FOUR_OVER_SIX_SCALE_FACTOR if self.rule == "four_over_six" else 1.0

    def static_scale(self, calibrator) -> torch.Tensor:
        """The static ``(G,)`` global scales from a calibrator that has seen the calibration
        tokens (× :attr:`scale_factor`)."""
        return calibrator.global_scale() * self.scale_factor

    def calibrate(self, batches: Iterable[torch.Tensor]) -> torch.Tensor | None:
        """The static ``(G,)`` global scales from calibration batches ``(T, G, K)`` (``None`` when dynamic)."""
        if self.factory is None:
            return None
        calibrator = self.calibrator()
        for batch in batches:
            calibrator.observe(batch)
        return self.static_scale(calibrator)

    def global_scale(self, x: torch.Tensor, static: torch.Tensor | None) -> torch.Tensor:
        """The ``(G,)`` global scales this row quantizes ``x (T, G, K)`` with."""
        scale = self.mode.global_scale(x, static)
        return scale * self.scale_factor if self.mode.source == "dynamic" else scale


def jobs(weights: torch.Tensor | None, mse_sample_tokens: int = 2048) -> list[Job]:
    """Every NVFP4 W4A4 row, in table order: dynamic (max6 and four-over-six) per sharing,
    each static recipe per sharing, and max calibration with four-over-six block scales."""
    rows = [Job("dynamic" if rule == "max6" else "dynamic + four-over-six", ScaleMode(sharing, "dynamic"), None, rule)
            for sharing in SHARINGS for rule in ("max6", "four_over_six")]
    rows += [Job(name, ScaleMode(sharing, "static"), factory, "max6")
             for name, factory in recipes(weights, mse_sample_tokens).items() for sharing in SHARINGS]
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


@dataclass
class _Row:
    """One row's running sums over held-out chunks."""

    recipe: str
    mode: str
    scale: torch.Tensor | None = None  # (G,) activation global scales (NVFP4 W4A4 rows)
    block_rule: str = "max6"
    noise: torch.Tensor | float = 0.0  # (G,) float64 Σ (z_ref - z)²
    counts: dict = field(default_factory=lambda: dict.fromkeys(
        ("clipped_elements", "elements", "subnormal_scale_blocks", "blocks"), 0))

    def result(self, signal: torch.Tensor) -> Result:
        noise = self.noise.cpu()
        total = float(noise.sum())
        c = self.counts
        return Result(
            recipe=self.recipe,
            mode=self.mode,
            sqnr_db=10.0 * float(torch.log10(signal.sum() / total)) if total > 0 else float("inf"),
            worst_group_sqnr_db=float((10.0 * torch.log10(signal / noise)).min()),
            clipped_fraction=c["clipped_elements"] / c["elements"] if c["elements"] else 0.0,
            subnormal_scale_fraction=c["subnormal_scale_blocks"] / c["blocks"] if c["blocks"] else 0.0,
        )


def _noise(reference: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return (reference - z).square().sum(dim=(0, 2))


def _static_scales(calibration, static_jobs, device, batch_tokens, progress):
    """One streaming pass over ``calibration`` feeding every static row's calibrator;
    returns ``{job: (G,) scale}``."""
    calibrators = {job: job.calibrator() for job in static_jobs}
    starts = range(0, calibration.shape[0], batch_tokens)
    for start in tqdm(starts, desc="calibrate", unit="chunk", disable=not progress):
        chunk = calibration[start : start + batch_tokens].to(device, torch.float32)
        for calibrator in calibrators.values():
            calibrator.observe(chunk)
    return {job: job.static_scale(c)
            for job, c in tqdm(calibrators.items(), desc="static scales", disable=not progress)}


def evaluate(calibration: torch.Tensor, held_out: torch.Tensor, weights: torch.Tensor, *,
             batch_tokens: int = 256, progress: bool = True, device=None,
             chunk_elements: int = streaming.CHUNK_ELEMENTS, mse_sample_tokens: int = 2048) -> list[Result]:
    """Evaluate every baseline, mode and recipe.

    Args:
        calibration, held_out: ``(T, G, K)`` bf16/fp16/fp32 (any device; read in chunks).
        weights: ``(G, K, N)`` float.
        batch_tokens: tokens per calibration chunk (calibrators stream over them).
        device: where the work runs (default: ``held_out``'s device); chunks move there.
        chunk_elements: held-out tokens per evaluation chunk are
            ``chunk_elements // (G · max(K, N))``.
        mse_sample_tokens: the MSE calibrators' token sample.
    """
    if calibration.shape[0] == 0 or held_out.shape[0] == 0:
        raise ValueError(f"calibration {tuple(calibration.shape)} and held-out {tuple(held_out.shape)} "
                         "activations both need tokens")
    device = torch.device(device) if device is not None else held_out.device
    w = weights.to(device, torch.float32)
    groups = held_out.shape[1]
    # Peak memory: calibration first (the MSE searches' temporaries are freed before the
    # evaluation's float64 weights exist), then the quantized weights (large temporaries),
    # then the plain conversions.
    nvfp4_jobs = jobs(w, mse_sample_tokens)
    static_jobs = [job for job in nvfp4_jobs if job.factory is not None]
    static = _static_scales(calibration, static_jobs, device, batch_tokens, progress)
    w_hat = baselines.nvfp4_weights(w)
    w_fp8 = baselines.fp8_weights(w) if held_out.shape[-1] % 128 == 0 and w.shape[-1] % 128 == 0 else None
    w64 = w.double()
    w_bf16 = w.to(torch.bfloat16).double()

    amax = streaming.group_amax(held_out, chunk_elements).to(device)
    dynamic = {"per_group": global_scale_from_amax(amax), "shared": global_scale_from_amax(amax.max()).expand(groups)}
    empty = held_out[:0].to(device, torch.float32)

    rows = [_Row("bf16", "-"), _Row("w4a16", "-")] + ([_Row("fp8 (1x128 act, 128x128 wt)", "-")] if w_fp8 is not None else [])
    for job in nvfp4_jobs:
        if job.factory is None:  # dynamic: from the whole held-out set's amax
            scale = dynamic[job.mode.sharing] * job.scale_factor
        else:
            scale = job.mode.global_scale(empty, static[job].to(device))
        rows.append(_Row(job.label, job.mode.name, scale.contiguous(), job.rule))

    signal = torch.zeros(groups, dtype=torch.float64, device=device)
    per_token = groups * max(held_out.shape[-1], w.shape[-1])
    chunks = list(streaming.token_chunks(held_out, chunk_elements, per_token))
    for _, chunk in tqdm(chunks, desc="evaluate", unit="chunk", disable=not progress):
        x = chunk.to(device, torch.float32)
        reference = baselines.reference_output(x, w64)
        signal += reference.square().sum(dim=(0, 2))
        for row in rows:
            xq = None
            if row.recipe == "bf16":
                z = baselines.grouped_matmul(x.to(torch.bfloat16), w_bf16)
            elif row.recipe == "w4a16":
                z = baselines.grouped_matmul(x.to(torch.bfloat16), w_hat)
            elif row.scale is None:
                z = baselines.grouped_matmul(baselines.fp8_activations(x), w_fp8)
            else:
                xq = quantize_nvfp4(x, row.scale, block_rule=row.block_rule, check_finite=False)
                z = baselines.grouped_matmul(dequantize_nvfp4(xq), w_hat)
            row.noise = row.noise + _noise(reference, z)
            if xq is not None:
                stats = metrics.quantization_stats(x, xq)
                for key in row.counts:
                    row.counts[key] += stats[key]
    signal = signal.cpu()
    return [row.result(signal) for row in rows]


def competing_rows(results: list[Result], label=lambda r: f"{r.recipe} | {r.mode}") -> tuple[list[Result], bool]:
    """The NVFP4 W4A4 rows that compete for the recommendation: those that clip nothing on the
    held-out tokens, or all of them if every one clips (then the flag is False). A row whose
    worst-group SQNR is NaN is refused by name (``label(row)``), as is an empty table."""
    candidates = [r for r in results if r.mode != "-"]
    if not candidates:
        raise ValueError("no NVFP4 W4A4 rows to recommend from")
    undefined = [label(r) for r in candidates if r.worst_group_sqnr_db != r.worst_group_sqnr_db]
    if undefined:
        raise ValueError(f"the SQNR of {undefined} is undefined (NaN): is a group's output all zero?")
    clean = [r for r in candidates if r.clipped_fraction == 0.0]
    return clean or candidates, bool(clean)


def prefer_static(rows: list[Result]) -> tuple[Result, Result]:
    """``(best, choice)`` among ``rows``: the highest worst-group SQNR, and the row to deploy —
    the best static row when it is within :data:`STATIC_PREFERENCE_DB` of the best, else the best."""
    best = max(rows, key=lambda r: r.worst_group_sqnr_db)
    static = [r for r in rows if r.mode.endswith("static")
              and r.worst_group_sqnr_db >= best.worst_group_sqnr_db - STATIC_PREFERENCE_DB]
    return best, (max(static, key=lambda r: r.worst_group_sqnr_db) if static else best)


def recommend(results: list[Result]) -> tuple[Result, str]:
    """The recipe to deploy, by :data:`RULE`: among NVFP4 W4A4 rows with no clipping on
    held-out data (all rows if every one clips), the highest worst-group SQNR; a static
    row is preferred over a dynamic one within ``STATIC_PREFERENCE_DB`` (it needs no
    amax pass at inference). Returns the row and the reason in words, the rule first."""
    pool, clean = competing_rows(results)
    best, choice = prefer_static(pool)
    return choice, explain_choice(RULE, clean, choice, best, lambda r: f"{r.recipe}, {r.mode}")


def explain_choice(rule: str, clean: bool, choice: Result, best: Result, label, cost: str = "") -> str:
    """The reason for a recommendation in words: the rule, whether every row clipped (``clean``
    from :func:`competing_rows`), the chosen row (``label(row)``; ``cost``, when given, named
    after it) and, when :func:`prefer_static` chose a static row over a better dynamic one, the
    best row (of its cost, when given) and the gap."""
    why = f"Rule: {rule}. "
    if not clean:
        why += "Every row clips on the held-out tokens, so all of them compete. "
    why += (f"Chosen: {label(choice)}{f' ({cost})' if cost else ''}: worst group {choice.worst_group_sqnr_db:.2f} dB, "
            f"overall {choice.sqnr_db:.2f} dB, clipped {choice.clipped_fraction:.2e}")
    if choice is not best:
        why += (f"; the best row{' of its cost' if cost else ''} is {label(best)} at {best.worst_group_sqnr_db:.2f} dB, "
                f"{best.worst_group_sqnr_db - choice.worst_group_sqnr_db:.2f} dB higher, but not static")
    return why


def as_rows(results: list[Result]) -> list[dict]:
    return [asdict(r) for r in results]


def markdown_table(results: list[Result], chosen: Result | None = None) -> str:
    """The rows as a markdown table; ``chosen`` (e.g. :func:`recommend`'s row) is marked
    with ``◀ recommended`` in the last column."""
    lines = ["| recipe | mode | SQNR of z (dB) | worst group (dB) | clipped | subnormal scales | |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        mark = "◀ recommended" if r is chosen else ""
        lines.append(f"| {r.recipe} | {r.mode} | {r.sqnr_db:.2f} | {r.worst_group_sqnr_db:.2f} | "
                     f"{r.clipped_fraction:.2e} | {r.subnormal_scale_fraction:.2%} | {mark} |")
    return "\n".join(lines)
