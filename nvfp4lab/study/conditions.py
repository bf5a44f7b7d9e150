"""The conditions every finding was measured under, and the words the claims use: the
header of ``reports/findings.md``.

``conditions_markdown(fast, data_dir)`` joins one section per entry of ``SECTIONS``
(environment, then one per data source); a module that adds findings on another data
source appends its own ``(title, function(fast, data_dir) -> markdown)`` to ``SECTIONS``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from nvfp4lab.study import experiments as ex


def environment(fast: bool, data_dir) -> str:
    device = ex.device(fast)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return (f"- mode: **{'fast' if fast else 'full'}** ({'small CI shapes' if fast else 'the V4-Flash shapes'})\n"
            f"- torch {torch.__version__}, computed on {card} ({device.type})\n"
            "- every number is recomputed from seeded data on each run; float reductions may differ in the "
            "last digits across CPUs and torch releases (tests/findings pins SQNRs to 0.05 dB); numbers that pass "
            "through NVFP4 rounding of a model's own activations (D01–D07) move by up to ~5 % with the CPU, the "
            "thread count or the batch grouping (tests/findings pins them to half their 95 % interval)")


def synthetic_data(fast: bool, data_dir) -> str:
    c = ex.config(fast)
    t = ex.tokens(fast)
    return (
        f"Used by F02–F08. One synthetic DeepSeek-V4-like `wo_a` layer (`nvfp4lab.data.synthetic`, model seed "
        f"{c.model_seed}): G = {c.groups} groups of {c.heads_per_group} heads × D = {c.head_dim}, so "
        f"K = {c.in_features} and N = {c.out_features}; z = einsum(\"tgk,gkn->tgn\").\n\n"
        f"- activations o (T, H, D), bf16: per head the first {c.head_dim - c.rope_dims} dims Student-t with "
        f"{c.tail_dof} degrees of freedom (unit variance), the last {c.rope_dims} Gaussian with std {c.rope_std}; "
        f"each head × a fixed gain 10^-U(0, {c.head_spread_decades:g}); each token × exp(N(0, {c.token_log_std}²)); "
        f"{c.outlier_token_fraction:.1%} of tokens (outlier tokens) × {c.outlier_scale:g}\n"
        "- weights W (G, K, N): Gaussian / √K, each output channel × "
        f"10^-U(0, {c.weight_channel_spread_decades:g})\n"
        f"- token sets of T = {t} tokens each: **calibration** = seed 1, **held-out evaluation** = seed 2 "
        "(independent random streams of the same model); every z SQNR below is measured on the held-out set (F02's "
        "activation SQNR on the calibration set)\n"
        "- F03 sets the head spread to 0 and multiplies group g by 10^(−spread·g/(G−1)), so the last group is the "
        "quietest; F04/F05 derive drift scenarios from the held-out set (×4, ×1/4, 1 % new outlier tokens ×16)"
    )


def real_encoder_data(fast: bool, data_dir) -> str:
    manifest_path = Path(data_dir) / "manifest.json" if data_dir is not None else None
    if manifest_path is None or not manifest_path.is_file():
        return "Used by F09. (No capture found: run `nvfp4lab capture`.)"
    manifest = json.loads(manifest_path.read_text())
    tokens = manifest["tokens"]
    split = int(tokens * 0.75)
    return (
        f"Used by F09. Real attention outputs of all-MiniLM-L6-v2 ({manifest['source']}), captured by "
        f"`nvfp4lab capture` from {manifest['paragraphs']} paragraphs of {manifest['text']}: layer 5, "
        f"{tokens} tokens, 12 heads × 32 dims viewed as G = {manifest['groups']} groups, K = 96, N = 384, the "
        f"layer's own output-projection weights. No seed: the first {split} tokens calibrate, the last "
        f"{tokens - split} are held out. The same in fast and full mode."
    )


def real_decoder_data(fast: bool, data_dir) -> str:
    from nvfp4lab.models import corpus
    from nvfp4lab.models.evaluate import FAST, FULL
    from nvfp4lab.models.packaged import display_name

    runs = [FAST] if fast else list(FULL)
    models = sorted({run["model"] for run in runs}, key=[run["model"] for run in runs].index)
    texts = sorted({run["text"] for run in runs}, key=[run["text"] for run in runs].index)
    run = runs[0]
    windows = run["tokens"] // run["seq_len"]
    return (
        "Used by D01–D07 (stated for SmolLM2-135M-Instruct on the KJV" + ("" if fast else "; the other models and "
        "texts are in the tables of notebook 07 and the full-mode record") + "). Real pretrained decoder LMs from "
        "GGUF files that PyPI packages ship (`nvfp4lab.models.packaged`): " + ", ".join(display_name(m) for m in models)
        + "; run in plain torch (float32) with every layer's attention output projection replaced at once by the "
        "recipe under test, heads grouped like wo_a. **W4A4** rows re-quantize the file's own weights (SmolLM2: "
        "Q4_1, Gemma: Q4_K, Qwen2.5-Coder: Q5_0) to NVFP4; **W16A4** rows keep them and quantize only the "
        "activations; the activations are real. Texts: " + "; ".join(corpus.source(t) for t in texts)
        + f". Held-out: {run['tokens']} tokens in {windows} windows of {run['seq_len']} (each window one sequence "
        f"with its own context; a BOS token only where the file asks for one), static scales calibrated on "
        f"{run['calibration_tokens']} tokens of the other part, MSE recipes "
        f"{'included' if run['include_mse'] else 'left out'}. KL = mean KL(bf16 ‖ quantized) of the next-token "
        "distribution (nats); top-1 = agreement of the argmax with bf16; layer SQNR = mean over layers of the "
        "projection output's SQNR. **Intervals**: 95 %, percentile bootstrap (4000 resamples, fixed seed) over the "
        "held-out windows, paired across recipes; an ordering is claimed only where the interval of a KL ratio "
        "excludes 1.")


DEFINITIONS = """\
- **SQNR** (dB) = 10·log10(Σ z² / Σ (ẑ − z)²), where z is the layer output computed in float64 from the
  unquantized operands and ẑ the output of the recipe under test (bf16 output). "z SQNR" is of the layer
  output; "activation SQNR" (F02) of the dequantized activations against the activations.
