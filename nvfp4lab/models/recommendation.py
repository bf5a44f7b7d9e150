"""Which NVFP4 W4A4 recipe to deploy, saying only what the held-out data can tell.

Rule (:func:`recommend`):

1. the **best** row is the NVFP4 W4A4 row with the lowest mean KL(bf16 ‖ recipe);
2. a row is **equivalent** to it when its KL ratio to the best is not resolved as more than
   :data:`EQUIVALENCE_MARGIN` worse: the lower end of the ratio's 95 % interval (paired window
   bootstrap, :mod:`nvfp4lab.models.intervals`) is ≤ 1 + margin;
3. among the equivalent rows the one with the lowest **deployment cost** wins
   (:func:`deployment_cost`), ties broken by the lower mean KL.

Deployment cost, cheapest first, and why:

* the plain block rule (max → 6) before **four-over-six** activations, whose quantizer does
  two roundings per block and runs in no serving stack today (nor can a checkpoint ask for
  it, :mod:`nvfp4lab.export.recipes`) — the largest obstacle, so it orders first;
* then **static shared** — one FP32 activation scale per GEMM, calibrated once: what every
  serving kernel takes (vLLM keeps one input scale per GEMM and takes the max over fused
  shards);
* **static per-group** — no amax pass either, but the grouped GEMM must take one scale per
  group (nvfp4lab's kernels do; a single-scale GEMM gets the shared row);
* **dynamic shared**, then **dynamic per-group** — an amax reduction over the activations
  before every quantization (a launch or a fused pass: 15–25 % of the forward at T ≤ 16 in
  nvfp4lab's kernels, docs/kernels.md);
* last, among rows of equal runtime cost, the offline work of the **transform**
  (:attr:`nvfp4lab.transforms.recipes.Transform.cost`): none, then a weight recipe alone (GPTQ,
  four-over-six or MSE-searched weights, 16×16 scales: the checkpoint keeps the NVFP4 format,
  the served graph is unchanged), then an activation transform (a rotation or smoothing,
  folded into the value projection and ``o_proj``: free at inference, but the checkpoint's
  ``v_proj`` changes too). Every transform here is free at inference in the decoders studied;
  in a model with no value projection to fold into (DeepSeek V4's ``wo_a``) an activation
  transform would run online — ``nvfp4lab calibrate`` ranks it as a runtime cost.

When the best is not resolved from the runner-up, :func:`recommend` says so and estimates the
held-out tokens that would resolve their ratio (:func:`nvfp4lab.bootstrap.tokens_to_resolve`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nvfp4lab.bootstrap import Interval
from nvfp4lab.models.intervals import bootstrap

#: two recipes whose KL differs by less than this are interchangeable for deployment
EQUIVALENCE_MARGIN = 0.02
_SCALE_COST = {"shared static": 0, "per_group static": 1, "shared dynamic": 2, "per_group dynamic": 3}
RULE = (f"lowest-cost NVFP4 W4A4 row among those whose mean KL(bf16 ‖ recipe) is not resolved as more than "
        f"{EQUIVALENCE_MARGIN:.0%} above the lowest (lower end of the 95 % paired window-bootstrap interval of the "
        "KL ratio ≤ 1.02); cost: the plain block rule before four-over-six activations, then static shared < "
        "static per-group < dynamic shared < dynamic per-group, then (free at inference, offline work) no transform "
        "< a weight recipe alone < an activation transform folded into v_proj and o_proj")


def deployment_cost(row) -> tuple[int, int, int]:
    """``(block-rule cost, scale cost, transform cost)`` of an NVFP4 row: lower is cheaper to serve."""
    from nvfp4lab.transforms.recipes import Transform

    transform = Transform.parse(getattr(row, "transform", "none"))
    return int("four-over-six" in row.recipe), _SCALE_COST[row.mode], transform.cost


def deployment(row, head_dim: int | None = None) -> str:
    """What serving ``row`` takes beyond NVFP4 weights and activation scales: where its
    transform is folded (empty for a row without one)."""
    from nvfp4lab.transforms.recipes import Transform

    transform = Transform.parse(getattr(row, "transform", "none"))
    steps = []
    if transform.activation.startswith("hadamard"):
        block = transform.block(head_dim) if head_dim else None
        size = f" of size {block}" if block else ""
        steps.append(f"fold the Hadamard rotation{size} into each KV head's rows of v_proj (weight and bias: "
                     f"W_v ← Rᵀ·W_v) and its transpose into o_proj's input columns (W_o ← W_o·R)")
    elif transform.activation == "smoothquant":
        steps.append("divide each KV head's rows of v_proj (weight and bias) by the smoothing scales s and multiply "
                     "o_proj's input columns by s (the scales are tied across the query heads sharing a KV head)")
    if transform.weights == "gptq":
        source = "the calibration activations" if transform.activation == "none" else "the transformed activations"
        steps.append(f"write the GPTQ-quantized o_proj weights (Hessian from {source})")
    elif transform.weights != "rtn":
        steps.append(f"write o_proj's weights quantized with {transform.weights}")
    return "; ".join(steps)


@dataclass(frozen=True)
class Recommendation:
    """``row``: the recipe to deploy; ``best``: the row of lowest mean KL; ``equivalent``: the
    labels of the rows not resolved as worse than the best (``row`` among them); ``ratio``:
    the chosen row's KL over the best's; ``runner_up``: the next-lowest KL row's ratio to the
    best; ``tokens_to_resolve``: held-out tokens at which that ratio's interval would exclude 1."""

    row: object
    best: object
    equivalent: list[str]
    ratio: Interval
    runner_up: str
    runner_up_ratio: Interval
    tokens_to_resolve: float
    tokens: int
    reason: str

    @property
    def top_resolved(self) -> bool:
        return self.runner_up_ratio.low > 1.0


