"""Replace a decoder's ``o_proj`` by an nvfp4lab recipe, grouped like DeepSeek V4's ``wo_a``.

The attention output ``o (T, H·D)`` of a layer is viewed as ``x (T, G, K = H/G·D)``: group g
holds heads ``g·H/G … (g+1)·H/G − 1``; the projection ``W (N = hidden, H·D)`` splits into
``W_g = W[:, g·K:(g+1)·K]ᵀ`` ``(K, N)`` and ``o_proj(o) = Σ_g x_g W_g``: the grouped GEMM
gives the per-group partial outputs ``z (T, G, N)`` (:mod:`nvfp4lab.baselines`, float64,
rounded to bf16 as the GEMM writes them) and their sum is the layer's output.

Recipes (:class:`Recipe`): ``bf16``; ``fp8`` (the serving recipe; K and N are zero-padded to
multiples of 128, which leaves every block's amax and the product unchanged: a ragged last
block); ``w4a16``; and every NVFP4 W4A4 row of :func:`nvfp4lab.evaluation.jobs` (scale mode ×
calibration recipe × block rule) with its static scales per layer. Each NVFP4 row also exists
as **W16A4** (``Recipe.operands == "W16A4"``): the same activation quantization, the weights
as the model stores them (unquantized): the activation-scale question without the weights'
re-quantization error. A W4A4 row may carry a :class:`~nvfp4lab.transforms.recipes.Transform`
(``Recipe.transform``: a per-head rotation, smoothing, or a weight recipe such as GPTQ):
the hook then quantizes ``x' = x·A`` and ``Ŵ = NVFP4(A⁻¹·W)`` with the transform fitted per
layer on the calibration activations (:attr:`LayerWeights.fitted`). Applying ``A`` to ``x``
in the hook is, in real numbers, what folding it into the value projection does (``o·A =
P·(V·A)``; tests/test_transform_folds.py checks the folded decoder equals the unfolded one).

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
from nvfp4lab.transforms.recipes import TRANSFORM_MODES, FittedTransform, Transform

BASELINES = ("bf16", "fp8 (1x128 act, 128x128 wt)", "w4a16")


OPERANDS = ("W4A4", "W16A4")  # NVFP4 weights and activations; weights as stored, NVFP4 activations


def label_of(name: str, mode: str, operands: str, transform: str = "none") -> str:
    """A row's label: ``"bf16"``, ``"max | shared static"`` (W4A4), ``"max | shared static | W16A4"``
    or, with a transform, ``"max | shared static | hadamard head + gptq"``."""
    if mode == "-":
        return name
    return (f"{name} | {mode}" + ("" if transform == "none" else f" | {transform}")
            + ("" if operands == "W4A4" else f" | {operands}"))


@dataclass(frozen=True)
class Recipe:
    """A row of the model-level table: a baseline (``job is None``, ``operands == "-"``) or an
    NVFP4 job on both operands (``"W4A4"``) or on the activations only (``"W16A4"``)."""

    name: str
    mode: str
    job: Job | None = None
    operands: str = "-"
    transform: Transform = Transform()

    @property
    def label(self) -> str:
        return label_of(self.name, self.mode, self.operands, self.transform.label)

    @property
    def is_nvfp4(self) -> bool:
        return self.job is not None


def all_recipes(include_mse: bool = True, activation_only: bool = True) -> list[Recipe]:
    """The baselines, every NVFP4 W4A4 row of ``nvfp4lab calibrate`` and (``activation_only``)
    the same rows as W16A4; ``include_mse=False`` leaves out the two MSE-search recipes (the
    slowest to calibrate: fast mode)."""
    from nvfp4lab.evaluation import jobs

    rows = [Recipe(name, "-") for name in BASELINES]
    # weights only decide whether "mse output" exists; its calibrator gets each layer's own W
    nvfp4 = [job for job in jobs(torch.zeros(1, 16, 1)) if include_mse or not job.label.startswith("mse")]
    for operands in OPERANDS[: 2 if activation_only else 1]:
        rows += [Recipe(job.label, job.mode.name, job, operands) for job in nvfp4]
    return rows




def transform_recipes(head_dim: int, k: int, transforms=None) -> list[Recipe]:
    """The rows of a transform study: the baselines, then per :data:`TRANSFORM_MODES` the
    plain NVFP4 W4A4 row and one row per transform (default
    :data:`~nvfp4lab.transforms.recipes.STUDY_TRANSFORMS`) that runs on a layer with head
    dimension ``head_dim`` and contraction ``k`` (``hadamard 128`` needs 128 | D)."""
    from nvfp4lab.evaluation import jobs
    from nvfp4lab.transforms.recipes import STUDY_TRANSFORMS

    transforms = STUDY_TRANSFORMS if transforms is None else transforms
    usable = [t for t in dict.fromkeys(transforms) if not t.is_plain and t.unavailable(head_dim, k) is None]
    by_key = {(job.label, job.mode.name): job for job in jobs(None)}
    rows = [Recipe(name, "-") for name in BASELINES]
    for name, mode in TRANSFORM_MODES:
        job = by_key[(name, mode)]
        rows += [Recipe(name, mode, job, "W4A4", t) for t in (Transform(), *usable)]
    return rows


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
    (computed once, on first use); ``fitted[(layer, transform)]``: the transforms fitted on
    the layer's calibration activations (filled by the calibration,
    :func:`nvfp4lab.models.evaluate.fit_layer_transforms`)."""

    def __init__(self, decoder, groups: int):
        check_groups(decoder.config.heads, groups)
        self.decoder, self.groups = decoder, groups
        self._cache: dict[tuple[str, int], torch.Tensor] = {}
        self.fitted: dict[tuple[int, Transform], FittedTransform] = {}

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
    if not recipe.transform.is_plain:
        fitted = weights.fitted[(layer, recipe.transform)]
        x, w = fitted.activations(x), fitted.weights
        w_hat = fitted.w_hat if recipe.operands == "W4A4" else w.double()
    else:
        w_hat = weights.nvfp4(layer) if recipe.operands == "W4A4" else w.double()
    z, _ = baselines.nvfp4_output(x, w, recipe.job.global_scale(x, static), w_hat, block_rule=recipe.job.rule)
    return z


