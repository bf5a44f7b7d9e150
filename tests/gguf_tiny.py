"""Write tiny random GGUF decoder LMs (Llama, Qwen2 or Gemma 3 layout, byte-level BPE
tokenizer) so that the model code, the tokenizer, the evaluation and the command can be
tested in seconds.

``write_tiny(path, arch, ...)``: weights are float32 Gaussians (scale 1/√fan-in, norms ≈ 1);
the vocabulary is the 256 byte tokens, a few merges, one merge chain per entry of ``words``
(``"#include"`` → ``# i``, ``#i n``, … so the whole word is one token when a pre-tokenizer
leaves it in one piece), the ``user_defined`` tokens (type 4) and ``<|endoftext|>`` (type 3,
the BOS id)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

BASE_MERGES = ("Ġ t", "h e", "Ġt he", "Ġ a", "i n", "a n")


def byte_level_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    extra = [b for b in range(256) if b not in printable]
    chars = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(extra)}
    return [chars[b] for b in range(256)]


def spell(text: str) -> str:
    """``text``'s UTF-8 bytes in GPT-2's byte alphabet (``" a"`` → ``"Ġa"``)."""
    alphabet = byte_level_alphabet()
    return "".join(alphabet[b] for b in text.encode("utf-8"))


def word_merges(words) -> list[str]:
    """Merges ``"prefix next"`` that build each word of ``words`` left to right, first-seen order."""
    merges = []
    for word in words:
        spelled = spell(word)
        for end in range(2, len(spelled) + 1):
            merge = f"{spelled[:end - 1]} {spelled[end - 1]}"
            if merge not in merges:
                merges.append(merge)
    return merges


def _vocabulary(words, user_defined) -> tuple[list[str], list[str], list[int]]:
    """``(tokens, merges, token_types)``: bytes, merge results, user-defined, ``<|endoftext|>``."""
    tokens = byte_level_alphabet()
    merges = list(BASE_MERGES) + [m for m in word_merges(words) if m not in BASE_MERGES]
    for merge in merges:
        token = merge.replace(" ", "")
        if token not in tokens:
            tokens.append(token)
    types = [1] * len(tokens) + [4] * len(user_defined) + [3]
    return tokens + list(user_defined) + ["<|endoftext|>"], merges, types


def _add_tokenizer(writer, pre, words, user_defined) -> int:
    tokens, merges, types = _vocabulary(words, user_defined)
    writer.add_tokenizer_model("gpt2")
    if pre is not None:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types(types)
    writer.add_bos_token_id(len(tokens) - 1)
    writer.add_add_bos_token(False)
    return len(tokens)


def _add_fields(writer, fields: dict) -> None:
    """Extra metadata, typed by the Python value (str, bool, int → uint32, float → float32)."""
    for key, value in fields.items():
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_float32(key, float(value))


def write_tiny(path: Path, arch: str = "llama", layers: int = 2, hidden: int = 64, heads: int = 4,
               kv_heads: int = 2, ffn: int = 96, seed: int = 0, *, head_dim: int | None = None,
               pre: str | None = None, words=(), user_defined=(), sliding_window: int | None = None,
               rope_base: float = 10000.0, fields: dict | None = None, rope_freqs=None) -> Path:
    """A random decoder GGUF at ``path``. ``pre``: ``tokenizer.ggml.pre`` (absent if None);
    ``sliding_window``: ``{arch}.attention.sliding_window``; ``fields``: extra metadata (e.g.
    ``{"llama.rope.scaling.type": "linear"}``); ``rope_freqs``: a ``rope_freqs.weight`` tensor."""
    import gguf

    rng = np.random.default_rng(seed)
    head_dim = hidden // heads if head_dim is None else head_dim
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny-{arch}")
    writer.add_block_count(layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(rope_base)
    if head_dim != hidden // heads or arch == "gemma3":
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if sliding_window is not None:
        writer.add_sliding_window(sliding_window)
    _add_fields(writer, fields or {})
    vocab = _add_tokenizer(writer, pre, words, user_defined)

    def tensor(name, *shape, scale=None):  # shape in (out, in) order, as nn.Linear
        scale = (1.0 / np.sqrt(shape[-1])) if scale is None else scale
        writer.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    def norm(name, width):
        writer.add_tensor(name, (1 + 0.1 * rng.standard_normal(width)).astype(np.float32))

    tensor("token_embd.weight", vocab, hidden, scale=1.0)
    norm("output_norm.weight", hidden)
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, dtype=np.float32))
    for i in range(layers):
        p = f"blk.{i}."
        norm(p + "attn_norm.weight", hidden)
        norm(p + "ffn_norm.weight", hidden)
        tensor(p + "attn_q.weight", heads * head_dim, hidden)
        tensor(p + "attn_k.weight", kv_heads * head_dim, hidden)
        tensor(p + "attn_v.weight", kv_heads * head_dim, hidden)
        if arch == "qwen2":
            for n, width in (("attn_q", heads), ("attn_k", kv_heads), ("attn_v", kv_heads)):
                writer.add_tensor(p + n + ".bias", (0.1 * rng.standard_normal(width * head_dim)).astype(np.float32))
        if arch == "gemma3":
            norm(p + "attn_q_norm.weight", head_dim)
            norm(p + "attn_k_norm.weight", head_dim)
            norm(p + "post_attention_norm.weight", hidden)
            norm(p + "post_ffw_norm.weight", hidden)
        tensor(p + "attn_output.weight", hidden, heads * head_dim)
        tensor(p + "ffn_gate.weight", ffn, hidden)
        tensor(p + "ffn_up.weight", ffn, hidden)
        tensor(p + "ffn_down.weight", hidden, ffn)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_truncated(source: Path, target: Path, layers, vocab: int) -> Path:
    """A copy of the GGUF decoder ``source`` with only the layers ``layers`` (source indices,
    renumbered 0, 1, … in that order) and the first ``vocab`` tokens (rows of ``token_embd`` /
    ``output``), tensors copied in their own quantized bytes: a real model's weights and
    quantization types at a fraction of the load time. The tokenizer keeps tokens and types
    only (no merges: the copy is not for tokenizing)."""
    import gguf

    r = gguf.GGUFReader(str(source))
    arch = r.fields["general.architecture"].contents()
    renumber = {f"blk.{old}.": f"blk.{new}." for new, old in enumerate(layers)}
    writer = gguf.GGUFWriter(str(target), arch)
    writer.add_name(f"{r.fields['general.name'].contents()} (layers {list(layers)}, {vocab} tokens)")
    for key, field in r.fields.items():
        if key.startswith(f"{arch}."):
            value = len(layers) if key == f"{arch}.block_count" else field.contents()
            writer.add_key_value(key, value, field.types[0])
    writer.add_tokenizer_model(r.fields["tokenizer.ggml.model"].contents())
    if "tokenizer.ggml.pre" in r.fields:
        writer.add_tokenizer_pre(r.fields["tokenizer.ggml.pre"].contents())
    writer.add_token_list(r.fields["tokenizer.ggml.tokens"].contents()[:vocab])
    writer.add_token_types(r.fields["tokenizer.ggml.token_type"].contents()[:vocab])
    writer.add_add_bos_token(False)
    for tensor in r.tensors:
        prefix = tensor.name[:tensor.name.index(".", 4) + 1] if tensor.name.startswith("blk.") else None
        if prefix is None:
            data = tensor.data[:vocab] if tensor.name in ("token_embd.weight", "output.weight") else tensor.data
            writer.add_tensor(tensor.name, np.ascontiguousarray(data), raw_dtype=tensor.tensor_type)
        elif prefix in renumber:
            name = renumber[prefix] + tensor.name[len(prefix):]
            writer.add_tensor(name, np.ascontiguousarray(tensor.data), raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target
