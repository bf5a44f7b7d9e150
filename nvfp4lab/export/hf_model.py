"""A GGUF decoder LM as a Hugging Face model folder whose ``o_proj`` layers are NVFP4.

:func:`export_decoder` writes into a new (or empty) folder:

* ``config.json``: the architecture (``LlamaForCausalLM`` or ``Qwen2ForCausalLM``) from the
  GGUF metadata and tensor shapes, plus the format's ``quantization_config``;
* ``model.safetensors``: every tensor of the GGUF file under its transformers name, as
  :func:`nvfp4lab.models.gguf_weights.load` reads it (dequantized to float32, llama.cpp's
  q/k row permutation undone, as the lab's decoder runs it; stored as ``dtype``) — except
  each layer's ``self_attn.o_proj``, which is NVFP4 in the format's tensors, quantized by
  nvfp4lab (:mod:`.conventions`) with the recipe's static activation global scale;
* ``tokenizer.json`` (the lab's tokenizer, :func:`nvfp4lab.models.tokenizer.tokenizer_of`, with
  the file's control tokens marked special), ``tokenizer_config.json``,
  ``generation_config.json``;
* ModelOpt only: ``hf_quant_config.json``;
* ``nvfp4lab_export.json``: what was written and why (recipe, scales per layer, rules).

One ``o_proj`` is one ``nn.Linear`` and keeps one input global scale: the recipe's ``(G,)``
scales are written as their max (``activation_scale="shared"``); ``"per_group"`` is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nvfp4lab.export import compressed_tensors, modelopt
from nvfp4lab.export.conventions import (
    WEIGHT_GLOBAL_SCALES,
    check_choice,
    quantize_weight,
    shared_activation_scale,
    weight_global_scale,
)
from nvfp4lab.export.grouped import format_module
from nvfp4lab.export.recipes import servable_recipe
from nvfp4lab.export.writer import checked_out_dir, safetensors_bytes
from nvfp4lab.quantize import BLOCK, BLOCK_RULES

ARCHITECTURES = {"llama": ("LlamaForCausalLM", "llama"), "qwen2": ("Qwen2ForCausalLM", "qwen2")}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
QUANTIZED = "self_attn.o_proj"
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                 "output.weight": "lm_head.weight"}
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def hf_name(gguf_name: str) -> str:
    """The transformers name of a GGUF tensor (``blk.3.attn_output.weight`` →
    ``model.layers.3.self_attn.o_proj.weight``); ``ValueError`` for a tensor it does not know."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}"
    raise ValueError(f"the GGUF tensor {gguf_name!r} has no transformers name here")


def check_architecture(config, path) -> tuple[str, str]:
    """``(architectures entry, model_type)``; ``ValueError`` for architectures not exported."""
    if config.architecture not in ARCHITECTURES:
        raise ValueError(f"{path}: export writes {', '.join(ARCHITECTURES)} decoders; "
                         f"{config.architecture!r} is not supported yet")
    return ARCHITECTURES[config.architecture]


def check_o_proj(config, path) -> None:
    """The ``o_proj`` input width K = heads·head_dim must be a multiple of 16 (one E4M3 scale a block)."""
    k = config.attention_width
    if k % BLOCK:
        raise ValueError(f"{path}: o_proj has K = {config.heads}·{config.head_dim} = {k} inputs, not a multiple "
                         f"of {BLOCK}: NVFP4 needs whole blocks of {BLOCK} along K")


def check_rope(config, path) -> None:
    """config.json writes plain RoPE (``rope_type: default``): a file with RoPE scaling (a linear
    factor or Llama 3.1's ``rope_freqs`` factors, where :mod:`nvfp4lab.models.gguf_weights`
    reads them) is refused rather than exported with the wrong positions."""
    if getattr(config, "rope_scale", 1.0) != 1.0 or getattr(config, "rope_freq_factors", None) is not None:
        raise ValueError(f"{path}: export writes plain RoPE; this file scales RoPE (linear factor or "
                         "rope_freqs.weight), which is not exported yet")


def linear_modules(layers: int) -> list[str]:
    """Every ``nn.Linear`` of the transformers model (``lm_head`` included)."""
    return [f"model.layers.{i}.{name}" for i in range(layers) for name in LINEARS] + ["lm_head"]


def dense_modules(layers: int) -> list[str]:
    """The Linear modules left dense: everything but the ``o_proj`` layers."""
    return [m for m in linear_modules(layers) if not m.endswith(QUANTIZED)]


