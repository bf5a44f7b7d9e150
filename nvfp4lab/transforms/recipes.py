"""Transform recipes for a grouped layer ``z = einsum("tgk,gkn->tgn", x, W)``: which
transform runs on the activations and which quantizer makes the NVFP4 weights, fitted on
calibration activations and applied the same way wherever the layer runs.

A :class:`Transform` is a pair (activation transform, weight recipe):

=====================  ====================================================================
activation             ``x' = x·A``, ``W' = A⁻¹·W`` (``x' W' = x W`` in real numbers)
=====================  ====================================================================
``none``               ``A = I``
``hadamard 16``        ``A = I ⊗ Ĥ_16`` (one Hadamard per NVFP4 block; :mod:`.hadamard`)
``hadamard head``      ``A = I ⊗ Ĥ_D``, D the head dimension (one Hadamard per head)
``hadamard 128``       ``A = I ⊗ Ĥ_128`` (an FP8 block); only where 128 divides D
``smoothquant``        ``A = diag(s)⁻¹``, ``s = a^α / w^(1−α)`` per channel, α searched on
                       the calibration activations (:func:`.smoothing.search_alpha`, NVFP4
                       W4A4 with per-group dynamic scales), tied across the query heads
                       that share a KV head when ``shared_kv`` is given
=====================  ====================================================================

=========================  ===============================================================
weights                    ``Ŵ`` = the NVFP4 weights of ``W'``
=========================  ===============================================================
``rtn``                    round to nearest, ``amax_g / 2688`` per group (the definition;
                           equals :func:`nvfp4lab.baselines.nvfp4_weights` bit for bit)
``mse weights``            per-group global scale by weight-MSE search
                           (:func:`.weights.mse_global_scale`, ModelOpt's ``mse``)
``four-over-six weights``  each block keeps its amax → 6 or → 4 (:func:`.weights.four_over_six_weights`)
``16x16 weights``          one E4M3 scale per 16×16 tile (:func:`.weights.quantize_weights_2d`)
``gptq``                   GPTQ with the Hessian of the transformed calibration activations
                           (:func:`.gptq.gptq_quantize`, damping 0.01, blocks of 128)
=========================  ===============================================================

Every block size must divide the head dimension D so that the rotation is the same in every
head (it then folds into a decoder's value projection, :func:`.hadamard.fold_into_value_projection`)
and K (it never straddles a group). :func:`fit_transforms` fits a list of transforms on one
layer's calibration activations, sharing what they share (one α search, one Hessian per
activation transform); :class:`FittedTransform` applies one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from nvfp4lab import baselines
from nvfp4lab.transforms import _checks as c
from nvfp4lab.transforms.gptq import gptq_quantize, hessian
from nvfp4lab.transforms.hadamard import fold_into_weights, rotate_activations
from nvfp4lab.transforms.smoothing import AlphaSearch, search_alpha, smooth
from nvfp4lab.transforms.weights import four_over_six_weights, mse_global_scale, quantize_weights, quantize_weights_2d

ACTIVATION_TRANSFORMS = ("none", "hadamard 16", "hadamard head", "hadamard 128", "smoothquant")
WEIGHT_RECIPES = ("rtn", "mse weights", "four-over-six weights", "16x16 weights", "gptq")
_FIXED_BLOCKS = {"hadamard 16": 16, "hadamard 128": 128}


@dataclass(frozen=True)
class Transform:
    """An activation transform (:data:`ACTIVATION_TRANSFORMS`) and a weight recipe
    (:data:`WEIGHT_RECIPES`). ``Transform()`` is plain NVFP4: no transform, RTN weights."""

    activation: str = "none"
    weights: str = "rtn"

    def __post_init__(self):
        if self.activation not in ACTIVATION_TRANSFORMS:
            raise ValueError(f"unknown activation transform {self.activation!r}; choose one of {ACTIVATION_TRANSFORMS}")
        if self.weights not in WEIGHT_RECIPES:
            raise ValueError(f"unknown weight recipe {self.weights!r}; choose one of {WEIGHT_RECIPES}")

    @property
    def label(self) -> str:
        """``"none"``, ``"hadamard head"``, ``"gptq"`` or ``"hadamard head + gptq"``."""
        parts = [p for p, plain in ((self.activation, "none"), (self.weights, "rtn")) if p != plain]
        return " + ".join(parts) or "none"

    @classmethod
    def parse(cls, label: str) -> Transform:
        """The inverse of :attr:`label`."""
        if label == "none":
            return cls()
        activation, weights = "none", "rtn"
        for part in label.split(" + "):
            if part in ACTIVATION_TRANSFORMS and activation == "none":
                activation = part
            elif part in WEIGHT_RECIPES and weights == "rtn":
                weights = part
            else:
                raise ValueError(f"cannot read the transform {label!r}: {part!r} is neither one of "
                                 f"{ACTIVATION_TRANSFORMS} nor of {WEIGHT_RECIPES}, or repeats a kind")
        transform = cls(activation, weights)
        if transform.label != label:
            raise ValueError(f"cannot read the transform {label!r}: write it as {transform.label!r}")
        return transform

    @property
    def is_plain(self) -> bool:
        return self.activation == "none" and self.weights == "rtn"

    def block(self, head_dim: int) -> int | None:
        """The Hadamard block size (``None`` when the activation transform is no rotation)."""
        if self.activation == "hadamard head":
            return head_dim
        return _FIXED_BLOCKS.get(self.activation)

    def unavailable(self, head_dim: int, k: int) -> str | None:
        """Why this transform cannot run on a layer with head dimension ``head_dim`` and
        contraction ``k`` (``None`` when it can)."""
        block = self.block(head_dim)
        if block is None:
            return None
        if block & (block - 1) or head_dim % block:
            return (f"{self.activation} needs a power-of-two block dividing the head dimension {head_dim} "
                    f"(block {block}): a rotation spanning heads does not fold into the value projection")
        if k % block:
            return f"{self.activation}: block {block} does not divide K = {k}"
        return None

    @property
    def cost(self) -> int:
        """Deployment cost rank: 0 plain, 1 weights only (offline; the served graph is
        unchanged), 2 an activation transform (folded into the projection feeding x, or online)."""
        return 2 if self.activation != "none" else int(self.weights != "rtn")


#: The global-scale recipes ``(calibration recipe, scale mode)`` every transform is evaluated with,
#: by the model study and ``nvfp4lab calibrate --transforms``: the cheapest to serve (one static
#: max-calibrated scale per GEMM) and the most adaptive (one dynamic scale per group and call).
TRANSFORM_MODES = (("max", "shared static"), ("dynamic", "per_group dynamic"))

#: The transforms the model-level study evaluates: each activation transform with RTN weights,
#: each weight recipe alone, and the per-head rotation with GPTQ.
STUDY_TRANSFORMS = (
    *(Transform(a) for a in ACTIVATION_TRANSFORMS[1:]),
    *(Transform("none", w) for w in WEIGHT_RECIPES[1:]),
    Transform("hadamard head", "gptq"),
)


@dataclass
class FittedTransform:
    """A :class:`Transform` fitted on one layer: apply :meth:`activations` to ``x (T, G, K)``
    and multiply by ``w_hat``.

    Attributes:
        transform: what was fitted.
        block: the Hadamard block (or ``None``).
        smoothing: ``s (G, K)`` float32 of a smoothquant transform (or ``None``).
        search: the α search of a smoothquant transform (or ``None``).
        weights: ``W' (G, K, N)`` float32, the transformed unquantized weights.
        w_hat: ``(G, K, N)`` float64, the NVFP4 weights of ``W'`` dequantized.
    """

    transform: Transform
    block: int | None
    smoothing: torch.Tensor | None
    search: AlphaSearch | None
    weights: torch.Tensor
    w_hat: torch.Tensor

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """``x' (T, G, K)`` float32 of ``x (T, G, K)`` (G and K those the transform was fitted
        for; only the shape is checked here: this runs on every forward call)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or tuple(x.shape[1:]) != tuple(self.weights.shape[:2]):
            raise ValueError(f"x must be (T, G, K) = (T, {', '.join(map(str, self.weights.shape[:2]))}) for this "
                             f"fitted {self.transform.label!r}; got {tuple(getattr(x, 'shape', ())) or type(x).__name__}")
        if self.block is not None:
            return rotate_activations(x, self.block)
        if self.smoothing is not None:
            return x.to(torch.float32) / self.smoothing.to(x.device)
        return x.to(torch.float32)


