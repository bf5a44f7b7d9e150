"""Read a GGUF decoder LM: its configuration and its weights, dequantized to float32.

``load(path) -> (Config, weights)``: ``weights`` maps GGUF tensor names (``token_embd.weight``,
``blk.{i}.attn_q.weight``, …) to float32 tensors in ``nn.Linear`` layout ``(out, in)``
(``gguf.quants.dequantize`` reshaped to the reverse of the GGUF shape). Llama files store the
rows of q and k permuted for llama.cpp's RoPE; they are permuted back here, so the forward
uses the Hugging Face rotate-half RoPE for every architecture.

RoPE: the inverse frequency of pair ``i`` (``0 ≤ i < head_dim/2``) of a layer is
``base^(−2i/head_dim) / (factor_i · scale)`` (:meth:`Config.inverse_frequencies`), where
``factor_i`` are the Llama-3.1-style ``rope_freqs.weight`` values (Llama files only; 1 without
the tensor) and ``scale`` the linear factor of ``{arch}.rope.scaling.factor`` (or the older
``{arch}.rope.scale_linear``) when ``{arch}.rope.scaling.type`` is ``linear`` or absent (1 for
``none``), as llama.cpp reads them. Gemma 3's sliding-window layers use base 10⁴ (or
``{arch}.rope.freq_base_swa``) and no scaling. Any other ``{arch}.rope.*`` field (YaRN,
LongRoPE, partial rotary dimensions, …) is refused with an error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

ARCHITECTURES = ("llama", "qwen2", "gemma3")
# the local layers' base: older files do not store it (llama.cpp and transformers hard-code it);
# {arch}.rope.freq_base_swa overrides it
GEMMA3_LOCAL_ROPE_BASE = 10_000.0
GEMMA3_GLOBAL_EVERY = 6  # every 6th layer attends globally (5, 11, 17 of 18)
ROPE_SCALING_TYPES = ("none", "linear")
# {arch}.rope.* fields read here; the informational ones change nothing for linear scaling
_ROPE_FIELDS = ("freq_base", "freq_base_swa", "dimension_count", "scaling.type", "scaling.factor", "scale_linear",
                "scaling.original_context_length", "scaling.finetuned")


@dataclass(frozen=True)
class Config:
    """Shapes and constants of a decoder. ``head_dim`` is the query/key/value head size;
    the attention output before ``o_proj`` is ``(T, heads·head_dim)``. RoPE: ``rope_base``
    (global layers), ``local_rope_base`` (Gemma 3's sliding-window layers), ``rope_scale``
    (the linear factor, 1 = none) and ``rope_freq_factors`` (``rope_freqs.weight``, ``head_dim/2``
    divisors, or None): :meth:`inverse_frequencies`."""

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
    local_rope_base: float = GEMMA3_LOCAL_ROPE_BASE
    rope_scale: float = 1.0
    rope_freq_factors: tuple[float, ...] | None = None

    @property
    def attention_width(self) -> int:
        return self.heads * self.head_dim

    def _is_local(self, layer: int) -> bool:
        return self.architecture == "gemma3" and layer not in self.global_layers

    def rope_base_of(self, layer: int) -> float:
        return self.local_rope_base if self._is_local(layer) else self.rope_base

    def rope_scale_of(self, layer: int) -> float:
        """The linear RoPE factor of ``layer`` (positions are divided by it); Gemma 3's local
        layers are never scaled (llama.cpp and transformers agree)."""
        return 1.0 if self._is_local(layer) else self.rope_scale

    def inverse_frequencies(self, layer: int) -> torch.Tensor:
        """``(head_dim/2,)`` float64: ``base^(−2i/head_dim) / (factor_i · scale)`` for ``layer``."""
        i = torch.arange(0, self.head_dim, 2, dtype=torch.float64)
        inverse = self.rope_base_of(layer) ** (-i / self.head_dim)
        if self.rope_freq_factors is not None:
            inverse = inverse / torch.tensor(self.rope_freq_factors, dtype=torch.float64)
        return inverse / self.rope_scale_of(layer)

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


def _check_rope_fields(r, arch: str, head_dim: int, path) -> None:
    """Refuse ``{arch}.rope.*`` fields this forward does not implement."""
    prefix = f"{arch}.rope."
    for key in r.fields:
        if key.startswith(prefix) and key[len(prefix):] not in _ROPE_FIELDS:
            raise ValueError(f"{path}: unsupported GGUF field {key} (nvfp4lab.models implements RoPE fields "
                             f"{', '.join(prefix + f for f in _ROPE_FIELDS)})")
    rotary = _field(r, prefix + "dimension_count", head_dim)
    if int(rotary) != head_dim:
        raise ValueError(f"{path}: unsupported {prefix}dimension_count = {rotary} "
                         f"(partial rotary; head_dim is {head_dim})")
    if arch != "gemma3" and prefix + "freq_base_swa" in r.fields:
        raise ValueError(f"{path}: unsupported GGUF field {prefix}freq_base_swa for architecture {arch}")


def _rope_scale(r, arch: str, path) -> float:
    """The linear factor as llama.cpp reads it: ``scaling.type`` defaults to linear, the factor
    is ``scaling.factor`` or else ``scale_linear`` (0 or absent: 1); ``none`` never scales."""
    kind = _field(r, f"{arch}.rope.scaling.type", "linear")
    if kind not in ROPE_SCALING_TYPES:
        raise ValueError(f"{path}: unsupported {arch}.rope.scaling.type = {kind!r} "
                         f"(nvfp4lab.models implements {', '.join(ROPE_SCALING_TYPES)})")
    factor = _field(r, f"{arch}.rope.scaling.factor", _field(r, f"{arch}.rope.scale_linear", 0.0))
    if kind == "none" or float(factor) == 0.0:
        return 1.0
    if not float(factor) > 0:
        raise ValueError(f"{path}: {arch}.rope.scaling.factor must be positive, got {factor}")
    return float(factor)


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
    _check_rope_fields(r, arch, head_dim, path)
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
        local_rope_base=float(_field(r, f"{arch}.rope.freq_base_swa", GEMMA3_LOCAL_ROPE_BASE)),
        rope_scale=_rope_scale(r, arch, path),
    )


def _unpermute_rope(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's row permutation of a Llama q/k weight (out = heads·head_dim, in)."""
    out, width = w.shape
    return w.reshape(heads, out // heads // 2, 2, width).transpose(1, 2).reshape(out, width)


def _with_rope_freqs(config: Config, weights: dict[str, torch.Tensor], path) -> Config:
    """Move ``rope_freqs.weight`` ``(head_dim/2,)`` (Llama 3.1's per-frequency divisors) out of
    the weights into the config; refused outside Llama, whose llama.cpp graphs ignore it."""
    factors = weights.pop("rope_freqs.weight", None)
    if factors is None:
        return config
    if config.architecture != "llama":
        raise ValueError(f"{path}: unsupported tensor rope_freqs.weight in a {config.architecture} file "
                         "(nvfp4lab.models applies it to llama files only)")
    if factors.shape != (config.head_dim // 2,) or not bool((factors > 0).all()):
        raise ValueError(f"{path}: rope_freqs.weight must hold {config.head_dim // 2} positive factors, "
                         f"got shape {tuple(factors.shape)}")
    return replace(config, rope_freq_factors=tuple(float(f) for f in factors.double()))


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
    config = _with_rope_freqs(config, weights, path)
    if config.architecture == "llama":
        for i in range(config.layers):
            weights[f"blk.{i}.attn_q.weight"] = _unpermute_rope(weights[f"blk.{i}.attn_q.weight"], config.heads)
            weights[f"blk.{i}.attn_k.weight"] = _unpermute_rope(weights[f"blk.{i}.attn_k.weight"], config.kv_heads)
    missing = [n for n in ("token_embd.weight", "output_norm.weight", "blk.0.attn_output.weight") if n not in weights]
    if missing:
        raise ValueError(f"{path}: GGUF file lacks tensors {missing}")
    return config, weights