def model_config(config, weights: dict[str, torch.Tensor], reader, dtype: str) -> dict:
    """config.json (without ``quantization_config``) for the decoder ``config`` with ``weights``
    (GGUF names) and the GGUF ``reader`` (context length, eos)."""
    from nvfp4lab.models.gguf_weights import _field

    architecture, model_type = check_architecture(config, "")
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    out = {
        "architectures": [architecture],
        "model_type": model_type,
        "vocab_size": int(weights["token_embd.weight"].shape[0]),
        "hidden_size": config.hidden,
        "intermediate_size": int(weights["blk.0.ffn_gate.weight"].shape[0]),
        "num_hidden_layers": config.layers,
        "num_attention_heads": config.heads,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": int(_field(reader, f"{config.architecture}.context_length", 2048)),
        "rms_norm_eps": float(config.rms_eps),
        "rope_theta": float(config.rope_base),
        "rope_parameters": {"rope_type": "default", "rope_theta": float(config.rope_base)},
        "tie_word_embeddings": "output.weight" not in weights,
        "bos_token_id": config.bos_id,
        "eos_token_id": None if eos is None else int(eos),
        "torch_dtype": dtype,
        "dtype": dtype,
    }
    if model_type == "llama":
        out.update(attention_bias="blk.0.attn_q.bias" in weights, mlp_bias=False)
    else:
        out.update(use_sliding_window=False)
    return out


def _tokenizer_files(path, config, reader) -> dict[str, str]:
    """tokenizer.json (the lab's tokenizer; control tokens special; BOS added when the file
    says so), tokenizer_config.json and generation_config.json, as strings."""
    from tokenizers import AddedToken, Tokenizer, processors

    from nvfp4lab.models.gguf_weights import _field
    from nvfp4lab.models.tokenizer import _strings, tokenizer_of

    tokenizer = Tokenizer.from_str(tokenizer_of(path).to_str())  # a copy: the lab's is cached
    tokens = _strings(reader.fields["tokenizer.ggml.tokens"])
    types_field = reader.fields.get("tokenizer.ggml.token_type")
    types = types_field.contents() if types_field is not None else []
    control = 3
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                  for t, kind in zip(tokens, types) if kind == control])
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    bos_token = tokens[config.bos_id] if config.bos_id is not None else None
    eos_token = tokens[int(eos)] if eos is not None else None
    if config.add_bos and bos_token is not None:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A", pair=f"{bos_token} $A {bos_token} $B",
            special_tokens=[(bos_token, config.bos_id)])
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos_token, "eos_token": eos_token,
                        "add_bos_token": bool(config.add_bos), "clean_up_tokenization_spaces": False,
                        "model_max_length": int(_field(reader, f"{config.architecture}.context_length", 2048))}
    generation = {"bos_token_id": config.bos_id, "eos_token_id": None if eos is None else int(eos)}
    return {"tokenizer.json": tokenizer.to_str(), "tokenizer_config.json": json.dumps(tokenizer_config, indent=1),
            "generation_config.json": json.dumps(generation, indent=1)}


def _check_scales(static_scales: dict, layers: int) -> dict[int, torch.Tensor]:
    missing = [i for i in range(layers) if i not in static_scales]
    if missing:
        raise ValueError(f"static_scales lacks layers {missing}: give every layer's (G,) activation global scales")
    scales = {}
    for i in range(layers):
        try:
            scales[i] = shared_activation_scale(static_scales[i])
        except ValueError as error:
            raise ValueError(f"layer {i}: {error}") from None
    return scales


def check_options(activation_scale: str, weight_scale_rule: str, weight_block_rule: str, dtype: str) -> None:
    """One-line ``ValueError`` for an export option the decoder export cannot take."""
    if activation_scale == "per_group":
        raise ValueError("o_proj is one nn.Linear with one input global scale, and serving stacks run one "
                         "activation global scale per GEMM: per-group scales cannot be written; use "
                         "--activation-scale shared (the max over the groups)")
    check_choice(activation_scale, ("shared",), "--activation-scale")
    check_choice(weight_scale_rule, WEIGHT_GLOBAL_SCALES, "--weight-global-scale")
    check_choice(weight_block_rule, BLOCK_RULES, "--weight-block-rule")
    check_choice(dtype, tuple(DTYPES), "--dtype")