class RecipeProjection:
    """The ``o_proj`` hook: ``recipe`` on the layers in ``layers`` (default all), ``bf16``
    elsewhere. ``static[layer]`` are the calibrated ``(G,)`` scales of a static recipe.
    ``signal[layer]``, ``noise[layer]`` accumulate ``Σ y_ref²`` and ``Σ (y − y_ref)²`` of the
    summed output against the unquantized float64 projection, for :meth:`sqnr_db`.

    ``call_tokens``: the tokens of one forward call (one sequence). A dynamic scale is the amax
    of the tokens it quantizes, so it depends on which tokens share a call: with
    ``call_tokens`` set, the rows of a batch are split into calls of that many tokens and each
    gets its own dynamic scales — results then do not depend on how sequences are batched.
    ``None``: the whole batch is one call."""

    def __init__(self, recipe: Recipe, weights: LayerWeights, static: dict[int, torch.Tensor] | None = None,
                 layers=None, measure: bool = True, call_tokens: int | None = None):
        self.recipe, self.weights, self.static = recipe, weights, static or {}
        if call_tokens is not None and call_tokens <= 0:
            raise ValueError(f"call_tokens must be positive; got {call_tokens}")
        self.call_tokens = call_tokens
        n = weights.decoder.config.layers
        self.layers = set(range(n)) if layers is None else set(layers)
        if recipe.job is not None and recipe.job.factory is not None and not self.layers <= set(self.static):
            raise ValueError(f"recipe {recipe.label!r} needs calibrated static scales for layers {sorted(self.layers)}")
        unfitted = sorted(i for i in self.layers if not recipe.transform.is_plain
                          and (i, recipe.transform) not in weights.fitted)
        if unfitted:
            raise ValueError(f"recipe {recipe.label!r} needs its transform fitted on layers {unfitted} "
                             "(nvfp4lab.models.evaluate.fit_layer_transforms)")
        self.measure = measure
        # on the model's device: no copy to the host (and no sync) per layer and call
        self.signal = torch.zeros(n, dtype=torch.float64, device=weights.decoder.device)
        self.noise = torch.zeros(n, dtype=torch.float64, device=weights.decoder.device)

    def __call__(self, layer: int, o: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = o.reshape(o.shape[0], self.weights.groups, -1)
        recipe = self.recipe if layer in self.layers else Recipe("bf16", "-")
        static = self.static.get(layer)
        dynamic = recipe.job is not None and recipe.job.factory is None
        if dynamic and self.call_tokens is not None and x.shape[0] > self.call_tokens:
            z = torch.cat([recipe_output(recipe, part, self.weights, layer, static)
                           for part in x.split(self.call_tokens)])  # one dynamic amax per call (sequence)
        else:
            z = recipe_output(recipe, x, self.weights, layer, static)
        y = z.sum(dim=1)
        if self.measure and layer in self.layers:
            reference = baselines.reference_output(x, self.weights.grouped(layer)).sum(dim=1)
            self.signal[layer] += reference.square().sum()
            self.noise[layer] += (y - reference).square().sum()
        return y.to(o.dtype)

    def sqnr_db(self) -> list[float]:
        """Per layer SQNR (dB) of the projection output over everything seen (NaN for layers not quantized)."""
        values = _sqnr_from(self.signal, self.noise).cpu().tolist()
        return [value if i in self.layers else float("nan") for i, value in enumerate(values)]