- **overall** SQNR: over all of z (every token, group and output); **worst group**: the lowest of the G
  per-group SQNRs (each over one group's tokens and outputs); **quietest group** (F03): the group with the
  smallest magnitude, i.e. the last.
- **W4A4**: NVFP4 weights and NVFP4 activations; **W4A16**: NVFP4 weights, bf16 activations; **W16A4** (decoder
  LMs): the weights as the model file stores them, NVFP4 activations; **FP8 recipe**:
  what serves `wo_a` today (activations per token and 128 channels with power-of-two scales, 128×128 weight
  blocks); **bf16**: both operands rounded to bf16.
- **global scale**: the FP32 scale above the E4M3 block scales, `amax / 2688`; **shared** = one for all groups,
  **per group** = one per group; **dynamic** = from the current tokens' amax, **static** = calibrated once on
  the calibration set (recipes: max, headroom ×4 = max × 4, percentile, MSE search).
- **octave**: a factor of 2 in the global scale (equivalently in the calibrated amax).
- **95 % interval** (decoder LMs): `x [lo, hi]`, the 2.5 % and 97.5 % percentiles of 4000 bootstrap resamples of the
  held-out windows (paired: one resample moves every recipe); a ratio whose interval excludes 1 is **resolved**.
- **four-over-six**: each block picks the better (lower squared error) of scaling its amax to 6 or to 4 on the
  E2M1 grid; the global scale becomes amax / 1536 so block scales stay below 448.
- **clipped**: the fraction of activation elements above 6·448·global scale (their block scale saturated).
"""

#: (title, function(fast, data_dir) -> markdown), in the order they are printed.
SECTIONS: list[tuple[str, Callable[[bool, object], str]]] = [
    ("Environment", environment),
    ("Synthetic V4 data", synthetic_data),
    ("Real encoder data", real_encoder_data),
    ("Real decoder LMs", real_decoder_data),
]


def conditions_markdown(fast: bool, data_dir) -> str:
    parts = ["## Conditions", ""]
    for title, section in SECTIONS:
        parts += [f"### {title}", "", section(fast, data_dir), ""]
    return "\n".join(parts + ["## Definitions", "", DEFINITIONS])