def recommend(evaluation, margin: float = EQUIVALENCE_MARGIN) -> Recommendation:
    """The NVFP4 W4A4 row to deploy by the module's rule, with the reason in words."""
    rows = evaluation.rows
    candidates = [i for i, r in enumerate(rows) if r.operands == "W4A4"]
    if len(candidates) < 2:
        raise ValueError(f"the evaluation of {evaluation.model} has fewer than two NVFP4 W4A4 rows")
    kl = bootstrap(evaluation)
    best = min(candidates, key=lambda i: rows[i].kl)
    ratios = {i: kl.ratio(i, best) for i in candidates}
    equivalent = [i for i in candidates if ratios[i].low <= 1 + margin]
    choice = min(equivalent, key=lambda i: (deployment_cost(rows[i]), rows[i].kl))
    runner = min((i for i in candidates if i != best), key=lambda i: rows[i].kl)
    needed = kl.tokens_to_resolve(runner, best)
    n = evaluation.tokens
    resolved = ratios[runner].low > 1.0
    top = (f"The lowest KL ({rows[best].label}, {rows[best].kl:.4f} nats) is "
           + (f"resolved from the runner-up ({rows[runner].label}: {ratios[runner].percent()})" if resolved else
              f"not resolved from the runner-up ({rows[runner].label}: {ratios[runner].percent()}, 95 % interval "
              f"includes no difference); about {_tokens(needed)} held-out tokens would resolve a gap of this size")
           + f". {len(equivalent)} of {len(candidates)} W4A4 rows are not resolved as more than {margin:.0%} worse "
           f"than it on {n} held-out predictions in {len(evaluation.window_positions)} windows.")
    if choice == best:
        why = top + " Chosen: the lowest KL, which is also the cheapest of the equivalent rows to serve."
    else:
        transform = getattr(rows[choice], "transform", "none")
        why = top + (f" Chosen: the cheapest of them to serve ({rows[choice].mode}"
                     f"{', four-over-six activations' if 'four-over-six' in rows[choice].recipe else ''}"
                     f"{'' if transform == 'none' else ', ' + transform}); its KL is "
                     f"{ratios[choice].percent()} relative to the lowest.")
    steps = deployment(rows[choice], getattr(evaluation, "head_dim", 0) or None)
    if steps:
        why += f" To deploy it: {steps}."
    return Recommendation(row=rows[choice], best=rows[best], equivalent=[rows[i].label for i in equivalent],
                          ratio=ratios[choice], runner_up=rows[runner].label, runner_up_ratio=ratios[runner],
                          tokens_to_resolve=needed, tokens=n, reason=why)


def _tokens(n: float) -> str:
    if not math.isfinite(n) or n > 1e7:
        return "more than 10 million"
    return f"{int(math.ceil(n / 1000.0) * 1000):,}" if n >= 1000 else f"{int(math.ceil(n))}"
