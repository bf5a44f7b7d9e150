"""``nvfp4lab calibrate --transforms``: the transforms of :mod:`nvfp4lab.transforms.recipes`
on a user's grouped ``wo_a`` layer, each with two global-scale recipes, and the
recommendation over them and the plain rows by deployment cost.

:func:`evaluate_transforms` fits every available transform (default
:data:`~nvfp4lab.transforms.recipes.STUDY_TRANSFORMS`: Hadamard rotations of 16, of a head,
of 128; SmoothQuant with α searched; the weight recipes mse weights, four-over-six weights,
16x16 weights, gptq; and hadamard head + gptq) on the calibration tokens and evaluates it
on the held-out tokens with the global-scale recipes of :data:`TRANSFORM_MODES`:

* ``max | shared static``: one static scale, max-calibrated on the *transformed* calibration
  activations ``x'`` (every calibration token, streamed);
* ``dynamic | per_group dynamic``: per group the amax of the transformed held-out tokens,
  exactly as :func:`nvfp4lab.evaluation.evaluate`'s dynamic rows take the held-out set's amax.

Each row is measured as the plain rows are: the SQNR of ``ẑ = NVFP4(x')·Ŵ'`` (rounded to bf16
as a GEMM writes it; ``Ŵ'`` the NVFP4 weights of the transformed ``W'``) against the
float64 product ``x·W`` of the *untransformed* layer, over the held-out tokens, and its worst
group; clipping and subnormal block scales are counted on ``x'``. The fits that need the
activations themselves (SmoothQuant's α search, GPTQ's Hessian) use an evenly spaced sample
of at most :data:`FIT_SAMPLE_ELEMENTS` calibration elements. The results are
:class:`TransformResult` rows (an :class:`~nvfp4lab.evaluation.Result` with the transform's
label, its deployment cost and, for SmoothQuant, α).

Deployment in DeepSeek V4's ``wo_a`` (what :func:`deployment` writes): weight recipes run
offline and leave the served graph unchanged. Activation transforms must run *online*: V4's
values equal its keys (one RMS-normed latent per token, shared by all heads) and inverse RoPE
is applied to the attention output o before ``wo_a``, so neither a rotation nor per-channel
smoothing can fold into a value projection; it runs fused into o's activation quantizer, and
its inverse folds into ``wo_a``'s weights offline. (The block of a rotation must still divide
the head dimension D for :meth:`Transform.unavailable <nvfp4lab.transforms.recipes.Transform.unavailable>`,
which this module follows unchanged.)

:func:`recommend` extends :func:`nvfp4lab.evaluation.recommend` by that cost: see its docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from nvfp4lab import baselines, evaluation, metrics, streaming
from nvfp4lab.quantize import BLOCK, dequantize_nvfp4, global_scale_from_amax, quantize_nvfp4
from nvfp4lab.transforms.recipes import STUDY_TRANSFORMS, TRANSFORM_MODES, Transform, fit_transforms

#: A costlier row (a transform) must beat every cheaper row by this many dB of worst-group SQNR.
COSTLIER_MARGIN_DB = 0.5
#: SmoothQuant's α search and GPTQ's Hessian see at most this many calibration elements
#: (2^27: 512 MiB as float32, 4096 tokens of V4-Flash's wo_a), an evenly spaced sample of the
#: calibration tokens. GPTQ needs many more tokens than K (see :func:`fit_notes`).
FIT_SAMPLE_ELEMENTS = 1 << 27
#: Deployment cost ranks (:attr:`Transform.cost`) in words.
COST_NAMES = {0: "plain", 1: "weight-only transform", 2: "activation transform"}
#: The rotations whose block depends on the head dimension beyond the NVFP4 block of 16.
HEAD_DIM_ROTATIONS = ("hadamard head", "hadamard 128")
#: Why an activation transform cannot fold anywhere in DeepSeek V4's attention.
NO_FOLD_IN_V4 = ("no projection to fold it into in DeepSeek V4: its values equal its keys, one RMS-normed latent "
                 "per token, and inverse RoPE is applied to o before wo_a")
RULE = (
    f"{evaluation.RULE}; with transforms, rows rank by deployment cost (plain, then weight-only transforms, "
    "applied offline, then activation transforms, which run online in DeepSeek V4), and a costlier row is chosen "
    f"only when its worst-group SQNR beats that of every cheaper competing row by at least {COSTLIER_MARGIN_DB} dB "
    "(the rule above then applies among the costliest rows that do)"
)


@dataclass
class TransformResult(evaluation.Result):
    """A :class:`~nvfp4lab.evaluation.Result` row of a transform (``recipe``, ``mode`` one
    of :data:`TRANSFORM_MODES`) with:

    Attributes:
        transform: the transform's :attr:`~nvfp4lab.transforms.recipes.Transform.label`
            (``"hadamard head"``, ``"gptq"``, ``"hadamard head + gptq"``, …).
        cost: its deployment cost rank (:attr:`Transform.cost`: 1 weight-only, 2 activation).
        alpha: SmoothQuant's searched α (``None`` for other transforms).
    """

    transform: str = "none"
    cost: int = 0
    alpha: float | None = None


def transform_label(row: evaluation.Result) -> str:
    """The transform of any row: ``"none"`` for a plain :class:`~nvfp4lab.evaluation.Result`."""
    return getattr(row, "transform", "none")


def row_cost(row: evaluation.Result) -> int:
    """The deployment cost rank of any row (0 for a plain row)."""
    return getattr(row, "cost", 0)


def row_label(row: evaluation.Result) -> str:
    """``"recipe, mode"``, prefixed by the transform for a transform row."""
    prefix = f"{transform_label(row)} · " if row_cost(row) else ""
    return f"{prefix}{row.recipe}, {row.mode}"


def available_transforms(head_dim: int | None, k: int, transforms: Sequence[Transform] = STUDY_TRANSFORMS
                         ) -> tuple[list[Transform], list[str]]:
    """The transforms that run on a layer of contraction ``k`` and head dimension ``head_dim``
    (``None``: unknown), and one line per reason the others were skipped.

    With ``head_dim`` unknown, :data:`HEAD_DIM_ROTATIONS` (and their combinations) are skipped
    in one note; ``hadamard 16`` stays (its block is the NVFP4 block, which divides K)."""
    usable, notes = [], []
    if head_dim is None:
        skipped = [t.label for t in transforms if t.activation in HEAD_DIM_ROTATIONS]
        transforms = [t for t in transforms if t.activation not in HEAD_DIM_ROTATIONS]
        if skipped:
            notes.append(f"skipped {', '.join(skipped)}: their blocks must divide the head dimension, unknown for "
                         "activations given as (T, G, K); pass --head-dim D (or (T, H, D) activations) to add them")
    for t in transforms:
        reason = t.unavailable(head_dim if head_dim is not None else BLOCK, k)
        if reason:
            notes.append(f"skipped {t.label}: {reason}")
        else:
            usable.append(t)
    return usable, notes


def fit_sample_tokens(tokens: int, per_token: int, max_elements: int = FIT_SAMPLE_ELEMENTS) -> int:
    """Calibration tokens the fits see: ``min(tokens, max(1, max_elements // per_token))``."""
    return min(tokens, max(1, max_elements // max(1, per_token)))


def fit_notes(fit_tokens: int, k: int, transforms: Sequence[Transform]) -> list[str]:
    """A warning when GPTQ runs on fewer sample tokens than K (its Hessian is then rank-deficient)."""
    if fit_tokens >= k or not any(t.weights == "gptq" for t in transforms):
        return []
    return [f"gptq's Hessian comes from {fit_tokens} calibration tokens, fewer than K = {k}: it is rank-deficient, "
            "so GPTQ fits those tokens and may do worse than round-to-nearest on held-out ones; give more tokens"]


def _fit_sample(calibration: torch.Tensor, max_elements: int) -> torch.Tensor:
    """:func:`fit_sample_tokens` calibration tokens, evenly spaced, in order."""
    tokens = calibration.shape[0]
    wanted = fit_sample_tokens(tokens, calibration[0].numel(), max_elements)
    if wanted >= tokens:
        return calibration
    index = torch.linspace(0, tokens - 1, wanted, device=calibration.device).round().long()
    return calibration.index_select(0, index)


def _jobs() -> dict[str, evaluation.Job]:
    by_key = {(job.label, job.mode.name): job for job in evaluation.jobs(None)}
    return {mode: by_key[(recipe, mode)] for recipe, mode in TRANSFORM_MODES}


def evaluate_transforms(calibration: torch.Tensor, held_out: torch.Tensor, weights: torch.Tensor,
                        head_dim: int | None, *, device=None, transforms: Sequence[Transform] | None = None,
                        batch_tokens: int = 256, chunk_elements: int = streaming.CHUNK_ELEMENTS,
                        fit_sample_elements: int = FIT_SAMPLE_ELEMENTS, progress: bool = False
                        ) -> list[TransformResult]:
    """Fit and evaluate transforms on one grouped layer (see the module docstring).

    Args:
        calibration, held_out: ``(T, G, K)`` bf16/fp16/fp32 activations (any device; read in chunks).
        weights: ``(G, K, N)`` float.
        head_dim: D, or ``None`` when unknown (then :func:`available_transforms` skips the
            rotations that need it).
        device: where the work runs (default: ``held_out``'s device).
        transforms: default every available one of ``STUDY_TRANSFORMS``; given ones must all be
            available (``Transform()``, plain, reproduces evaluate's two plain rows).
        batch_tokens: tokens per calibration chunk (the static calibrators stream over them).
        chunk_elements: held-out tokens per evaluation chunk are ``chunk_elements // (G · max(K, N))``,
            as :func:`nvfp4lab.evaluation.evaluate`.
        fit_sample_elements: the α search's and GPTQ's calibration sample (:data:`FIT_SAMPLE_ELEMENTS`).

    Returns:
        Per transform (in order) its ``max | shared static`` and ``dynamic | per_group dynamic``
        rows, as :class:`TransformResult`.
    """
    if calibration.shape[0] == 0 or held_out.shape[0] == 0:
        raise ValueError(f"calibration {tuple(calibration.shape)} and held-out {tuple(held_out.shape)} "
                         "activations both need tokens")
    groups, k = held_out.shape[1], held_out.shape[2]
    if transforms is None:
        transforms, _ = available_transforms(head_dim, k)
    transforms = list(dict.fromkeys(transforms))
    fit_head_dim = head_dim if head_dim is not None else BLOCK
    for t in transforms:
        reason = t.unavailable(fit_head_dim, k) or (
            f"{t.activation} needs the head dimension" if head_dim is None and t.activation in HEAD_DIM_ROTATIONS
            else None)
        if reason:
            raise ValueError(reason)
    if not transforms:
        return []
    device = torch.device(device) if device is not None else held_out.device
    w = weights.to(device, torch.float32)
    by_activation: dict[str, list[Transform]] = {}
    for t in transforms:
        by_activation.setdefault(t.activation, []).append(t)

    # Fit, one activation transform at a time (its Hessian is freed before the next).
    sample = _fit_sample(calibration, fit_sample_elements).to(device, torch.float32)
    fitted = {}
    for group in tqdm(by_activation.values(), desc="fit transforms", disable=not progress):
        fitted.update(fit_transforms(group, sample, w, fit_head_dim))
    del sample
    apply = {a: fitted[group[0]].activations for a, group in by_activation.items()}

    # Static scales: max-calibrated on the transformed calibration tokens.
    jobs = _jobs()
    static_job, dynamic_job = jobs["shared static"], jobs["per_group dynamic"]
    calibrators = {a: static_job.calibrator() for a in apply}
    starts = range(0, calibration.shape[0], batch_tokens)
    for start in tqdm(starts, desc="calibrate transforms", unit="chunk", disable=not progress):
        chunk = calibration[start : start + batch_tokens].to(device, torch.float32)
        for a, calibrator in calibrators.items():
            calibrator.observe(apply[a](chunk))
    empty = held_out[:0].to(device, torch.float32)
    static = {a: static_job.mode.global_scale(empty, static_job.static_scale(c).to(device)).contiguous()
              for a, c in calibrators.items()}

    # Dynamic scales: the transformed held-out set's amax per group (one pass).
    per_token = groups * max(k, w.shape[-1])
    amax = {a: torch.zeros(groups, dtype=torch.float32, device=device) for a in apply}
    for _, chunk in streaming.token_chunks(held_out, chunk_elements, per_token):
        x = chunk.to(device, torch.float32)
        for a in apply:
            amax[a] = torch.maximum(amax[a], apply[a](x).abs().amax(dim=(0, 2)))
    dynamic = {a: (global_scale_from_amax(amax[a]) * dynamic_job.scale_factor).contiguous() for a in apply}

    scales = {(a, mode): (static if mode == "shared static" else dynamic)[a]
              for a in apply for _, mode in TRANSFORM_MODES}
    rows = {(t, mode): evaluation._Row(recipe, mode, scales[(t.activation, mode)])
            for t in transforms for recipe, mode in TRANSFORM_MODES}
    w64 = w.double()
    signal = torch.zeros(groups, dtype=torch.float64, device=device)
    chunks = list(streaming.token_chunks(held_out, chunk_elements, per_token))
    for _, chunk in tqdm(chunks, desc="evaluate transforms", unit="chunk", disable=not progress):
        x = chunk.to(device, torch.float32)
        reference = baselines.reference_output(x, w64)
        signal += reference.square().sum(dim=(0, 2))
        for a, group in by_activation.items():
            xa = apply[a](x)
            for _, mode in TRANSFORM_MODES:
                xq = quantize_nvfp4(xa, scales[(a, mode)], check_finite=False)
                x_hat = dequantize_nvfp4(xq)
                stats = metrics.quantization_stats(xa, xq)
                for t in group:
                    row = rows[(t, mode)]
                    z = baselines.grouped_matmul(x_hat, fitted[t].w_hat)
                    row.noise = row.noise + evaluation._noise(reference, z)
                    for key in row.counts:
                        row.counts[key] += stats[key]
    signal = signal.cpu()
    results = []
    for (t, _), row in rows.items():
        search = fitted[t].search
        results.append(TransformResult(**asdict(row.result(signal)), transform=t.label, cost=t.cost,
                                       alpha=search.alpha if search is not None else None))
    return results


def deployment(transform: str | Transform, alpha: float | None = None) -> str:
    """How to serve a transform in DeepSeek V4's ``wo_a``, in words."""
    t = Transform.parse(transform) if isinstance(transform, str) else transform
    steps = []
    if t.activation.startswith("hadamard"):
        block = {"hadamard 16": "16", "hadamard 128": "128"}.get(t.activation, "D (one per head)")
        steps.append(f"fold Rᵀ (block-{block} Hadamard) into wo_a's weights offline; rotate o online in the "
                     f"quantizer ({NO_FOLD_IN_V4})")
    elif t.activation == "smoothquant":
        steps.append("fold diag(s) into wo_a's weights offline; divide o by s online in the quantizer"
                     + (f" (α = {alpha:g}; " if alpha is not None else " (") + f"{NO_FOLD_IN_V4})")
    if t.weights == "gptq":
        steps.append("quantize wo_a's weights offline with GPTQ on the Hessian of the "
                     + ("transformed " if t.activation != "none" else "") + "calibration activations")
    elif t.weights != "rtn":
        steps.append(f"quantize wo_a's weights offline with {t.weights}")
    if t.activation == "none":
        steps.append("the served graph is unchanged")
    return "; ".join(steps) if steps else "nothing to fold: plain NVFP4"


def recommend(results: list[evaluation.Result]) -> tuple[evaluation.Result, str]:
    """The row to deploy among plain and transform rows, by :data:`RULE`.

    1. As :func:`nvfp4lab.evaluation.recommend`, only NVFP4 W4A4 rows compete, and among them
       only those that clip nothing on the held-out tokens (all of them if every one clips).
    2. Each competing row has a deployment cost (:func:`row_cost`): 0 plain, 1 a weight-only
       transform (offline; the served graph is unchanged), 2 an activation transform (online
       in DeepSeek V4's ``wo_a``, see the module docstring).
    3. A row of cost c *qualifies* when its worst-group SQNR is at least
       :data:`COSTLIER_MARGIN_DB` above the best worst-group SQNR of every competing row of
       lower cost (the cheapest competing rows always qualify).
    4. The costliest cost with qualifying rows is chosen, and among its qualifying rows
       :func:`nvfp4lab.evaluation.recommend`'s rule picks one: the highest worst-group SQNR,
       except that a static row within ``STATIC_PREFERENCE_DB`` of it is preferred.

    Without transform rows this is :func:`nvfp4lab.evaluation.recommend` (the same choice).
    Returns the row and the reason in words: the rule first, then the choice, the best row
    of each cost the choice beat or that fell short of the margin, and how to deploy it.
    """
    pool, clean = evaluation.competing_rows(results, row_label)
    costs = sorted({row_cost(r) for r in pool})
    tier, tier_cost = [r for r in pool if row_cost(r) == costs[0]], costs[0]
    for cost in costs[1:]:
        cheaper = max(r.worst_group_sqnr_db for r in pool if row_cost(r) < cost)
        qualifying = [r for r in pool if row_cost(r) == cost and r.worst_group_sqnr_db >= cheaper + COSTLIER_MARGIN_DB]
        if qualifying:
            tier, tier_cost = qualifying, cost
    best, choice = evaluation.prefer_static(tier)

    why = evaluation.explain_choice(RULE, clean, choice, best, row_label, COST_NAMES[tier_cost])
    for cost in costs:
        if cost == tier_cost:
            continue
        top = max((r for r in pool if row_cost(r) == cost), key=lambda r: r.worst_group_sqnr_db)
        gap = choice.worst_group_sqnr_db - top.worst_group_sqnr_db
        if cost < tier_cost:
            why += (f"; it beats the best {COST_NAMES[cost]} row, {row_label(top)} "
                    f"({top.worst_group_sqnr_db:.2f} dB), by {gap:.2f} dB")
        else:
            why += (f"; the best {COST_NAMES[cost]} row, {row_label(top)} ({top.worst_group_sqnr_db:.2f} dB), is "
                    + (f"{-gap:.2f} dB higher, short of the {COSTLIER_MARGIN_DB} dB margin over every cheaper row"
                       if gap < 0 else f"{gap:.2f} dB lower"))
    if row_cost(choice):
        why += f". Deploy: {deployment(transform_label(choice), getattr(choice, 'alpha', None))}"
    return choice, why


def as_rows(results: list[evaluation.Result]) -> list[dict]:
    """Every row as a dict with a ``transform`` field (``"none"``, cost 0 for plain rows)."""
    rows = []
    for r in results:
        row = asdict(r)
        row.setdefault("transform", "none")
        row.setdefault("cost", 0)
        row.setdefault("alpha", None)
        rows.append(row)
    return rows


def markdown_table(results: list[evaluation.Result], chosen: evaluation.Result | None = None) -> str:
    """:func:`nvfp4lab.evaluation.markdown_table` with a ``transform`` column after the mode."""
    lines = ["| recipe | mode | transform | SQNR of z (dB) | worst group (dB) | clipped | subnormal scales | |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        mark = "◀ recommended" if r is chosen else ""
        alpha = getattr(r, "alpha", None)
        transform = transform_label(r) + (f" (α = {alpha:g})" if alpha is not None else "")
        lines.append(f"| {r.recipe} | {r.mode} | {transform} | {r.sqnr_db:.2f} | {r.worst_group_sqnr_db:.2f} | "
                     f"{r.clipped_fraction:.2e} | {r.subnormal_scale_fraction:.2%} | {mark} |")
    return "\n".join(lines)
