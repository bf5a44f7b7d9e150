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
one); every position but the last predicts the next token. Results are cached per process.
The weights are the GGUF file's (already 4-bit: Q4_1 / Q4_K); the activations are real.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from tqdm import tqdm

from nvfp4lab.evaluation import jobs
from nvfp4lab.models import corpus, tokenizer
from nvfp4lab.models.decoder import Decoder
from nvfp4lab.models.projection import LayerWeights, Recipe, RecipeProjection, all_recipes, check_groups

SENSITIVITY_RECIPE = ("dynamic", "per_group dynamic")
CALIBRATION_BATCH_TOKENS = 256
CHARS_PER_TOKEN_GUESS = 8  # tokenize only a prefix of a long text: enough for the tokens asked for


@dataclass
class Row:
    recipe: str
    mode: str
    perplexity: float
    kl: float
    top1_agreement: float
    layer_sqnr_db: list[float]

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

    def row(self, recipe: str, mode: str = "-") -> Row:
        return next(r for r in self.rows if r.recipe == recipe and r.mode == mode)

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


def _compare(reference_logp: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sums of (−log p(target), KL(ref ‖ this), top-1 agreement) over the positions."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, targets[..., None]).sum()
    kl = (reference_logp.exp() * (reference_logp - logp)).sum()
    agree = (reference_logp.argmax(-1) == logp.argmax(-1)).sum()
    return torch.stack((nll.double().cpu(), kl.double().cpu(), agree.double().cpu()))


def _calibrate(decoder: Decoder, weights: LayerWeights, windows: torch.Tensor, batch: int, recipes, progress):
    """Capture the bf16 model's attention outputs on the calibration windows; return the
    static scales ``{recipe label: {layer: (G,)}}`` and the activation statistics."""
    layers, groups = decoder.config.layers, weights.groups
    captured: list[list[torch.Tensor]] = [[] for _ in range(layers)]
    bf16 = RecipeProjection(Recipe("bf16", "-"), weights, measure=False)

    def capture(layer, o, w):
        captured[layer].append(o.reshape(o.shape[0], groups, -1).float().cpu())
        return bf16(layer, o, w)

    seq_full = None
    for start in range(0, windows.shape[0], batch):
        ids = decoder.with_bos(windows[start : start + batch])
        seq_full = ids.shape[1]
        decoder.hidden_states(ids, capture)
    static: dict[str, dict[int, torch.Tensor]] = {r.label: {} for r in recipes if r.job is not None and r.job.factory}
    spread, ratio, at_first = [], [], []
    for layer in tqdm(range(layers), desc="calibrating static scales", disable=not progress):
        x = torch.cat(captured[layer])  # (T, G, K)
        by_key = {(j.label, j.mode.name): j for j in jobs(weights.grouped(layer))}
        for recipe in recipes:
            if recipe.label in static:
                job = by_key[(recipe.name, recipe.mode)]
                static[recipe.label][layer] = job.calibrate(x[s : s + CALIBRATION_BATCH_TOKENS]
                                                            for s in range(0, x.shape[0], CALIBRATION_BATCH_TOKENS))
        group_amax = x.abs().amax(dim=(0, 2))
        spread.append(float(torch.log10(group_amax.max() / group_amax.min().clamp_min(1e-30))))
        token_amax = x.abs().amax(dim=(1, 2))
        ratio.append(float(token_amax.max() / token_amax.median().clamp_min(1e-30)))
        top = torch.topk(token_amax, max(1, token_amax.numel() // 100)).indices  # the top 1 % tokens
        at_first.append(float((top % seq_full == 0).double().mean()))
        captured[layer] = []
    return static, spread, ratio, at_first


@torch.no_grad()
def evaluate_model(path: str | Path, *, groups: int, tokens: int, calibration_tokens: int | None = None,
                   seq_len: int = 128, batch_sequences: int = 2, device: str | None = None,
                   dtype: torch.dtype = torch.float32, texts: tuple[str, str] | None = None,
                   sensitivity: bool = True, include_mse: bool = True, progress: bool = True) -> ModelEvaluation:
    """Evaluate every recipe on the decoder LM in the GGUF file ``path`` with ``groups``
    head groups, on ``tokens`` held-out tokens (calibrating on ``calibration_tokens``,
    default ``tokens``). ``texts = (calibration, held_out)`` defaults to :mod:`.corpus`."""
    if tokens < 2:
        raise ValueError(f"tokens must be at least 2; got {tokens}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    decoder = Decoder.from_gguf(path, device, dtype)
    check_groups(decoder.config.heads, groups)
    weights = LayerWeights(decoder, groups)
    calibration_tokens = calibration_tokens or tokens
    seq_len = min(seq_len, tokens, calibration_tokens)
    calibration_text, held_out_text = texts or (corpus.calibration_text(), corpus.held_out_text())
    calibration = token_windows(path, calibration_text, calibration_tokens, seq_len, "calibration")
    held_out = token_windows(path, held_out_text, tokens, seq_len, "held-out")
    recipes = all_recipes(include_mse)
    static, spread, ratio, at_first = _calibrate(decoder, weights, calibration, batch_sequences, recipes, progress)

    projections = {r.label: RecipeProjection(r, weights, static.get(r.label)) for r in recipes}
    sensitivity_recipe = next(r for r in recipes if (r.name, r.mode) == SENSITIVITY_RECIPE)
    layers = decoder.config.layers
    totals = {r.label: torch.zeros(3, dtype=torch.float64) for r in recipes}
    sensitivity_kl = torch.zeros(layers, dtype=torch.float64)
    positions, stats = 0, {}
    batches = range(0, held_out.shape[0], batch_sequences)
    steps = len(batches) * (len(recipes) + (layers if sensitivity else 0))
    bar = tqdm(total=steps, desc=f"{decoder.config.name}: recipes × held-out batches", disable=not progress)
    for start in batches:
        ids = decoder.with_bos(held_out[start : start + batch_sequences]).to(decoder.device)
        targets = ids[:, 1:]
        states = decoder.hidden_states(ids, projections["bf16"], stats=stats)
        reference_logp = torch.log_softmax(decoder.head(states[-1])[:, :-1], dim=-1)
        positions += targets.numel()
        for recipe in recipes:
            logits = decoder.head(states[-1]) if recipe.name == "bf16" else decoder.logits(ids, projections[recipe.label])
            totals[recipe.label] += _compare(reference_logp, logits, targets)
            bar.update()
        if sensitivity:
            for layer in range(layers):
                one = RecipeProjection(sensitivity_recipe, weights, static.get(sensitivity_recipe.label), layers=[layer],
                                       measure=False)
                logits = decoder.logits(ids, one, start=layer, x=states[layer])
                sensitivity_kl[layer] += _compare(reference_logp, logits, targets)[1]
                bar.update()
    bar.close()
    rows = [Row(r.name, r.mode, math.exp(totals[r.label][0] / positions), float(totals[r.label][1] / positions),
                float(totals[r.label][2] / positions), projections[r.label].sqnr_db()) for r in recipes]
    attention = stats.get("first_token_attention", [])
    first_attention = [sum(attention[i::layers]) / len(attention[i::layers]) for i in range(layers)] if attention else []
    return ModelEvaluation(
        model=decoder.config.name, architecture=decoder.config.architecture, heads=decoder.config.heads,
        groups=groups, tokens=positions, calibration_tokens=int(calibration.numel()), seq_len=seq_len, rows=rows,
        sensitivity_recipe=f"{sensitivity_recipe.name} | {sensitivity_recipe.mode}",
        sensitivity_kl=(sensitivity_kl / positions).tolist() if sensitivity else [],
        group_spread_decades=spread, outlier_token_ratio=ratio, outliers_at_first_position=at_first,
        first_token_attention=first_attention,
        notes=["weights are the GGUF file's (already 4-bit quantized); activations are real"],
    )


FAST = {"model": "smollm2", "groups": 3, "tokens": 256, "calibration_tokens": 512, "seq_len": 128, "include_mse": False}
FULL = ({"model": "smollm2", "groups": 3, "tokens": 8192, "calibration_tokens": 2048, "seq_len": 512, "include_mse": True},
        {"model": "gemma3", "groups": 2, "tokens": 8192, "calibration_tokens": 2048, "seq_len": 512, "include_mse": True})
CACHE = Path(__file__).resolve().parents[2] / "data" / "generated" / "decoder-evaluations"


NUMERICS = ("models/gguf_weights.py", "models/tokenizer.py", "models/decoder.py", "models/projection.py",
            "models/corpus.py", "models/evaluate.py", "evaluation.py", "baselines.py", "quantize.py", "formats.py",
            "scale_modes.py", "metrics.py", "calibration/*.py")


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


@lru_cache(maxsize=4)
def cached_evaluation(model: str, groups: int, tokens: int, calibration_tokens: int, seq_len: int,
                      include_mse: bool) -> ModelEvaluation:
    """:func:`evaluate_model` of a packaged model (``"smollm2"``, ``"gemma3"``) on the corpus,
    computed once per process and stored under ``data/generated/decoder-evaluations/`` (keyed by
    the arguments and a hash of nvfp4lab's source), so the notebook, the findings and their
    tests share one computation."""
    from nvfp4lab.models.packaged import path_of

    key = hashlib.sha256(json.dumps([model, groups, tokens, calibration_tokens, seq_len, include_mse,
                                     _code_version()]).encode()).hexdigest()[:20]
    stored = CACHE / f"{model}-{key}.json"
    if stored.is_file():
        return from_dict(json.loads(stored.read_text()))
    result = evaluate_model(path_of(model), groups=groups, tokens=tokens, calibration_tokens=calibration_tokens,
                            seq_len=seq_len, include_mse=include_mse)
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = stored.with_suffix(".partial")
    partial.write_text(json.dumps(result.as_dict()))
    partial.replace(stored)
    return result


def study_evaluations(fast: bool) -> list[ModelEvaluation]:
    """The evaluations the study uses: SmolLM2 on a slice of the text (fast), both models on
    8k held-out tokens (full)."""
    return [cached_evaluation(**FAST)] if fast else [cached_evaluation(**config) for config in FULL]


def recommend(evaluation: ModelEvaluation, tolerance: float = 0.10) -> tuple[Row, str]:
    """The NVFP4 W4A4 row to deploy: the lowest held-out KL(bf16 ‖ recipe); a static row
    whose KL is within ``tolerance`` (relative) of the best is preferred, as it needs no amax
    pass at inference. Returns the row and the reason in words."""
    candidates = [r for r in evaluation.rows if r.mode != "-"]
    best = min(candidates, key=lambda r: r.kl)
    static = [r for r in candidates if r.mode.endswith("static") and r.kl <= best.kl * (1 + tolerance)]
    choice = min(static, key=lambda r: r.kl) if static else best
    rule = (f"Rule: the lowest mean KL(bf16 ‖ quantized) of the next-token distribution on {evaluation.tokens} "
            f"held-out tokens among NVFP4 W4A4 recipes wins, except that a static row within {tolerance:.0%} of it "
            "is preferred (no amax pass at inference). ")
    why = rule + (f"Chosen: lowest mean KL ({choice.kl:.4f} nats; perplexity {choice.perplexity:.3f}, top-1 agreement "
                  f"{choice.top1_agreement:.1%})")
    if choice is not best:
        why = rule + (f"Chosen: static and within {tolerance:.0%} of the lowest held-out KL ({best.recipe}, {best.mode}: "
                      f"{best.kl:.4f} nats; this one {choice.kl:.4f}, perplexity {choice.perplexity:.3f}), so no amax "
                      "pass at inference")
    return choice, why
