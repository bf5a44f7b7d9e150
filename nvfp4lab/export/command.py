"""``nvfp4lab export``: calibrate a recipe's static activation scales on a decoder LM, then
write the model as a Hugging Face folder with NVFP4 ``o_proj`` in a serving format.

``run(...)`` checks every input first (format, output folder, recipe, activation-scale sharing,
the GGUF file and its ``o_proj`` shape, groups, tokens): a bad one is a one-line
``ValueError`` and nothing is written. Then it captures the bf16 model's ``o_proj`` inputs on
``tokens`` calibration tokens (the packaged corpus's calibration part, or ``--text``),
calibrates the recipe's ``(G,)`` scales per layer
(:func:`nvfp4lab.models.evaluate._calibrate`) and calls
:func:`nvfp4lab.export.hf_model.export_decoder`.
"""

from __future__ import annotations

from pathlib import Path

import torch

DEFAULT_RECIPE = "headroom x4 | shared static"
DEFAULT_TOKENS = 512
MIN_TOKENS = 16
SEQ_LEN = 128
BATCH_SEQUENCES = 2


def run(gguf: str | None, fmt: str, out: str, recipe_label: str = DEFAULT_RECIPE, activation_scale: str = "shared",
        groups: int | None = None, tokens: int = DEFAULT_TOKENS, text: str | None = None,
        weight_scale_rule: str = "amax", weight_block_rule: str = "max6", dtype: str = "float32",
        progress: bool = True) -> int:
    from nvfp4lab.export.conventions import FORMATS, check_choice
    from nvfp4lab.export.hf_model import check_architecture, check_o_proj, check_options, check_rope, export_decoder
    from nvfp4lab.export.recipes import servable_recipe
    from nvfp4lab.export.writer import checked_out_dir
    from nvfp4lab.models import corpus, gguf_weights, packaged
    from nvfp4lab.models.command import default_groups
    from nvfp4lab.models.decoder import Decoder
    from nvfp4lab.models.evaluate import _calibrate, scale_key, token_windows
    from nvfp4lab.models.projection import LayerWeights, check_groups

    check_choice(fmt, FORMATS, "--format")
    checked_out_dir(out)
    check_options(activation_scale, weight_scale_rule, weight_block_rule, dtype)  # before the long work
    recipe = servable_recipe(recipe_label)
    if tokens < MIN_TOKENS:
        raise ValueError(f"--tokens must be at least {MIN_TOKENS}; got {tokens}")
    path = Path(gguf) if gguf else packaged.smollm2_path()
    config = gguf_weights.config_of(gguf_weights.reader(path), path)
    check_architecture(config, path)
    check_o_proj(config, path)
    check_rope(config, path)
    groups = groups or default_groups(config.heads)
    check_groups(config.heads, groups)
    if text is not None:
        text_path = Path(text)
        if not text_path.is_file():
            raise ValueError(f"text file not found: {text_path}")
        try:
            calibration_text = text_path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{text_path} is not UTF-8 text") from None
        text_label = str(text_path)
    else:
        calibration_text, text_label = corpus.calibration_text(), f"{corpus.SOURCE}, calibration chapters"

    device = "cuda" if torch.cuda.is_available() else "cpu"
    decoder = Decoder.from_gguf(path, device)
    weights = LayerWeights(decoder, groups)
    windows = token_windows(path, calibration_text, tokens, min(SEQ_LEN, tokens), "calibration")
    static, *_ = _calibrate(decoder, weights, windows, BATCH_SEQUENCES, [recipe], progress)
    scales = {layer: s.detach().float().cpu() for layer, s in static[scale_key(recipe)].items()}
    del decoder, weights
    record = export_decoder(path, out, fmt, recipe.label, scales, activation_scale=activation_scale,
                            weight_scale_rule=weight_scale_rule, weight_block_rule=weight_block_rule, dtype=dtype,
                            provenance={"calibration": {"text": text_label, "tokens": int(windows.numel()),
                                                        "groups": groups, "recipe": recipe.label}})
    print(summary(record, out, fmt))
    return 0


def summary(record: dict, out: str, fmt: str) -> str:
    """What the user reads after an export."""
    layers = record["layers"]
    scales = [r["activation_global_scale"] for r in layers]
    spread = [max(r["recipe_scales_per_group"]) / min(r["recipe_scales_per_group"]) for r in layers]
    how = ("transformers: AutoModelForCausalLM.from_pretrained(DIR) (bf16; on the CPU add "
           "quantization_config=CompressedTensorsConfig(dequantize=True) for float32); vLLM: LLM(DIR)"
           if fmt == "compressed-tensors" else
           "vLLM: LLM(DIR, quantization='modelopt_fp4'); TensorRT-LLM and SGLang read hf_quant_config.json")
    return "\n".join([
        f"nvfp4lab export: {record['gguf']} -> {out} ({fmt})",
        f"  NVFP4: {len(layers)} o_proj layers ({record['quantized_modules']}); every other tensor as in the GGUF "
        f"file ({record['dtype_of_unquantized_tensors']})",
        f"  recipe {record['recipe']!r}, calibrated on {record['calibration']['tokens']} tokens "
        f"({record['calibration']['groups']} groups) of {record['calibration']['text']}"
        if "calibration" in record else f"  recipe {record['recipe']!r}",
        f"  activation global scale: one per o_proj = the max over its groups' static scales "
        f"(range {min(scales):.3g} .. {max(scales):.3g} over the layers; "
        + ("the recipe shares one scale across groups" if max(spread) == 1 else
           f"the groups' scales within a layer spread up to x{max(spread):.2f}")
        + "); activations are quantized at run time with max-6 block scales",
        f"  weights: global scale rule {record['weight_global_scale_rule']}, block rule {record['weight_block_rule']}",
        f"  load with {how}",
        f"  provenance and per-layer scales: {Path(out) / 'nvfp4lab_export.json'}",
    ])
