"""The explorer's numbers as a plain function of the control values.

``Explorer(data_dir).compute(Controls(...)) -> View``. For held-out activations
``x (T, G, K)`` (group g multiplied by the artificial spread gain
``c_g = 10^(-spread·g/(G-1))``) and weights ``W (G, K, N)``:

    T      = Transform(activation_transform, weight_recipe), fitted on the calibration
             tokens (``nvfp4lab.transforms.recipes.fit_transforms``): x' = x·A, W' = A⁻¹·W
    gs     = base · 2^octaves · (2688/1536 for four-over-six)        (G,) float32
    base   = the recipe's calibrated static scale (of the transformed calibration tokens
             x'_cal) or, dynamic, amax(x')/2688 of the held-out tokens themselves;
             shared: the max over groups
    x̂'     = dequantize(quantize_nvfp4(x', gs, block_rule))          (T, G, K)
    z      = einsum("tgk,gkn->tgn", x, W)      (float64, the reference, the same for every T)
    ẑ      = bf16(einsum(x̂', Ŵ'))              Ŵ' = the weight recipe's NVFP4 of W' (``w_hat``)

and the view holds per group ``sqnr_db(x', x̂')``, ``sqnr_db(z, ẑ)`` (``nvfp4lab.metrics``),
the same for the bf16 and FP8 baselines of the plain layer (``nvfp4lab.baselines``), the
histogram of ``|x̂' − x'| / |x'|``, the counts of the 256 block-scale bytes, the clipped
fraction, the activation statistics of x' and x (``recipes.activation_statistics``) and a
one-line summary. With the defaults (``none``, ``rtn``) x' = x and Ŵ' = Ŵ bit for bit.

What does not depend on a control is cached: the layer (data, weights) per source and
group count; the spread-scaled tensors, the reference ``z`` and the baselines per spread;
the fitted transform (α search, GPTQ) with x' per spread and transform; the calibrated
static scale per recipe, sharing and transform. A change of octaves, block rule, sharing
or source (static/dynamic) therefore costs one quantization and one grouped matmul.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import torch

from nvfp4lab import baselines, evaluation, metrics
from nvfp4lab.explore.sources import OPTION_FIELDS, SourceOptions, get_source
from nvfp4lab.formats import GLOBAL_SCALE_DIVISOR
from nvfp4lab.quantize import (
    BLOCK_RULES,
    FOUR_OVER_SIX_SCALE_FACTOR,
    MIN_GLOBAL_SCALE,
    dequantize_nvfp4,
    quantize_nvfp4,
    tensor_amax,
)
from nvfp4lab.scale_modes import SHARINGS, SOURCES, ScaleMode
from nvfp4lab.transforms.recipes import (
    ACTIVATION_TRANSFORMS,
    WEIGHT_RECIPES,
    FittedTransform,
    Transform,
    activation_statistics,
    fit_transforms,
)

OCTAVES = (-4.0, 12.0)
SPREAD_DECADES = (0.0, 8.0)
#: the static calibration recipes of ``nvfp4lab.evaluation``
RECIPES = (*evaluation.recipes(None), "mse output")
#: log10 edges of the relative-error histogram; smaller errors count in the first bin
ERROR_EDGES = torch.linspace(-5.0, 0.0, 51, dtype=torch.float64)
CALIBRATION_BATCH = 256
#: the activation transforms that rotate (their Hadamard blocks must divide the head dimension)
ROTATIONS = tuple(a for a in ACTIVATION_TRANSFORMS if Transform(a).block(1) is not None)


@dataclass(frozen=True)
class Controls:
    """Every control of the explorer (the widgets' values).

    ``source`` a registered data source (``nvfp4lab.explore.sources``) with its options
    ``layer`` / ``path`` / ``weights_path``; ``groups`` G; ``octaves`` log2 of the
    multiplier applied to the calibrated (or dynamic) global scale, in [-4, 12];
    ``sharing`` shared / per_group; ``scale_source`` static / dynamic; ``recipe`` the
    static calibration recipe; ``block_rule`` max6 / four_over_six; ``spread_decades``
    the artificial spread of group magnitudes, in [0, 8]; ``activation_transform`` one of
    ``recipes.ACTIVATION_TRANSFORMS`` (none, Hadamard rotations, smoothquant) and
    ``weight_recipe`` one of ``recipes.WEIGHT_RECIPES`` (rtn, …, gptq)."""

    source: str = "synthetic V4-Flash"
    layer: int = 5
    path: str = ""
    weights_path: str = ""
    groups: int = 4
    octaves: float = 0.0
    sharing: str = "per_group"
    scale_source: str = "static"
    recipe: str = "max"
    block_rule: str = "max6"
    spread_decades: float = 0.0
    activation_transform: str = "none"
    weight_recipe: str = "rtn"

    @property
    def transform(self) -> Transform:
        return Transform(self.activation_transform, self.weight_recipe)

    def check(self) -> None:
        source = get_source(self.source)
        if self.groups not in source.groups:
            raise ValueError(f"groups={self.groups} is not offered for {self.source!r}; choose one of {source.groups}")
        for name, value, allowed in (("sharing", self.sharing, SHARINGS), ("scale_source", self.scale_source, SOURCES),
                                     ("recipe", self.recipe, RECIPES), ("block_rule", self.block_rule, BLOCK_RULES),
                                     ("activation_transform", self.activation_transform, ACTIVATION_TRANSFORMS),
                                     ("weight_recipe", self.weight_recipe, WEIGHT_RECIPES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}; got {value!r}")
        for name, value, (low, high) in (("octaves", self.octaves, OCTAVES),
                                         ("spread_decades", self.spread_decades, SPREAD_DECADES)):
            if not low <= value <= high:
                raise ValueError(f"{name} must be in [{low:g}, {high:g}]; got {value}")


@dataclass
class Prepared:
    """Everything that depends on the data, G and the spread only."""

    calibration: torch.Tensor  # (Tc, G, K) float32, spread applied
    x: torch.Tensor  # (T, G, K) float32, held out, spread applied
    weights: torch.Tensor  # (G, K, N) float32
    z: torch.Tensor  # (T, G, N) float64 reference
    description: str
    statistics: dict[str, float]  # recipes.activation_statistics(x)
    baseline_x: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (G,) dB
    baseline_z: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (G,) dB
    baseline_z_total: dict[str, float] = field(default_factory=dict)  # name -> dB


@dataclass
class Transformed:
    """A transform fitted on one layer's calibration tokens, and the held-out tokens it
    transformed."""

    fitted: FittedTransform
    x: torch.Tensor  # (T, G, K) float32, x' = x·A of the held-out tokens
    statistics: dict[str, float]  # recipes.activation_statistics(x')


@dataclass
class View:
    """The numbers behind every view of one control state (all ``(G,)`` are float64).

    With an activation transform (``controls.activation_transform`` other than ``none``)
    the activations are quantized in the transformed domain ``x' = x·A``: ``global_scale``,
    ``headroom_octaves``, ``sqnr_x_db`` (``sqnr_db(x', x̂')``), ``error_fraction``,
    ``scale_byte_counts``, ``clipped_fraction``, ``stats`` and ``activation_stats`` are all
    of x', not of x. The SQNR of z is always against the untransformed float64 ``z = x·W``
    (the transform is exact in real numbers), so it compares across transforms; the
    baselines are those of the plain layer (bf16 / FP8 of x and W)."""

    controls: Controls
    description: str
    global_scale: torch.Tensor  # (G,) float32, the scales used
    headroom_octaves: torch.Tensor  # (G,) log2(gs · 2688 / amax_g of x'): below 0 the largest blocks clip
    sqnr_x_db: torch.Tensor  # (G,) SQNR of the (transformed) activations x'
    sqnr_z_db: torch.Tensor  # (G,) SQNR of z
    sqnr_z_total_db: float
    baseline_x_db: dict[str, torch.Tensor]  # "bf16", "fp8" (when K is a multiple of 128) -> (G,), of plain x
    baseline_z_db: dict[str, torch.Tensor]  # "bf16", "fp8" (when K, N are multiples of 128) -> (G,)
    baseline_z_total_db: dict[str, float]
    error_edges: torch.Tensor  # (B+1,) log10 edges
    error_fraction: torch.Tensor  # (G, B) share of each group's nonzero elements per bin
    scale_byte_counts: torch.Tensor  # (256,) int64 counts of block-scale bytes
    clipped_fraction: torch.Tensor  # (G,)
    stats: dict[str, int]  # metrics.quantization_stats
    head_dim: int | None  # the data's head dimension D (None: unknown, rotations disabled)
    alpha: float | None  # smoothquant's α, searched on the calibration tokens (else None)
    # recipes.activation_statistics (kurtosis, block_max_over_mean, zero_code_fraction with
    # per-group dynamic scales, sqnr_db) of the held-out x' and of the untransformed x
    activation_stats: dict[str, float]
    plain_activation_stats: dict[str, float]
    unavailable: dict[str, str]  # activation transform -> why it cannot run on this data
    summary: str

    @property
    def groups(self) -> int:
        return self.sqnr_z_db.shape[0]

    @property
    def clipped_fraction_total(self) -> float:
        return self.stats["clipped_elements"] / self.stats["elements"]

    @property
    def zero_scale_share(self) -> float:
        return self.stats["zero_scale_blocks"] / self.stats["blocks"]

    @property
    def subnormal_scale_share(self) -> float:
        return self.stats["subnormal_scale_blocks"] / self.stats["blocks"]


def group_gains(groups: int, spread_decades: float) -> torch.Tensor:
    """``(G,)`` float64 ``10^(-spread·g/(G-1))`` (1 for G = 1): group 0 keeps its
    magnitude, the last group is ``spread`` decades quieter."""
    steps = torch.arange(groups, dtype=torch.float64) / max(groups - 1, 1)
    return 10.0 ** (-spread_decades * steps)


def apply_spread(x: torch.Tensor, spread_decades: float) -> torch.Tensor:
    """``x (T, G, K)`` with group g multiplied by :func:`group_gains` (float64 product,
    rounded once to float32)."""
    gains = group_gains(x.shape[1], spread_decades)
    return (x.double() * gains[None, :, None]).to(torch.float32)


def relative_error_histogram(x: torch.Tensor, x_hat: torch.Tensor, edges: torch.Tensor = ERROR_EDGES) -> torch.Tensor:
    """``(G, B)`` float64: per group, the share of nonzero elements of ``x (T, G, K)``
    whose ``log10(|x̂ − x| / |x|)`` (float32) falls in each bin of the evenly spaced
    ``edges`` (values below the first edge count in the first bin, above the last in the
    last; zero elements of ``x`` are left out)."""
    groups, bins = x.shape[1], edges.numel() - 1
    low, width = float(edges[0]), float(edges[1] - edges[0])
    relative = (x_hat - x).abs_().div_(x.abs())  # 0/0 = NaN for zero elements
    position = relative.log10_().sub_(low).div_(width).clamp_(0, bins - 1)
    position = torch.nan_to_num_(position, nan=float(bins))  # zero elements: an extra bin, dropped
    index = position.long() + (bins + 1) * torch.arange(groups)[None, :, None]
    counts = torch.bincount(index.flatten(), minlength=groups * (bins + 1)).reshape(groups, bins + 1)[:, :bins]
    counts = counts.double()
    return counts / counts.sum(dim=1, keepdim=True).clamp(min=1)


class TransformUnavailable(ValueError):
    """The chosen activation transform cannot run on this data; ``reasons`` says, for every
    activation transform this data cannot take, why."""

    def __init__(self, message: str, reasons: dict[str, str]):
        super().__init__(message)
        self.reasons = reasons


def transform_unavailable(activation: str, head_dim: int | None, k: int) -> str | None:
    """Why the activation transform cannot run on a layer with head dimension
    ``head_dim`` (``None``: unknown) and contraction ``k``; ``None`` when it can."""
    if activation in ROTATIONS and head_dim is None:
        return (f"{activation} needs the head dimension D (every rotation block must divide it), and this "
                "data does not give it (e.g. an activations file read as (T, G, K))")
    return Transform(activation).unavailable(head_dim or k, k)


def _describe(controls: Controls) -> str:
    scale = f"{controls.recipe}" if controls.scale_source == "static" else "dynamic"
    return f"{controls.sharing} {controls.scale_source}, {scale} ×2^{controls.octaves:+g}, {controls.block_rule}"


def percent_text(fraction: float) -> str:
    """``0 %`` or two significant digits (``0.0011 %``): small clipped fractions matter."""
    return "0 %" if fraction == 0 else f"{fraction * 100:.2g} %"


def transform_text(view: View) -> str:
    """``transform none``, ``transform hadamard head (D=512) + gptq``, ``transform
    smoothquant (α=0.5)``."""
    t = view.controls.transform
    activation = t.activation
    if activation == "hadamard head":
        activation += f" (D={view.head_dim})"
    elif view.alpha is not None:
        activation += f" (α={view.alpha:g})"
    parts = [p for p, plain in ((activation, "none"), (t.weights, "rtn")) if p != plain]
    return "transform " + (" + ".join(parts) or "none")


def statistics_text(view: View) -> str:
    """The activation statistics of x' (and of x in brackets when a transform changes it)."""
    def stats(s):
        return (f"{s['kurtosis']:.0f}", f"{s['block_max_over_mean']:.2f}", percent_text(s["zero_code_fraction"]))

    new, plain = stats(view.activation_stats), stats(view.plain_activation_stats)
    if view.controls.activation_transform == "none":
        return f"x: kurtosis {new[0]}, block max/mean {new[1]}, zero codes {new[2]}"
    return (f"x′: kurtosis {new[0]} (x: {plain[0]}), block max/mean {new[1]} ({plain[1]}), "
            f"zero codes {new[2]} ({plain[2]})")


def headline(view: View) -> str:
    """The first part of the summary: the control state and the results."""
    c = view.controls
    base = ", ".join(f"{name} {value:.1f}" for name, value in view.baseline_z_total_db.items())
    return (f"{c.source}, G={view.groups}, spread {c.spread_decades:g} dec · {transform_text(view)} · "
            f"{_describe(c)} · z SQNR {view.sqnr_z_total_db:.1f} dB (worst group {float(view.sqnr_z_db.min()):.1f}; "
            f"{base}) · clipped {percent_text(view.clipped_fraction_total)} · scales zero {view.zero_scale_share:.1%}, "
            f"subnormal {view.subnormal_scale_share:.1%}")


def notes(view: View) -> str:
    """The second part of the summary: the activation statistics and the activation
    transforms this data cannot take."""
    text = statistics_text(view)
    if view.unavailable:
        text += f" · unavailable for this data: {', '.join(view.unavailable)}"
    return text


def summary_line(view: View) -> str:
    return f"{headline(view)} · {notes(view)}"


class Explorer:
    """Computes :class:`View` s, caching what a control change leaves unchanged.

    ``data_dir``: the captured MiniLM data; ``tokens``: tokens per split of the synthetic
    sources (256 by default: each update well under a second on a laptop CPU)."""

    def __init__(self, data_dir: str = "data/generated/minilm", tokens: int = 256):
        if tokens < 16:
            raise ValueError(f"tokens must be >= 16; got {tokens}")
        self.data_dir = str(data_dir)
        self.tokens = tokens
        self.layer = lru_cache(maxsize=4)(self._layer)
        self.prepared = lru_cache(maxsize=4)(self._prepared)
        self.fit = lru_cache(maxsize=8)(self._fit)
        self.static_scale = lru_cache(maxsize=32)(self._static_scale)

    # each cached stage takes hashable keys: (source name, option values) and G
    def _options(self, controls: Controls) -> tuple:
        source = get_source(controls.source)
        return tuple((name, getattr(controls, name)) for name in OPTION_FIELDS if name in source.options)

    def _layer(self, source: str, options: tuple, groups: int):
        options = SourceOptions(data_dir=self.data_dir, tokens=self.tokens, **dict(options))
        return get_source(source).load(groups, options)

    def _prepared(self, source: str, options: tuple, groups: int, spread: float) -> Prepared:
        layer = self.layer(source, options, groups)
        x_cal, x, w = apply_spread(layer.calibration, spread), apply_spread(layer.held_out, spread), layer.weights
        prepared = Prepared(x_cal, x, w, baselines.reference_output(x, w), layer.description,
                            activation_statistics(x))
        recipes = {"bf16": (x.to(torch.bfloat16).double(), baselines.bf16_output)}
        if x.shape[-1] % baselines.FP8_BLOCK == 0:
            recipes["fp8"] = (baselines.fp8_activations(x), baselines.fp8_output)
        for name, (x_hat, output) in recipes.items():
            prepared.baseline_x[name] = metrics.sqnr_db_per_group(x, x_hat)
            if name == "fp8" and w.shape[-1] % baselines.FP8_BLOCK:
                continue
            z_hat = output(x, w)
            prepared.baseline_z[name] = metrics.sqnr_db_per_group(prepared.z, z_hat)
            prepared.baseline_z_total[name] = metrics.sqnr_db(prepared.z, z_hat)
        return prepared

    def _fit(self, source: str, options: tuple, groups: int, spread: float, activation: str,
             weights: str) -> Transformed:
        layer = self.layer(source, options, groups)
        prepared = self.prepared(source, options, groups, spread)
        transform = Transform(activation, weights)
        k = prepared.weights.shape[1]
        try:  # head_dim only matters to the rotations, which need it known (checked in compute)
            fitted = fit_transforms([transform], prepared.calibration, prepared.weights, layer.head_dim or k)[transform]
        except ValueError as error:
            raise ValueError(f"cannot fit the transform {transform.label!r} on this data: {error}") from error
        x = fitted.activations(prepared.x)
        return Transformed(fitted, x, activation_statistics(x))

    def _static_scale(self, source: str, options: tuple, groups: int, spread: float, recipe: str,
                      sharing: str, activation: str, weights: str) -> torch.Tensor:
        prepared = self.prepared(source, options, groups, spread)
        fitted = self.fit(source, options, groups, spread, activation, weights).fitted
        calibration = fitted.activations(prepared.calibration)  # x'_cal, as the deployed layer sees it
        factories = evaluation.recipes(fitted.weights)  # "mse output" measures x'·W' (= x·W unquantized)
        calibrator = factories[recipe](sharing)
        for start in range(0, calibration.shape[0], CALIBRATION_BATCH):  # streaming, as deployed
            calibrator.observe(calibration[start : start + CALIBRATION_BATCH])
        return calibrator.global_scale()

    def global_scale(self, controls: Controls, x: torch.Tensor, progress: Callable[[str], None]) -> torch.Tensor:
        """The ``(G,)`` float32 activation global scales of the controls for the
        (transformed) held-out activations ``x (T, G, K)``."""
        key = (controls.source, self._options(controls), controls.groups, controls.spread_decades)
        mode = ScaleMode(controls.sharing, controls.scale_source)
        static = None
        if controls.scale_source == "static":
            progress(f"calibrating: {controls.recipe}, {controls.sharing}")
            static = self.static_scale(*key, controls.recipe, controls.sharing, controls.activation_transform,
                                       controls.weight_recipe)
        scale = mode.global_scale(x, static).double()
        if controls.block_rule == "four_over_six":  # as nvfp4lab.evaluation: gs = amax / 1536
            scale = scale * FOUR_OVER_SIX_SCALE_FACTOR
        return (scale * 2.0**controls.octaves).clamp(min=MIN_GLOBAL_SCALE).to(torch.float32)

    def unavailable_transforms(self, controls: Controls) -> dict[str, str]:
        """``{activation transform: why it cannot run}`` on the data of ``controls`` (loads
        the layer; raises the loader's errors)."""
        layer = self.layer(controls.source, self._options(controls), controls.groups)
        reasons = {a: transform_unavailable(a, layer.head_dim, layer.weights.shape[1]) for a in ACTIVATION_TRANSFORMS}
        return {a: reason for a, reason in reasons.items() if reason}

    def compute(self, controls: Controls, progress: Callable[[str], None] | None = None) -> View:
        """The :class:`View` of ``controls``. ``progress(message)`` is told each stage
        before it runs (loading, fitting a transform and calibrating can take seconds the
        first time). An activation transform the data cannot take (its head dimension
        unknown, or not divisible by the rotation's block) raises
        :class:`TransformUnavailable` (a ``ValueError``) that says why."""
        progress = progress or (lambda message: None)
        controls.check()
        key = (controls.source, self._options(controls), controls.groups)
        progress(f"loading {controls.source} (G={controls.groups})")
        layer = self.layer(*key)
        unavailable = self.unavailable_transforms(controls)
        if controls.activation_transform in unavailable:
            raise TransformUnavailable(f"activation_transform {controls.activation_transform!r} is unavailable for "
                                       f"this data: {unavailable[controls.activation_transform]}", unavailable)
        progress(f"reference and baselines (spread {controls.spread_decades:g} decades)")
        prepared = self.prepared(*key, controls.spread_decades)
        progress(f"fitting the transform {controls.transform.label!r} on {prepared.calibration.shape[0]} "
                 "calibration tokens")
        transformed = self.fit(*key, controls.spread_decades, controls.activation_transform, controls.weight_recipe)
        x = transformed.x
        gs = self.global_scale(controls, x, progress)
        progress("quantizing")
        xq = quantize_nvfp4(x, gs, block_rule=controls.block_rule, check_finite=False)
        x_hat = dequantize_nvfp4(xq)
        z_hat = baselines.grouped_matmul(x_hat, transformed.fitted.w_hat)
        amax = tensor_amax(x, per_group=True).double()
        headroom = torch.log2(gs.double() * GLOBAL_SCALE_DIVISOR / amax.clamp(min=torch.finfo(torch.float32).tiny))
        view = View(
            controls=controls,
            description=prepared.description,
            global_scale=gs,
            headroom_octaves=headroom,
            sqnr_x_db=metrics.sqnr_db_per_group(x, x_hat),
            sqnr_z_db=metrics.sqnr_db_per_group(prepared.z, z_hat),
            sqnr_z_total_db=metrics.sqnr_db(prepared.z, z_hat),
            baseline_x_db=prepared.baseline_x,
            baseline_z_db=prepared.baseline_z,
            baseline_z_total_db=prepared.baseline_z_total,
            error_edges=ERROR_EDGES,
            error_fraction=relative_error_histogram(x, x_hat),
            scale_byte_counts=torch.bincount(xq.scales.view(torch.uint8).flatten().long(), minlength=256),
            clipped_fraction=metrics.clipped_fraction_per_group(x, xq),
            stats=metrics.quantization_stats(x, xq),
            head_dim=layer.head_dim,
            alpha=None if transformed.fitted.search is None else transformed.fitted.search.alpha,
            activation_stats=transformed.statistics,
            plain_activation_stats=prepared.statistics,
            unavailable=unavailable,
            summary="",
        )
        view.summary = summary_line(view)
        return view
