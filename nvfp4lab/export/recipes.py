"""Which of the lab's recipes can travel to a serving checkpoint.

A serving stack's NVFP4 linear layer quantizes its input at run time with max-6 block
scales (each block's amax maps to 6) from ONE static input global scale per GEMM, and
multiplies by NVFP4 weights. So a recipe (a row of ``nvfp4lab calibrate-model``, label
``"<calibration> | <sharing> static"``) travels when:

* its global activation scales are **static** (calibrated): a dynamic global scale needs an
  amax pass the formats have no field for;
* its activation block rule is **max-6**: the four-over-six rule (each block picks 6 or 4)
  is a run-time choice of the activation quantizer that neither format can ask for. The
  weights CAN be four-over-six (their block scales are stored; see ``--weight-block-rule``);
* both operands are NVFP4 (``W4A4``): ``W16A4`` rows keep the weights unquantized, which
  no NVFP4 kernel runs.

Per-group static scales travel as their max over the groups (the module has one input scale).
"""

from __future__ import annotations


def recipe_labels() -> list[str]:
    """Every NVFP4 row label of the lab (servable or not)."""
    from nvfp4lab.models.projection import all_recipes

    return [r.label for r in all_recipes(include_mse=True) if r.job is not None]


def servable_recipe(label: str):
    """The :class:`nvfp4lab.models.projection.Recipe` of ``label``; ``ValueError`` (one line,
    saying why and what travels instead) when it is unknown or cannot travel."""
    from nvfp4lab.models.projection import all_recipes

    recipes = {r.label: r for r in all_recipes(include_mse=True)}
    recipe = recipes.get(label)
    if recipe is None:
        static = [name for name, r in recipes.items() if r.job is not None and _servable_reason(r) is None]
        raise ValueError(f"unknown recipe {label!r}; servable recipes: {', '.join(repr(s) for s in static)}")
    reason = _servable_reason(recipe)
    if reason is not None:
        raise ValueError(reason)
    return recipe


def _servable_reason(recipe) -> str | None:
    if recipe.job is None:
        return (f"recipe {recipe.label!r} is a baseline, not an NVFP4 W4A4 recipe; choose a static NVFP4 recipe "
                "such as 'headroom x4 | shared static'")
    if getattr(recipe, "operands", "W4A4") != "W4A4":
        return (f"recipe {recipe.label!r} keeps the weights unquantized (W16A4), which no NVFP4 kernel runs; "
                "export the W4A4 row of the same recipe")
    if recipe.job.factory is None:
        return (f"recipe {recipe.label!r} computes its global activation scale at run time, which neither "
                "checkpoint format can express (serving stacks keep one static input scale per GEMM); "
                "choose a static recipe such as 'headroom x4 | shared static'")
    if recipe.job.rule == "four_over_six":
        sharing = recipe.mode.split()[0]
        return (f"recipe {recipe.label!r}: the four-over-six activation rule cannot travel (serving kernels "
                "quantize activations with max-6 block scales); export "
                f"'max | {sharing} static' (the same calibration, max-6 activations) and add "
                "--weight-block-rule four_over_six for four-over-six weights, which both formats express")
    return None
