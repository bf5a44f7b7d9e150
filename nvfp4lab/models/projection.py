"""Replace a decoder's ``o_proj`` by an nvfp4lab recipe, grouped like DeepSeek V4's ``wo_a``.

The attention output ``o (T, H·D)`` of a layer is viewed as ``x (T, G, K = H/G·D)``: group g
holds heads ``g·H/G … (g+1)·H/G − 1``; the projection ``W (N = hidden, H·D)`` splits into
``W_g = W[:, g·K:(g+1)·K]ᵀ`` ``(K, N)`` and ``o_proj(o) = Σ_g x_g W_g``: the grouped GEMM
gives the per-group partial outputs ``z (T, G, N)`` (:mod:`nvfp4lab.baselines`, float64,
rounded to bf16 as the GEMM writes them) and their sum is the layer's output.

Recipes (:class:`Recipe`): ``bf16``; ``fp8`` (the serving recipe; K and N are zero-padded to
multiples of 128, which leaves every block's amax and the product unchanged: a ragged last
block); ``w4a16``; and every NVFP4 W4A4 row of :func:`nvfp4lab.evaluation.jobs` (scale mode ×
calibration recipe × block rule) with its static scales per layer.

:class:`RecipeProjection` is the hook :class:`~nvfp4lab.models.decoder.Decoder` calls; it
quantizes the layers it is given (the others run the ``bf16`` recipe) and accumulates, per
layer, the energy of the unquantized output and of the error (the projection output's SQNR).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nvfp4lab import baselines
from nvfp4lab.evaluation import Job
from nvfp4lab.metrics import _sqnr_from

BASELINES = ("bf16", "fp8 (1x128 act, 128x128 wt)", "w4a16")


@dataclass(frozen=True)
class Recipe:
    """A row of the model-level table: a baseline (``job is None``) or an NVFP4 W4A4 job."""

    name: str
    mode: str
    job: Job | None = None

    @property
    def label(self) -> str:
        return self.name if self.mode == "-" else f"{self.name} | {self.mode}"


def all_recipes(include_mse: bool = True) -> list[Recipe]:
    """The baselines and every NVFP4 row of ``nvfp4lab calibrate``; ``include_mse=False``
    leaves out the two MSE-search recipes (the slowest to calibrate: fast mode)."""
    from nvfp4lab.evaluation import jobs

    rows = [Recipe(name, "-") for name in BASELINES]
    # weights only decide whether "mse output" exists; its calibrator gets each layer's own W
    rows += [Recipe(job.label, job.mode.name, job) for job in jobs(torch.zeros(1, 16, 1))]
    return [r for r in rows if include_mse or not r.name.startswith("mse")]


def check_groups(heads: int, groups: int) -> int:
    if not isinstance(groups, int) or groups <= 0 or heads % groups:
        raise ValueError(f"groups must divide the model's {heads} attention heads; got {groups}")
    return heads // groups


def _pad_to(t: torch.Tensor, dim: int, multiple: int) -> torch.Tensor:
    extra = -t.shape[dim] % multiple
    if not extra:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat((t, t.new_zeros(shape)), dim=dim)


class LayerWeights:
    """Per layer, the grouped ``W (G, K, N)`` float32 and its dequantized NVFP4 and FP8 forms
    (computed once, on first use)."""

    def __init__(self, decoder, groups: int):
        check_groups(decoder.config.heads, groups)
        self.decoder, self.groups = decoder, groups
        self._cache: dict[tuple[str, int], torch.Tensor] = {}

    def grouped(self, layer: int) -> torch.Tensor:
        key = ("grouped", layer)
        if key not in self._cache:
            w = self.decoder.o_proj_weight(layer).float()  # (N, H·D)
            self._cache[key] = w.T.reshape(self.groups, -1, w.shape[0]).contiguous()
        return self._cache[key]

    def nvfp4(self, layer: int) -> torch.Tensor:
        key = ("nvfp4", layer)
        if key not in self._cache:
            self._cache[key] = baselines.nvfp4_weights(self.grouped(layer))
        return self._cache[key]

    def fp8(self, layer: int) -> torch.Tensor:
        key = ("fp8", layer)
        if key not in self._cache:
            padded = _pad_to(_pad_to(self.grouped(layer), 1, baselines.FP8_BLOCK), 2, baselines.FP8_BLOCK)
            self._cache[key] = baselines.fp8_weights(padded)
        return self._cache[key]


def recipe_output(recipe: Recipe, x: torch.Tensor, weights: LayerWeights, layer: int,
                  static: torch.Tensor | None = None) -> torch.Tensor:
    """Per-group partial outputs ``z (T, G, N)`` float64 of ``recipe`` on ``x (T, G, K)``."""
    w = weights.grouped(layer)
    if recipe.name == "bf16":
        return baselines.bf16_output(x, w)
    if recipe.name == "w4a16":
        return baselines.w4a16_output(x, w, weights.nvfp4(layer))
    if recipe.name == BASELINES[1]:
        n = w.shape[-1]
        padded = _pad_to(x, 2, baselines.FP8_BLOCK)
        return baselines.grouped_matmul(baselines.fp8_activations(padded), weights.fp8(layer))[..., :n]
    z, _ = baselines.nvfp4_output(x, w, recipe.job.global_scale(x, static), weights.nvfp4(layer),
                                  block_rule=recipe.job.rule)
    return z


class RecipeProjection:
    """The ``o_proj`` hook: ``recipe`` on the layers in ``layers`` (default all), ``bf16``
    elsewhere. ``static[layer]`` are the calibrated ``(G,)`` scales of a static recipe.
    ``signal[layer]``, ``noise[layer]`` accumulate ``Σ y_ref²`` and ``Σ (y − y_ref)²`` of the
    summed output against the unquantized float64 projection, for :meth:`sqnr_db`."""

    def __init__(self, recipe: Recipe, weights: LayerWeights, static: dict[int, torch.Tensor] | None = None,
                 layers=None, measure: bool = True):
        self.recipe, self.weights, self.static = recipe, weights, static or {}
        n = weights.decoder.config.layers
        self.layers = set(range(n)) if layers is None else set(layers)
        if recipe.job is not None and recipe.job.factory is not None and not self.layers <= set(self.static):
            raise ValueError(f"recipe {recipe.label!r} needs calibrated static scales for layers {sorted(self.layers)}")
        self.measure = measure
        # on the model's device: no copy to the host (and no sync) per layer and call
        self.signal = torch.zeros(n, dtype=torch.float64, device=weights.decoder.device)
        self.noise = torch.zeros(n, dtype=torch.float64, device=weights.decoder.device)

    def __call__(self, layer: int, o: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = o.reshape(o.shape[0], self.weights.groups, -1)
        recipe = self.recipe if layer in self.layers else Recipe("bf16", "-")
        y = recipe_output(recipe, x, self.weights, layer, self.static.get(layer)).sum(dim=1)
        if self.measure and layer in self.layers:
            reference = baselines.reference_output(x, self.weights.grouped(layer)).sum(dim=1)
            self.signal[layer] += reference.square().sum()
            self.noise[layer] += (y - reference).square().sum()
        return y.to(o.dtype)

    def sqnr_db(self) -> list[float]:
        """Per layer SQNR (dB) of the projection output over everything seen (NaN for layers not quantized)."""
        values = _sqnr_from(self.signal, self.noise).cpu().tolist()
        return [value if i in self.layers else float("nan") for i, value in enumerate(values)]
