"""95 % intervals of every model-level number, by a paired bootstrap over held-out windows.

The unit is a **window** of ``seq_len`` consecutive held-out tokens (one sequence of the
model, its own context): positions inside a window share context and are not independent,
windows are taken apart from each other's context, so windows are resampled
(:mod:`nvfp4lab.bootstrap`). Every recipe is evaluated on the same windows, so one resample
serves all recipes and the ratios are paired. Consecutive windows of one text may still share
a topic; the intervals therefore hold for "more text like this one", not for other texts
(the study measures those separately).

:func:`row_intervals` gives, per row of a :class:`~nvfp4lab.models.evaluate.ModelEvaluation`,
the mean KL(bf16 ‖ recipe), perplexity and top-1 agreement with their intervals, the KL ratio
to the best NVFP4 row (the lowest mean KL among rows with the same operands) and to a named
reference row (default the FP8 recipe).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nvfp4lab.bootstrap import Interval, PairedBootstrap

FP8 = "fp8 (1x128 act, 128x128 wt)"
_QUANTITY = {"nll": "window_nll", "kl": "window_kl", "top1": "window_top1"}


@dataclass(frozen=True)
class RowIntervals:
    """One row's numbers with 95 % intervals. ``ratio_to_best``: this row's mean KL over the
    best (lowest mean KL) NVFP4 row's of the same operands (``None`` for baselines);
    ``ratio_to_reference``: over the reference row's (``None`` for the reference itself)."""

    label: str
    kl: Interval
    perplexity: Interval
    top1: Interval
    ratio_to_best: Interval | None
    ratio_to_reference: Interval | None
    best: str | None
    reference: str


def bootstrap(evaluation, quantity: str = "kl") -> PairedBootstrap:
    """The paired bootstrap of one per-window quantity (``"kl"``, ``"nll"``, ``"top1"``)
    over every row of ``evaluation`` (columns in row order)."""
    import torch

    if quantity not in _QUANTITY:
        raise ValueError(f"quantity must be one of {sorted(_QUANTITY)}; got {quantity!r}")
    if not evaluation.window_positions:
        raise ValueError(f"the evaluation of {evaluation.model} kept no per-window sums (recomputed before "
                         "intervals existed?): evaluate it again")
    columns = [getattr(row, _QUANTITY[quantity]) for row in evaluation.rows]
    return PairedBootstrap(torch.tensor(columns, dtype=torch.float64).T, evaluation.window_positions)


def best_rows(evaluation) -> dict[str, int]:
    """Per NVFP4 operands (``"W4A4"``, ``"W16A4"``), the index of the row with the lowest mean KL."""
    best: dict[str, int] = {}
    for i, row in enumerate(evaluation.rows):
        if row.is_nvfp4 and (row.operands not in best or row.kl < evaluation.rows[best[row.operands]].kl):
            best[row.operands] = i
    return best


def row_intervals(evaluation, reference: str = FP8) -> dict[str, RowIntervals]:
    """``{row label: RowIntervals}`` for every row of ``evaluation``."""
    kl, nll, top1 = (bootstrap(evaluation, q) for q in ("kl", "nll", "top1"))
    labels = [row.label for row in evaluation.rows]
    if reference not in labels:
        raise ValueError(f"reference row {reference!r} is not in the evaluation; rows: {labels}")
    ref = labels.index(reference)
    best = best_rows(evaluation)
    out = {}
    for i, row in enumerate(evaluation.rows):
        mean_nll = nll.mean(i)
        b = best.get(row.operands) if row.is_nvfp4 else None
        out[row.label] = RowIntervals(
            label=row.label, kl=kl.mean(i),
            perplexity=Interval(math.exp(mean_nll.value), math.exp(mean_nll.low), math.exp(mean_nll.high)),
            top1=top1.mean(i),
            ratio_to_best=kl.ratio(i, b) if b is not None else None,
            ratio_to_reference=kl.ratio(i, ref) if i != ref and row.recipe != "bf16" else None,
            best=labels[b] if b is not None else None, reference=reference)
    return out


def paired_ratio(evaluation, numerator: str, denominator: str) -> Interval:
    """KL ratio of two rows (labels) of one evaluation, with its 95 % interval."""
    labels = [row.label for row in evaluation.rows]
    for label in (numerator, denominator):
        if label not in labels:
            raise ValueError(f"row {label!r} is not in the evaluation of {evaluation.model}")
    return bootstrap(evaluation).ratio(labels.index(numerator), labels.index(denominator))


def cross_ratio(evaluation, other, label: str) -> Interval:
    """KL of row ``label`` in ``evaluation`` over the same row in ``other``, where both were
    evaluated on the **same** held-out windows (e.g. static scales calibrated on another text
    vs on this one): paired by window."""
    import torch

    if evaluation.window_positions != other.window_positions or evaluation.text != other.text:
        raise ValueError("cross_ratio needs two evaluations on the same held-out windows")
    a = next(r for r in evaluation.rows if r.label == label)
    b = next(r for r in other.rows if r.label == label)
    sums = torch.tensor([a.window_kl, b.window_kl], dtype=torch.float64).T
    return PairedBootstrap(sums, evaluation.window_positions).ratio(0, 1)


def sensitivity_intervals(evaluation) -> list[Interval]:
    """Per layer, the mean KL when only that layer is quantized, with its interval."""
    import torch

    if not evaluation.sensitivity_window_kl:
        return []
    sums = torch.tensor(evaluation.sensitivity_window_kl, dtype=torch.float64).T  # (windows, layers)
    boot = PairedBootstrap(sums, evaluation.window_positions)
    return [boot.mean(layer) for layer in range(sums.shape[1])]
