"""The explorer's numbers as a plain function of the control values.

``Explorer(data_dir).compute(Controls(...)) -> View``. For held-out activations
``x (T, G, K)`` (group g multiplied by the artificial spread gain
``c_g = 10^(-spread·g/(G-1))``) and weights ``W (G, K, N)``:

    gs     = base · 2^octaves · (2688/1536 for four-over-six)        (G,) float32
    base   = the recipe's calibrated static scale (calibration tokens) or, dynamic,
             amax(x)/2688 of the held-out tokens themselves; shared: the max over groups
    x̂      = dequantize(quantize_nvfp4(x, gs, block_rule))           (T, G, K)
    z      = einsum("tgk,gkn->tgn", x, W)      (float64, the reference)
    ẑ      = bf16(einsum(x̂, Ŵ))                Ŵ: NVFP4 weights, per-group dynamic scale

and the view holds per group ``sqnr_db(x, x̂)``, ``sqnr_db(z, ẑ)`` (``nvfp4lab.metrics``),
the same for the bf16 and FP8 baselines (``nvfp4lab.baselines``), the histogram of
``|x̂ − x| / |x|``, the counts of the 256 block-scale bytes, the clipped fraction and a
one-line summary.

What does not depend on a control is cached: the layer (data, weights) per source and
group count; the spread-scaled tensors, the reference ``z``, ``Ŵ`` and the baselines per
spread; the calibrated static scale per recipe and sharing. A change of octaves, block
rule or source (static/dynamic) therefore costs one quantization and one grouped matmul.
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

OCTAVES = (-4.0, 12.0)
SPREAD_DECADES = (0.0, 8.0)
#: the static calibration recipes of ``nvfp4lab.evaluation``
RECIPES = (*evaluation.recipes(None), "mse output")
#: log10 edges of the relative-error histogram; smaller errors count in the first bin
ERROR_EDGES = torch.linspace(-5.0, 0.0, 51, dtype=torch.float64)
CALIBRATION_BATCH = 256


@dataclass(frozen=True)
class Controls:
    """Every control of the explorer (the widgets' values).

    ``source`` a registered data source (``nvfp4lab.explore.sources``) with its options
    ``layer`` / ``path`` / ``weights_path``; ``groups`` G; ``octaves`` log2 of the
    multiplier applied to the calibrated (or dynamic) global scale, in [-4, 12];
    ``sharing`` shared / per_group; ``scale_source`` static / dynamic; ``recipe`` the
    static calibration recipe; ``block_rule`` max6 / four_over_six; ``spread_decades``
    the artificial spread of group magnitudes, in [0, 8]."""

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

    def check(self) -> None:
        source = get_source(self.source)
        if self.groups not in source.groups:
            raise ValueError(f"groups={self.groups} is not offered for {self.source!r}; choose one of {source.groups}")
        for name, value, allowed in (("sharing", self.sharing, SHARINGS), ("scale_source", self.scale_source, SOURCES),
                                     ("recipe", self.recipe, RECIPES), ("block_rule", self.block_rule, BLOCK_RULES)):
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
    weights_hat: torch.Tensor  # (G, K, N) float64, NVFP4 dequantized
    z: torch.Tensor  # (T, G, N) float64 reference
    description: str
    baseline_x: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (G,) dB
    baseline_z: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (G,) dB
    baseline_z_total: dict[str, float] = field(default_factory=dict)  # name -> dB


@dataclass
class View:
    """The numbers behind every view of one control state (all ``(G,)`` are float64)."""

    controls: Controls
    description: str
    global_scale: torch.Tensor  # (G,) float32, the scales used
    headroom_octaves: torch.Tensor  # (G,) log2(gs · 2688 / amax_g): below 0 the largest blocks clip
    sqnr_x_db: torch.Tensor  # (G,) SQNR of the activations
    sqnr_z_db: torch.Tensor  # (G,) SQNR of z
    sqnr_z_total_db: float
    baseline_x_db: dict[str, torch.Tensor]  # "bf16", "fp8" (when K is a multiple of 128) -> (G,)
    baseline_z_db: dict[str, torch.Tensor]  # "bf16", "fp8" (when K, N are multiples of 128) -> (G,)
    baseline_z_total_db: dict[str, float]
    error_edges: torch.Tensor  # (B+1,) log10 edges
    error_fraction: torch.Tensor  # (G, B) share of each group's nonzero elements per bin
    scale_byte_counts: torch.Tensor  # (256,) int64 counts of block-scale bytes
    clipped_fraction: torch.Tensor  # (G,)
    stats: dict[str, int]  # metrics.quantization_stats
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


def _describe(controls: Controls) -> str:
    scale = f"{controls.recipe}" if controls.scale_source == "static" else "dynamic"
    return f"{controls.sharing} {controls.scale_source}, {scale} ×2^{controls.octaves:+g}, {controls.block_rule}"


def percent_text(fraction: float) -> str:
    """``0 %`` or two significant digits (``0.0011 %``): small clipped fractions matter."""
    return "0 %" if fraction == 0 else f"{fraction * 100:.2g} %"


def summary_line(view: View) -> str:
    c = view.controls
    base = ", ".join(f"{name} {value:.1f}" for name, value in view.baseline_z_total_db.items())
    return (f"{c.source}, G={view.groups}, spread {c.spread_decades:g} dec · {_describe(c)} · "
            f"z SQNR {view.sqnr_z_total_db:.1f} dB (worst group {float(view.sqnr_z_db.min()):.1f}; {base}) · "
            f"clipped {percent_text(view.clipped_fraction_total)} · scales zero {view.zero_scale_share:.1%}, "
            f"subnormal {view.subnormal_scale_share:.1%}")


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
        prepared = Prepared(x_cal, x, w, baselines.nvfp4_weights(w), baselines.reference_output(x, w),
                            layer.description)
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

    def _static_scale(self, source: str, options: tuple, groups: int, spread: float, recipe: str,
                      sharing: str) -> torch.Tensor:
        prepared = self.prepared(source, options, groups, spread)
        factories = evaluation.recipes(prepared.weights)
        calibrator = factories[recipe](sharing)
        for start in range(0, prepared.calibration.shape[0], CALIBRATION_BATCH):  # streaming, as deployed
            calibrator.observe(prepared.calibration[start : start + CALIBRATION_BATCH])
        return calibrator.global_scale()

    def global_scale(self, controls: Controls, prepared: Prepared, progress: Callable[[str], None]) -> torch.Tensor:
        """The ``(G,)`` float32 activation global scales of the controls."""
        key = (controls.source, self._options(controls), controls.groups, controls.spread_decades)
        mode = ScaleMode(controls.sharing, controls.scale_source)
        static = None
        if controls.scale_source == "static":
            progress(f"calibrating: {controls.recipe}, {controls.sharing}")
            static = self.static_scale(*key, controls.recipe, controls.sharing)
        scale = mode.global_scale(prepared.x, static).double()
        if controls.block_rule == "four_over_six":  # as nvfp4lab.evaluation: gs = amax / 1536
            scale = scale * FOUR_OVER_SIX_SCALE_FACTOR
        return (scale * 2.0**controls.octaves).clamp(min=MIN_GLOBAL_SCALE).to(torch.float32)

    def compute(self, controls: Controls, progress: Callable[[str], None] | None = None) -> View:
        """The :class:`View` of ``controls``. ``progress(message)`` is told each stage
        before it runs (loading and calibrating can take seconds the first time)."""
        progress = progress or (lambda message: None)
        controls.check()
        key = (controls.source, self._options(controls), controls.groups)
        progress(f"loading {controls.source} (G={controls.groups})")
        self.layer(*key)
        progress(f"reference and baselines (spread {controls.spread_decades:g} decades)")
        prepared = self.prepared(*key, controls.spread_decades)
        gs = self.global_scale(controls, prepared, progress)
        progress("quantizing")
        x = prepared.x
        xq = quantize_nvfp4(x, gs, block_rule=controls.block_rule, check_finite=False)
        x_hat = dequantize_nvfp4(xq)
        z_hat = baselines.grouped_matmul(x_hat, prepared.weights_hat)
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
            summary="",
        )
        view.summary = summary_line(view)
        return view