def export_decoder(gguf_path: str | Path, out_dir: str | Path, fmt: str, recipe_label: str,
                   static_scales: dict[int, torch.Tensor], *, activation_scale: str = "shared",
                   weight_scale_rule: str = "amax", weight_block_rule: str = "max6", dtype: str = "float32",
                   provenance: dict | None = None) -> dict:
    """Write the decoder LM in ``gguf_path`` as a Hugging Face model folder ``out_dir`` whose
    ``o_proj`` layers are NVFP4 in ``fmt``; nothing else is quantized. Calibrates nothing.

    Args:
        gguf_path: a Llama or Qwen2 GGUF file.
        out_dir: a new or empty folder.
        fmt: ``"compressed-tensors"`` or ``"modelopt"``.
        recipe_label: the static recipe the scales come from, e.g. ``"headroom x4 | shared static"``
            (checked: it must be able to travel, :mod:`.recipes`).
        static_scales: ``{layer: (G,) float32}`` activation global scales in dequant form
            (``amax / 2688``), as ``nvfp4lab.models.evaluate._calibrate`` returns them per ``scale_key``.
        activation_scale: ``"shared"`` writes each layer's max over its G scales (one input
            scale per GEMM, what serving stacks run); ``"per_group"`` is refused (one module).
        weight_scale_rule: ``"amax"`` (nvfp4lab's ``amax / 2688``, as the lab evaluated) or
            ``"pow2"`` (rounded up to a power of two: every library's dequantization exact).
        weight_block_rule: ``"max6"`` or ``"four_over_six"`` (weights only).
        dtype: ``"float32"`` (the lab's decoder weights exactly) or ``"bfloat16"`` for the
            unquantized tensors.
        provenance: extra entries for ``nvfp4lab_export.json`` (e.g. the calibration text).

    Returns:
        The record written to ``nvfp4lab_export.json``.
    """
    from nvfp4lab import __version__
    from nvfp4lab.models import gguf_weights
    from nvfp4lab.output_folder import OutputFolder

    module = format_module(fmt)
    out = checked_out_dir(out_dir)
    check_options(activation_scale, weight_scale_rule, weight_block_rule, dtype)
    recipe = servable_recipe(recipe_label)
    reader = gguf_weights.reader(gguf_path)
    config = gguf_weights.config_of(reader, gguf_path)
    check_architecture(config, gguf_path)
    check_o_proj(config, gguf_path)
    check_rope(config, gguf_path)
    scales = _check_scales(static_scales, config.layers)

    config, weights = gguf_weights.load(gguf_path)
    check_rope(config, gguf_path)  # rope_freqs.weight is read with the tensors
    tensors: dict[str, torch.Tensor] = {}
    layers = []
    for name, w in weights.items():
        target = hf_name(name)
        if not target.endswith(f"{QUANTIZED}.weight"):
            tensors[target] = w.to(DTYPES[dtype])
            continue
        layer = int(name.split(".")[1])
        gs_w = weight_global_scale(w, rule=weight_scale_rule, block_rule=weight_block_rule)
        quantized = quantize_weight(w, gs_w, block_rule=weight_block_rule)
        prefix = target[: -len(".weight")]
        tensors.update({f"{prefix}.{k}": t for k, t in module.module_tensors(quantized, scales[layer]).items()})
        group_scales = torch.as_tensor(static_scales[layer], dtype=torch.float32).reshape(-1)
        layers.append({"layer": layer, "module": prefix, "shape": list(w.shape),
                       "weight_global_scale": float(gs_w), "activation_global_scale": float(scales[layer]),
                       "recipe_scales_per_group": group_scales.tolist()})
    dense = dense_modules(config.layers)
    model = model_config(config, weights, reader, dtype)
    files = _tokenizer_files(gguf_path, config, reader)
    if fmt == "compressed-tensors":
        model["quantization_config"] = compressed_tensors.quantization_config(dense)
    else:
        quant = modelopt.hf_quant_config(dense, __version__)
        model["quantization_config"] = modelopt.config_json_quantization_config(quant)
        files["hf_quant_config.json"] = json.dumps(quant, indent=4)
    record = {
        "producer": f"nvfp4lab {__version__}",
        "gguf": str(gguf_path),
        "format": fmt,
        "recipe": recipe.label,
        "activation_scale": "shared: each layer's max over its groups' static scales (one input global scale per GEMM)",
        "activation_block_rule": "max6 (the serving kernel's; the only one that travels)",
        "weight_global_scale_rule": weight_scale_rule,
        "weight_block_rule": weight_block_rule,
        "dtype_of_unquantized_tensors": dtype,
        "quantized_modules": f"model.layers.*.{QUANTIZED}",
        "layers": sorted(layers, key=lambda r: r["layer"]),
        **(provenance or {}),
    }
    with OutputFolder(out) as folder:
        folder.write("model.safetensors", safetensors_bytes(tensors))
        folder.write("config.json", json.dumps(model, indent=2))
        for name, text in files.items():
            folder.write(name, text)
        folder.write("nvfp4lab_export.json", json.dumps(record, indent=1, allow_nan=False))
    return record
