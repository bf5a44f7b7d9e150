"""Model-level quality of every recipe on a real decoder LM.

:func:`evaluate_model` loads a GGUF decoder, tokenizes a calibration text and a held-out
text (by default the two parts of :mod:`.corpus`, which never overlap), and:

1. runs the ``bf16`` model on the calibration tokens, capturing every layer's attention output
   ``x (T, G, K)``; each static recipe's global scales are calibrated per layer on these
   (and only these) tokens;
2. runs the held-out tokens with *every* layer's ``o_proj`` replaced by each recipe
   (:func:`nvfp4lab.models.projection.all_recipes`) and measures, against the ``bf16`` model:
   perplexity ``exp(mean −log p(next token))``, mean ``KL(p_bf16 ‖ p_recipe)`` (nats) of the
   next-token distributions, top-1 agreement, and per layer the SQNR of the projection output
   against the unquantized float64 projection of the same input;
3. per-layer sensitivity: the mean KL when only that layer runs ``sensitivity_recipe`` (the
   other layers bf16), restarting from the bf16 residual stream entering the layer;
4. activation statistics per layer on the calibration tokens: the spread of the groups' amax
   (decades), the outlier-token ratio (largest token amax / median token amax) and where the
   outliers sit (position 0 of a sequence: the BOS or first token), and the mean attention
   weight on position 0 (attention sinks).

Sequences are consecutive ``seq_len``-token windows (a BOS prepended when the file asks for
one); every position but the last predicts the next token. Each window is one forward call:
dynamic scales are the amax of that window's tokens (never of the batch it happens to run in),
so the results do not depend on ``batch_sequences`` beyond float rounding. The per-window sums
of every recipe are kept: they are the units of the 95 % intervals (:mod:`.intervals`).
Results are cached per process (:func:`cached_evaluation`). The weights are the GGUF file's
own (SmolLM2: Q4_1, Gemma 3: Q4_K, Qwen2.5-Coder: Q5_0 o_proj; :attr:`ModelEvaluation.weight_type`):
W4A4 rows re-quantize them to NVFP4, W16A4 rows keep them; the activations are real.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from tqdm import tqdm

from nvfp4lab.evaluation import jobs
from nvfp4lab.models import corpus, packaged, tokenizer
from nvfp4lab.models.decoder import Decoder
from nvfp4lab.models.projection import (LayerWeights, Recipe, RecipeProjection, all_recipes, check_groups,
                                         label_of, transform_recipes)
from nvfp4lab.transforms.recipes import Transform, activation_statistics, fit_transforms

SENSITIVITY_RECIPE = ("dynamic", "per_group dynamic")
RECIPE_SETS = ("scales", "transforms", "all")
CALIBRATION_BATCH_TOKENS = 256
CHARS_PER_TOKEN_GUESS = 8  # tokenize only a prefix of a long text: enough for the tokens asked for


@dataclass
class Row:
    """One recipe's results on the held-out windows. ``window_*`` are per-window **sums**
    over the window's predictions (``ModelEvaluation.window_positions`` of them) of the
    negative log-likelihood of the next token, KL(bf16 ‖ recipe) and top-1 agreement with
    bf16: the units the intervals resample (:mod:`nvfp4lab.models.intervals`)."""

    recipe: str
    mode: str
    perplexity: float
    kl: float
    top1_agreement: float
    layer_sqnr_db: list[float]
    operands: str = "-"  # "-" (a baseline), "W4A4" or "W16A4"
    window_nll: list[float] = field(default_factory=list)
    window_kl: list[float] = field(default_factory=list)
    window_top1: list[float] = field(default_factory=list)
    transform: str = "none"  # Transform.label: "none", "hadamard head", "gptq", …

    @property
    def label(self) -> str:
        return label_of(self.recipe, self.mode, self.operands, self.transform)

    @property
    def is_nvfp4(self) -> bool:
        return self.operands in ("W4A4", "W16A4")

    @property
    def mean_layer_sqnr_db(self) -> float:
        return float(sum(self.layer_sqnr_db) / len(self.layer_sqnr_db))


@dataclass
class ModelEvaluation:
    model: str
    architecture: str
    heads: int
    groups: int
    tokens: int  # held-out predictions
    calibration_tokens: int
    seq_len: int
    rows: list[Row]
    sensitivity_recipe: str
    sensitivity_kl: list[float]
    group_spread_decades: list[float]
    outlier_token_ratio: list[float]
    outliers_at_first_position: list[float]
    first_token_attention: list[float]
    notes: list[str] = field(default_factory=list)
    window_positions: list[int] = field(default_factory=list)  # predictions per held-out window
    sensitivity_window_kl: list[list[float]] = field(default_factory=list)  # (layers, windows) KL sums
    text: str = "kjv"  # the held-out text
    calibration_text: str = "kjv"  # the text the static scales were calibrated on
    weight_type: str = ""  # the GGUF storage type of the o_proj weights (e.g. Q4_1)
    recipe_set: str = "scales"  # "scales" (the global-scale recipes) or "transforms" (RECIPE_SETS)
    head_dim: int = 0
    #: per activation transform (``"none"``, ``"hadamard head"``, …), per layer, the statistics
    #: of the transformed calibration activations (:func:`~nvfp4lab.transforms.recipes.activation_statistics`)
    activation_stats: dict = field(default_factory=dict)
    #: per layer, the smoothing strength α the search chose (transform studies)
    smoothing_alpha: list[float] = field(default_factory=list)

    def row(self, recipe: str, mode: str = "-", operands: str | None = None, transform: str = "none") -> Row:
        """The row of ``recipe``, ``mode`` and ``transform``; NVFP4 rows default to W4A4."""
        operands = operands or ("-" if mode == "-" else "W4A4")
        key = (recipe, mode, operands, transform)
        try:
            return next(r for r in self.rows if (r.recipe, r.mode, r.operands, r.transform) == key)
        except StopIteration:
            raise KeyError(f"no row {label_of(recipe, mode, operands, transform)!r} in the evaluation of "
                           f"{self.model}") from None

    def as_dict(self) -> dict:
        out = asdict(self)
        for row, record in zip(self.rows, out["rows"]):
            record["mean_layer_sqnr_db"] = row.mean_layer_sqnr_db
        return out


def token_windows(path, text: str, tokens: int, seq_len: int, what: str) -> torch.Tensor:
    """``(tokens // seq_len, seq_len)`` int64 consecutive windows of the tokenized text."""
    ids = tokenizer.encode(path, text[: tokens * CHARS_PER_TOKEN_GUESS])
    if len(ids) < tokens and len(text) > tokens * CHARS_PER_TOKEN_GUESS:
        ids = tokenizer.encode(path, text)
    if len(ids) < tokens:
        raise ValueError(f"the {what} text is too short: {len(ids)} tokens, need {tokens}")
    return torch.tensor(ids[: tokens // seq_len * seq_len], dtype=torch.int64).view(-1, seq_len)


def compare(reference_logp: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sequence sums ``(B, 3)`` float64 on the CPU of (−log p(target), KL(ref ‖ this),
    top-1 agreement) over the predictions.

    ``reference_logp (B, S−1, V)``: the bf16 model's log-probabilities of the next token at
    positions ``0 … S−2``; ``logits (B, S, V)``: this recipe's logits at every position (the
    last predicts past the window and is dropped); ``targets (B, S−1)``: the tokens at
    positions ``1 … S−1``, i.e. ``ids[:, 1:]``. KL(ref ‖ q) = Σ_v p_ref(v)·(log p_ref(v) − log q(v))."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, targets[..., None])[..., 0].sum(-1)
    kl = (reference_logp.exp() * (reference_logp - logp)).sum(dim=(-1, -2))
    agree = (reference_logp.argmax(-1) == logp.argmax(-1)).sum(-1)
    return torch.stack((nll.double(), kl.double(), agree.double()), dim=-1).cpu()


def scale_key(recipe: Recipe) -> tuple[str, str, str]:
    """Static scales belong to a calibration recipe, a mode and the activation transform they
    see, whatever the weights are."""
    return recipe.name, recipe.mode, recipe.transform.activation


def fit_layer_transforms(weights: LayerWeights, layer: int, x_cal: torch.Tensor, transforms) -> None:
    """Fit ``transforms`` on ``layer``'s calibration activations ``x_cal (T, G, K)`` into
    ``weights.fitted``: rotations by the head dimension, smoothing scales tied across the
    query heads that share a KV head (so they fold into the value projection), GPTQ's Hessian."""
    config = weights.decoder.config
    fitted = fit_transforms(transforms, x_cal, weights.grouped(layer), config.head_dim,
                            shared_kv=(config.heads, config.kv_heads))
    weights.fitted.update({(layer, t): f for t, f in fitted.items()})


def _calibrate(decoder: Decoder, weights: LayerWeights, windows: torch.Tensor, batch: int, recipes, progress):
    """Capture the bf16 model's attention outputs on the calibration windows; return the
    static scales ``{scale_key(recipe): {layer: (G,)}}`` (W4A4 and W16A4 rows of one calibration
    recipe and mode share them) and the activation statistics."""
    layers = decoder.config.layers
    captured: list[list[torch.Tensor]] = [[] for _ in range(layers)]
    bf16 = RecipeProjection(Recipe("bf16", "-"), weights, measure=False)
    groups = weights.groups

    def capture(layer, o, w):
        captured[layer].append(o.reshape(o.shape[0], groups, -1).float())  # stays on the model's device
        return bf16(layer, o, w)

    seq_full = None
    for start in range(0, windows.shape[0], batch):
        ids = decoder.with_bos(windows[start : start + batch])
        seq_full = ids.shape[1]
        decoder.hidden_states(ids, capture)
    static: dict = {scale_key(r): {} for r in recipes if r.job is not None and r.job.factory}
    transforms = list(dict.fromkeys(r.transform for r in recipes if r.job is not None and not r.transform.is_plain))
    activations = list(dict.fromkeys(["none", *(t.activation for t in transforms)])) if transforms else []
    activation_stats: dict = {a: [] for a in activations}
    alphas = []
    spread, ratio, at_first = [], [], []
    for layer in tqdm(range(layers), desc="calibrating static scales" + (" and transforms" if transforms else ""),
                      disable=not progress, leave=False):
        x = torch.cat(captured[layer])  # (T, G, K)
        if transforms:
            fit_layer_transforms(weights, layer, x, transforms)
        by_activation = {t.activation: weights.fitted[(layer, t)] for t in transforms}
        transformed = {"none": x, **{a: f.activations(x) for a, f in by_activation.items() if a != "none"}}
        for a in activations:
            activation_stats[a].append(activation_statistics(transformed[a]))
        if "smoothquant" in by_activation:
            alphas.append(by_activation["smoothquant"].search.alpha)
        by_key = {(j.label, j.mode.name): j for j in jobs(weights.grouped(layer))}
        for key in static:
            xt = transformed[key[2]]
            static[key][layer] = by_key[key[:2]].calibrate(xt[s : s + CALIBRATION_BATCH_TOKENS]
                                                           for s in range(0, xt.shape[0], CALIBRATION_BATCH_TOKENS))
        group_amax = x.abs().amax(dim=(0, 2))
        spread.append(float(torch.log10(group_amax.max() / group_amax.min().clamp_min(1e-30))))
        token_amax = x.abs().amax(dim=(1, 2))
        ratio.append(float(token_amax.max() / token_amax.median().clamp_min(1e-30)))
        top = torch.topk(token_amax, max(1, token_amax.numel() // 100)).indices  # the top 1 % tokens
        at_first.append(float((top % seq_full == 0).double().mean()))
        captured[layer] = []
    return static, spread, ratio, at_first, {"activation_stats": activation_stats, "smoothing_alpha": alphas}


@torch.no_grad()
def evaluate_model(path: str | Path, *, groups: int, tokens: int, calibration_tokens: int | None = None,
                   seq_len: int = 128, batch_sequences: int = 2, device: str | None = None,
                   dtype: torch.dtype = torch.float32, texts: tuple[str, str] | None = None,
                   sensitivity: bool = True, include_mse: bool = True, activation_only: bool = True,
                   progress: bool = True, text_names: tuple[str, str] = ("kjv", "kjv"),
                   recipe_set: str = "scales") -> ModelEvaluation:
    """Evaluate every recipe on the decoder LM in the GGUF file ``path`` with ``groups``
    head groups, on ``tokens`` held-out tokens in windows of ``seq_len`` (calibrating on
    ``calibration_tokens``, default ``tokens``). ``texts = (calibration, held_out)``
    defaults to the KJV parts of :mod:`.corpus`; ``text_names`` names them in the result.
    Every recipe runs on the same held-out windows; per window the sums of NLL, KL and top-1
    are kept (the units of the intervals).

    ``recipe_set``: ``"scales"`` evaluates :func:`~nvfp4lab.models.projection.all_recipes`
    (every global-scale recipe); ``"transforms"`` evaluates
    :func:`~nvfp4lab.models.projection.transform_recipes` (rotations, smoothing and weight
    recipes with two global-scale recipes), fits each transform per layer on the
    calibration activations and records the transformed activations' statistics; ``"all"``
    evaluates both (the plain rows once)."""
    if tokens < 2:
        raise ValueError(f"tokens must be at least 2; got {tokens}")
    if recipe_set not in RECIPE_SETS:
        raise ValueError(f"recipe_set must be one of {RECIPE_SETS}; got {recipe_set!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    decoder = Decoder.from_gguf(path, device, dtype)
    check_groups(decoder.config.heads, groups)
    weights = LayerWeights(decoder, groups)
    calibration_tokens = calibration_tokens or tokens
    seq_len = min(seq_len, tokens, calibration_tokens)
    calibration_text, held_out_text = texts or (corpus.calibration_text(), corpus.held_out_text())
    calibration = token_windows(path, calibration_text, calibration_tokens, seq_len, "calibration")
    held_out = token_windows(path, held_out_text, tokens, seq_len, "held-out")
    config = decoder.config
    transformed = transform_recipes(config.head_dim, config.attention_width // groups)
    recipes = {"scales": all_recipes(include_mse, activation_only), "transforms": transformed,
               "all": all_recipes(include_mse, activation_only)
               + [r for r in transformed if r.job is not None and not r.transform.is_plain]}[recipe_set]
    static, spread, ratio, at_first, transform_info = _calibrate(decoder, weights, calibration, batch_sequences,
                                                                 recipes, progress)

    call_tokens = decoder.with_bos(held_out[:1]).shape[1]  # one window is one forward call: its own dynamic amax
    projections = {r.label: RecipeProjection(r, weights, static.get(scale_key(r)), call_tokens=call_tokens)
                   for r in recipes}
    sensitivity_recipe = next(r for r in recipes if (r.name, r.mode, r.operands) == (*SENSITIVITY_RECIPE, "W4A4")
                              and r.transform.is_plain)
    layers = decoder.config.layers
    per_window = {r.label: [] for r in recipes}  # [(B, 3)] per batch
    sensitivity_kl: list[list[torch.Tensor]] = [[] for _ in range(layers)]
    window_positions: list[int] = []
    stats: dict = {}
    batches = range(0, held_out.shape[0], batch_sequences)
    steps = len(batches) * (len(recipes) + (layers if sensitivity else 0))
    name = model_name(path, decoder.config.name)
    bar = tqdm(total=steps, desc=f"{name}: {len(recipes)} recipes × {len(batches)} held-out batches",
               disable=not progress, leave=False)
    for start in batches:
        ids = decoder.with_bos(held_out[start : start + batch_sequences]).to(decoder.device)
        targets = ids[:, 1:]
        states = decoder.hidden_states(ids, projections["bf16"], stats=stats)
        reference_logp = torch.log_softmax(decoder.head(states[-1])[:, :-1], dim=-1)
        window_positions += [targets.shape[1]] * targets.shape[0]
        for recipe in recipes:
            logits = decoder.head(states[-1]) if recipe.name == "bf16" else decoder.logits(ids, projections[recipe.label])
            per_window[recipe.label].append(compare(reference_logp, logits, targets))
            bar.update()
        if sensitivity:
            for layer in range(layers):
                one = RecipeProjection(sensitivity_recipe, weights, static.get(scale_key(sensitivity_recipe)),
                                       layers=[layer], measure=False, call_tokens=call_tokens)
                logits = decoder.logits(ids, one, start=layer, x=states[layer])
                sensitivity_kl[layer].append(compare(reference_logp, logits, targets)[:, 1])
                bar.update()
    bar.close()
    positions = sum(window_positions)
    rows = []
    for r in recipes:
        sums = torch.cat(per_window[r.label])  # (windows, 3)
        total = sums.sum(0)
        rows.append(Row(r.name, r.mode, math.exp(total[0] / positions), float(total[1] / positions),
                        float(total[2] / positions), projections[r.label].sqnr_db(), r.operands if r.is_nvfp4 else "-",
                        sums[:, 0].tolist(), sums[:, 1].tolist(), sums[:, 2].tolist(), r.transform.label))
    sensitivity_windows = [torch.cat(kl).tolist() for kl in sensitivity_kl] if sensitivity else []
    attention = stats.get("first_token_attention", [])
    first_attention = [sum(attention[i::layers]) / len(attention[i::layers]) for i in range(layers)] if attention else []
    weight_type = "/".join(packaged.weight_types(path))
    evaluation = ModelEvaluation(
        model=name, architecture=decoder.config.architecture,
        heads=decoder.config.heads, groups=groups, tokens=positions, calibration_tokens=int(calibration.numel()),
        seq_len=seq_len, rows=rows, sensitivity_recipe=f"{sensitivity_recipe.name} | {sensitivity_recipe.mode}",
        sensitivity_kl=[sum(kl) / positions for kl in sensitivity_windows],
        group_spread_decades=spread, outlier_token_ratio=ratio, outliers_at_first_position=at_first,
        first_token_attention=first_attention,
        notes=[f"weights are the GGUF file's ({weight_type or 'storage type unknown'} o_proj); activations are real"],
        window_positions=window_positions, sensitivity_window_kl=sensitivity_windows,
        text=text_names[1], calibration_text=text_names[0], weight_type=weight_type,
        recipe_set=recipe_set, head_dim=config.head_dim, **transform_info,
    )
    # the calibrated scales, for an export of the chosen recipe (not a field: not serialized)
    evaluation.static_scales = {r.label: static[scale_key(r)] for r in recipes if scale_key(r) in static}
    return evaluation


def model_name(path, fallback: str) -> str:
    """The packaged model's display name when ``path`` is one, else the file's own name."""
    return packaged.display_name_of_path(path) or fallback


#: fast mode: SmolLM2 on the KJV, 1008 held-out predictions in 16 windows of 64 (the units
#: of the intervals), static scales calibrated on 512 other tokens, MSE recipes left out.
FAST = {"model": "smollm2", "groups": 3, "tokens": 1024, "calibration_tokens": 512, "seq_len": 64,
        "include_mse": False, "text": "kjv", "calibration_text": "kjv", "batch_sequences": 4}
#: full mode (a GPU): three models × three texts, 8192 held-out tokens in 32 windows of 256;
#: the W16A4 rows and the per-layer sensitivity on the KJV only (a GPU's time is lent by the minute).
FULL_MODELS = (("smollm2", 3), ("gemma3", 2), ("qwen2coder", 7))
FULL_TEXTS = ("kjv", "code", "prose")
FULL = tuple({"model": model, "groups": groups, "tokens": 8192, "calibration_tokens": 2048, "seq_len": 256,
              "include_mse": True, "text": text, "calibration_text": text, "batch_sequences": 16,
              "sensitivity": text == "kjv", "activation_only": text == "kjv"}
             for text in FULL_TEXTS for model, groups in FULL_MODELS)
#: the cross-text experiment: static scales calibrated on the KJV, evaluated on the other texts
#: (compared, on the same held-out windows, with scales calibrated on the held-out text's own
#: calibration part).
CROSS_TEXT = tuple({**config, "calibration_text": "kjv", "sensitivity": False, "activation_only": False}
                   for config in FULL if config["text"] != "kjv")
#: the transform study: rotations, smoothing and weight recipes with two global-scale recipes
#: (transform_recipes), on the same windows as the scale study: fast (SmolLM2 on the KJV) and
#: full (three models × three texts).
FAST_TRANSFORMS = {**FAST, "sensitivity": False, "activation_only": False, "recipe_set": "transforms"}
FULL_TRANSFORMS = tuple({**config, "sensitivity": False, "activation_only": False, "recipe_set": "transforms"}
                        for config in FULL)
CACHE = Path(__file__).resolve().parents[2] / "data" / "generated" / "decoder-evaluations"


NUMERICS = ("models/gguf_weights.py", "models/tokenizer.py", "models/decoder.py", "models/projection.py",
            "models/corpus.py", "models/evaluate.py", "evaluation.py", "baselines.py", "quantize.py", "formats.py",
            "scale_modes.py", "metrics.py", "calibration/*.py", "transforms/*.py")


def _code_version() -> str:
    """A hash of the source that makes the numbers (:data:`NUMERICS`) and of torch's
    version: a cached result is reused only by the code that made it."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(torch.__version__.encode())
    for pattern in NUMERICS:
        for source in sorted(package.glob(pattern)):
            digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def from_dict(record: dict) -> ModelEvaluation:
    record = dict(record)
    record["rows"] = [Row(**{k: v for k, v in row.items() if k != "mean_layer_sqnr_db"}) for row in record["rows"]]
    return ModelEvaluation(**record)


def text_parts(calibration_text: str, text: str) -> tuple[str, str]:
    """The calibration part of ``calibration_text`` and the held-out part of ``text`` (names of
    :data:`nvfp4lab.models.corpus.TEXTS`)."""
    return corpus.calibration_text(calibration_text), corpus.held_out_text(text)


@lru_cache(maxsize=16)
def cached_evaluation(model: str, groups: int, tokens: int, calibration_tokens: int, seq_len: int,
                      include_mse: bool, text: str = "kjv", calibration_text: str = "kjv",
                      sensitivity: bool = True, activation_only: bool = True,
                      batch_sequences: int = 4, recipe_set: str = "scales") -> ModelEvaluation:
    """:func:`evaluate_model` of a packaged model (:data:`nvfp4lab.models.packaged.MODELS`) on
    the corpus texts, computed once per process and stored under
    ``data/generated/decoder-evaluations/`` (keyed by the arguments and a hash of nvfp4lab's
    source), so the notebook, the findings and their tests share one computation.
    ``NVFP4LAB_BATCH_SEQUENCES`` overrides ``batch_sequences`` (windows per forward pass): a
    different grouping reorders float sums, which is how tests/findings' tolerances were
    measured."""
    from nvfp4lab.models.packaged import path_of

    batch_sequences = int(os.environ.get("NVFP4LAB_BATCH_SEQUENCES", batch_sequences))
    arguments = [model, groups, tokens, calibration_tokens, seq_len, include_mse, text, calibration_text,
                 sensitivity, activation_only, batch_sequences, _code_version()] + (
        [] if recipe_set == "scales" else [recipe_set])
    key = hashlib.sha256(json.dumps(arguments).encode()).hexdigest()[:20]
    stored = CACHE / f"{model}-{key}.json"
    if stored.is_file():
        return from_dict(json.loads(stored.read_text()))
    result = evaluate_model(path_of(model), groups=groups, tokens=tokens, calibration_tokens=calibration_tokens,
                            seq_len=seq_len, include_mse=include_mse, texts=text_parts(calibration_text, text),
                            text_names=(calibration_text, text), sensitivity=sensitivity,
                            activation_only=activation_only, batch_sequences=batch_sequences,
                            recipe_set=recipe_set)
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = stored.with_suffix(".partial")
    partial.write_text(json.dumps(result.as_dict()))
    partial.replace(stored)
    return result


def study_evaluations(fast: bool) -> list[ModelEvaluation]:
    """The evaluations the study uses: SmolLM2 on a KJV slice (fast), three models × three
    texts on 8k held-out tokens (full)."""
    return [cached_evaluation(**FAST)] if fast else [cached_evaluation(**config) for config in FULL]


def transform_evaluations(fast: bool) -> list[ModelEvaluation]:
    """The transform study's evaluations (:data:`FAST_TRANSFORMS`, :data:`FULL_TRANSFORMS`)."""
    return [cached_evaluation(**FAST_TRANSFORMS)] if fast else [cached_evaluation(**c) for c in FULL_TRANSFORMS]
