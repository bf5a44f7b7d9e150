"""Read a GGUF decoder LM: its configuration and its weights, dequantized to float32.

``load(path) -> (Config, weights)``: ``weights`` maps GGUF tensor names (``token_embd.weight``,
``blk.{i}.attn_q.weight``, …) to float32 tensors in ``nn.Linear`` layout ``(out, in)``
(``gguf.quants.dequantize`` reshaped to the reverse of the GGUF shape). Llama files store the
rows of q and k permuted for llama.cpp's RoPE; they are permuted back here, so the forward
uses the Hugging Face rotate-half RoPE for every architecture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ARCHITECTURES = ("llama", "qwen2", "gemma3")
GEMMA3_LOCAL_ROPE_BASE = 10_000.0  # not stored in the file; llama.cpp and transformers hard-code it
GEMMA3_GLOBAL_EVERY = 6  # every 6th layer attends globally (5, 11, 17 of 18)


@dataclass(frozen=True)
class Config:
    """Shapes and constants of a decoder. ``head_dim`` is the query/key/value head size;
    the attention output before ``o_proj`` is ``(T, heads·head_dim)``."""

    architecture: str
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    rms_eps: float
    rope_base: float
    add_bos: bool
    bos_id: int | None
    sliding_window: int | None = None
    global_layers: tuple[int, ...] = field(default=())

    @property
    def attention_width(self) -> int:
        return self.heads * self.head_dim

    def rope_base_of(self, layer: int) -> float:
        if self.architecture == "gemma3" and layer not in self.global_layers:
            return GEMMA3_LOCAL_ROPE_BASE
        return self.rope_base

    def window_of(self, layer: int) -> int | None:
        return None if layer in self.global_layers or self.architecture != "gemma3" else self.sliding_window


def _field(reader, key, default=None):
    item = reader.fields.get(key)
    if item is None:
        return default
    value = item.contents()
    return value


def reader(path: str | Path):
    import gguf

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"GGUF file not found: {path}")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as error:  # the gguf package raises ValueError/struct errors on junk
        raise ValueError(f"{path} is not a readable GGUF file ({type(error).__name__}: {error})") from None


def config_of(r, path: str | Path = "") -> Config:
    arch = _field(r, "general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(f"{path}: unsupported architecture {arch!r}; nvfp4lab.models runs {', '.join(ARCHITECTURES)}")
    hidden = int(_field(r, f"{arch}.embedding_length"))
    heads = int(_field(r, f"{arch}.attention.head_count"))
    layers = int(_field(r, f"{arch}.block_count"))
    head_dim = int(_field(r, f"{arch}.attention.key_length", hidden // heads))
    tokens = r.fields["tokenizer.ggml.tokens"]
    bos = _field(r, "tokenizer.ggml.bos_token_id")
    return Config(
        architecture=arch,
        name=str(_field(r, "general.name", Path(path).stem)),
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=int(_field(r, f"{arch}.attention.head_count_kv", heads)),
        head_dim=head_dim,
        vocab=len(tokens.data),
        rms_eps=float(_field(r, f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        rope_base=float(_field(r, f"{arch}.rope.freq_base", 10_000.0)),
        add_bos=bool(_field(r, "tokenizer.ggml.add_bos_token", arch == "gemma3")),
        bos_id=None if bos is None else int(bos),
        sliding_window=int(_field(r, f"{arch}.attention.sliding_window", 0)) or None,
        global_layers=tuple(i for i in range(layers) if (i + 1) % GEMMA3_GLOBAL_EVERY == 0) if arch == "gemma3" else (),
    )


def _unpermute_rope(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's row permutation of a Llama q/k weight (out = heads·head_dim, in)."""
    out, width = w.shape
    return w.reshape(heads, out // heads // 2, 2, width).transpose(1, 2).reshape(out, width)


def load(path: str | Path) -> tuple[Config, dict[str, torch.Tensor]]:
    """The configuration and the float32 weights of a GGUF decoder LM."""
    from gguf.quants import dequantize

    r = reader(path)
    config = config_of(r, path)
    weights = {}
    for tensor in r.tensors:
        values = dequantize(tensor.data, tensor.tensor_type)
        shape = tuple(int(n) for n in reversed(tensor.shape))
        weights[tensor.name] = torch.from_numpy(np.array(values, dtype=np.float32, copy=True).reshape(shape))
    if config.architecture == "llama":
        for i in range(config.layers):
            weights[f"blk.{i}.attn_q.weight"] = _unpermute_rope(weights[f"blk.{i}.attn_q.weight"], config.heads)
            weights[f"blk.{i}.attn_k.weight"] = _unpermute_rope(weights[f"blk.{i}.attn_k.weight"], config.kv_heads)
    missing = [n for n in ("token_embd.weight", "output_norm.weight", "blk.0.attn_output.weight") if n not in weights]
    if missing:
        raise ValueError(f"{path}: GGUF file lacks tensors {missing}")
    return config, weights