def _quantized_weights(weights: str, w: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
    if weights == "rtn":
        return baselines.nvfp4_weights(w)
    if weights == "mse weights":
        return quantize_weights(w, mse_global_scale(w).global_scale).dequantized.double()
    if weights == "four-over-six weights":
        return four_over_six_weights(w).dequantized.double()
    if weights == "16x16 weights":
        return quantize_weights_2d(w).dequantized.double()
    return gptq_quantize(w, h).dequantized.double()


def fit_transforms(transforms: Sequence[Transform], x_cal: torch.Tensor, w: torch.Tensor, head_dim: int, *,
                   shared_kv: tuple[int, int] | None = None) -> dict[Transform, FittedTransform]:
    """Fit ``transforms`` on one layer.

    Args:
        transforms: each must be available (:meth:`Transform.unavailable`).
        x_cal: ``(T, G, K)`` calibration activations (finite; float32 or wider).
        w: ``(G, K, N)`` the layer's weights.
        head_dim: D (the block of ``hadamard head``; every block must divide it).
        shared_kv: ``(heads, kv_heads)`` when the query heads sharing a KV head must share
            their smoothing scales (so they fold into the value projection).

    Returns:
        ``{transform: FittedTransform}``; the α search and each activation transform's
        Hessian (for GPTQ) are computed once and shared.
    """
    c.float_tensor(x_cal, "x_cal", 3, "(T, G, K)")
    c.float_tensor(w, "w", 3, "(G, K, N)")
    if x_cal.shape[1:] != w.shape[:2]:
        raise ValueError(f"x_cal (T, G, K) = {tuple(x_cal.shape)} and w (G, K, N) = {tuple(w.shape)} disagree on G, K")
    c.positive_int(head_dim, "head_dim")
    for t in transforms:
        reason = t.unavailable(head_dim, w.shape[1])
        if reason:
            raise ValueError(reason)
    w32 = w.to(torch.float32)
    prepared: dict[str, tuple] = {}  # activation -> (block, s, search, W', x'_cal)
    hessians: dict[str, torch.Tensor] = {}
    fitted = {}
    for t in transforms:
        if t.activation not in prepared:
            block, s, search = t.block(head_dim), None, None
            if block is not None:
                w_prime, x_prime = fold_into_weights(w32, block), rotate_activations(x_cal, block)
            elif t.activation == "smoothquant":
                search = search_alpha(x_cal, w32, shared_kv=shared_kv)
                s = search.scales
                x_prime, w_prime = smooth(x_cal.to(torch.float32), w32, s)
            else:
                x_prime, w_prime = x_cal.to(torch.float32), w32
            prepared[t.activation] = (block, s, search, w_prime.contiguous(), x_prime)
        block, s, search, w_prime, x_prime = prepared[t.activation]
        h = None
        if t.weights == "gptq":
            if t.activation not in hessians:
                hessians[t.activation] = hessian(x_prime)
            h = hessians[t.activation]
        fitted[t] = FittedTransform(t, block, s, search, w_prime, _quantized_weights(t.weights, w_prime, h))
    return fitted


def activation_statistics(x: torch.Tensor) -> dict[str, float]:
    """What an activation transform changes in ``x (T, G, K)``, for the notebook's "why":

    * ``kurtosis``: ``E[(x − μ)⁴] / Var(x)²`` over all elements (3 for a Gaussian; outliers
      raise it);
    * ``block_max_over_mean``: the mean over 16-element blocks of ``max|x| / mean|x|`` (1 for
      a flat block, 16 for one spike; blocks of zeros left out) — what an E4M3 block scale
      must span;
    * ``zero_code_fraction``: the fraction of elements NVFP4 (per-group dynamic scales) codes
      as zero — the small values a block's outlier flushes;
    * ``sqnr_db``: ``10 log10(Σ x² / Σ (x − x̂)²)`` of that quantization.
    """
    from nvfp4lab.quantize import dequantize_nvfp4, dynamic_global_scale, quantize_nvfp4

    c.float_tensor(x, "x", 3, "(T, G, K)")
    c.block_multiple_of_16(x.shape[-1], "x")
    if x.shape[0] == 0:
        raise ValueError("x has no tokens: its statistics need at least one")
    x64 = x.double()
    centred = x64 - x64.mean()
    variance = centred.square().mean()
    kurtosis = float(centred.pow(4).mean() / variance.square()) if variance > 0 else float("nan")
    blocks = x64.abs().reshape(-1, 16)
    mean = blocks.mean(dim=1)
    live = mean > 0
    ratio = float((blocks.amax(dim=1)[live] / mean[live]).mean()) if bool(live.any()) else float("nan")
    x32 = x.to(torch.float32)
    x_hat = dequantize_nvfp4(quantize_nvfp4(x32, dynamic_global_scale(x32, per_group=True), check_finite=False)).double()
    noise = (x64 - x_hat).square().sum()
    sqnr = float(10 * torch.log10(x64.square().sum() / noise)) if noise > 0 else float("inf")
    return {"kurtosis": kurtosis, "block_max_over_mean": ratio,
            "zero_code_fraction": float((x_hat == 0).double().mean()), "sqnr_db": sqnr}
