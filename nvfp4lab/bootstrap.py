"""Paired bootstrap intervals over independent units (windows or documents of text).

Every model-level number of nvfp4lab is a mean over token positions, and the positions of
one unit (a window of consecutive tokens) are not independent of each other: they share
context. The units are resampled instead. Each recipe ``r`` contributes, per unit ``u``, the
sum of its per-position values ``S[u, r]`` over the unit's ``n[u]`` positions; every recipe
is evaluated on the **same** positions, so comparisons are paired: one resample of the units
is applied to all recipes at once.

For a resample with unit multiplicities ``c[b, u]`` (multinomial, ``Σ_u c = U``):

* mean of recipe r: ``m[b, r] = Σ_u c[b,u] S[u,r] / Σ_u c[b,u] n[u]``;
* ratio of two recipes' means: ``m[b, r] / m[b, s] = Σ_u c S[u,r] / Σ_u c S[u,s]`` (the
  position counts cancel).

The 95 % interval is the percentile interval (2.5 %, 97.5 %) of ``B`` resamples drawn from a
fixed seed, so a recomputation on the same sums gives the same interval. ``B = 4000`` puts the
Monte-Carlo error of each end at a few tenths of a percent of the interval's width.

:func:`tokens_to_resolve` turns a measured ratio and its bootstrap spread into the number of
positions at which the ratio's interval would exclude 1, assuming the spread of the log ratio
shrinks as 1/√(positions) (independent units of the same size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

RESAMPLES = 4000
SEED = 0
Z95 = 1.959963984540054  # the 97.5 % quantile of the standard normal


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95 % percentile-bootstrap interval ``[low, high]``."""

    value: float
    low: float
    high: float

    def excludes(self, x: float) -> bool:
        """True when ``x`` lies outside ``[low, high]``: the difference from ``x`` is resolved."""
        return not self.low <= x <= self.high

    def as_list(self) -> list[float]:
        return [self.low, self.high]

    def percent(self) -> str:
        """A ratio as a change in percent with its interval, e.g. ``+6.4 % [−2.0, +15.6]``."""
        return f"{100 * (self.value - 1):+.1f} % [{100 * (self.low - 1):+.1f}, {100 * (self.high - 1):+.1f}]"


def _check_sums(sums: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    sums = torch.as_tensor(sums, dtype=torch.float64)
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if sums.dim() != 2:
        raise ValueError(f"sums must be (units, recipes); got shape {tuple(sums.shape)}")
    if counts.shape != sums.shape[:1]:
        raise ValueError(f"counts must be (units,) = ({sums.shape[0]},); got shape {tuple(counts.shape)}")
    if sums.shape[0] < 2:
        raise ValueError(f"a bootstrap needs at least 2 units; got {sums.shape[0]}")
    if not (torch.isfinite(sums).all() and torch.isfinite(counts).all()):
        raise ValueError("sums and counts must be finite")
    if (counts <= 0).any():
        raise ValueError("every unit needs at least one position (counts > 0)")
    return sums, counts


def resample_weights(units: int, resamples: int = RESAMPLES, seed: int = SEED) -> torch.Tensor:
    """``(resamples, units)`` float64 multiplicities: each row draws ``units`` units with
    replacement (row sums equal ``units``), from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(units, (resamples, units), generator=generator)
    weights = torch.zeros(resamples, units, dtype=torch.float64)
    return weights.scatter_add_(1, picks, torch.ones_like(picks, dtype=torch.float64))


def _percentiles(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q = torch.tensor([0.025, 0.975], dtype=torch.float64)
    bounds = torch.quantile(samples, q, dim=0)
    return bounds[0], bounds[1]


class PairedBootstrap:
    """Intervals of means and ratios of means of several recipes measured on the same units.

    ``sums (U, R)``: per unit and recipe, the sum of a per-position quantity (KL, NLL, top-1
    agreement); ``counts (U,)``: positions per unit. One set of resamples serves every
    interval, so the intervals of different recipes and ratios are paired."""

    def __init__(self, sums, counts, resamples: int = RESAMPLES, seed: int = SEED):
        self.sums, self.counts = _check_sums(sums, counts)
        self.weights = resample_weights(self.sums.shape[0], resamples, seed)
        self._resampled_sums = self.weights @ self.sums  # (B, R)
        self._resampled_counts = self.weights @ self.counts  # (B,)

    @property
    def units(self) -> int:
        return self.sums.shape[0]

    @property
    def positions(self) -> int:
        return int(self.counts.sum())

    def mean(self, r: int) -> Interval:
        """Mean per position of recipe ``r``."""
        samples = self._resampled_sums[:, r] / self._resampled_counts
        low, high = _percentiles(samples)
        return Interval(float(self.sums[:, r].sum() / self.counts.sum()), float(low), float(high))

    def ratio(self, r: int, s: int) -> Interval:
        """Mean of recipe ``r`` over mean of recipe ``s`` (same positions)."""
        if float(self.sums[:, s].sum()) == 0.0:
            raise ValueError(f"the ratio's denominator (recipe {s}) sums to zero")
        samples = self._resampled_sums[:, r] / self._resampled_sums[:, s]
        low, high = _percentiles(samples)
        return Interval(float(self.sums[:, r].sum() / self.sums[:, s].sum()), float(low), float(high))

    def log_ratio_spread(self, r: int, s: int) -> float:
        """Bootstrap standard deviation of ``log(mean_r / mean_s)``."""
        samples = torch.log(self._resampled_sums[:, r] / self._resampled_sums[:, s])
        return float(samples.std())

    def tokens_to_resolve(self, r: int, s: int) -> float:
        """Positions at which the ratio of ``r`` to ``s`` would be resolved (its interval
        excluding 1), from the measured ratio and spread (:func:`tokens_to_resolve`)."""
        ratio = float(self.sums[:, r].sum() / self.sums[:, s].sum())
        return tokens_to_resolve(ratio, self.log_ratio_spread(r, s), self.positions)


def tokens_to_resolve(ratio: float, log_spread: float, positions: int) -> float:
    """``positions · (z₀.₉₇₅ · spread / |log ratio|)²``: the positions at which a ratio of this
    size, whose log has bootstrap standard deviation ``log_spread`` at ``positions``, would
    lie 1.96 standard deviations from 1 (``inf`` for a ratio of exactly 1)."""
    if ratio <= 0 or not math.isfinite(ratio):
        raise ValueError(f"ratio must be positive and finite; got {ratio}")
    effect = abs(math.log(ratio))
    if effect == 0.0:
        return math.inf
    return positions * (Z95 * log_spread / effect) ** 2
