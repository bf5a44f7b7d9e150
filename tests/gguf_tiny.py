"""Write tiny random GGUF decoder LMs (Llama or Qwen2 layout, byte-level BPE tokenizer) so
that the model code, the evaluation and the command can be tested in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def byte_level_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    extra = [b for b in range(256) if b not in printable]
    chars = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(extra)}
    return [chars[b] for b in range(256)]


def write_tiny(path: Path, arch: str = "llama", layers: int = 2, hidden: int = 64, heads: int = 4,
               kv_heads: int = 2, ffn: int = 96, seed: int = 0) -> Path:
    import gguf

    rng = np.random.default_rng(seed)
    tokens = byte_level_alphabet()
    merges = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n", "a n"]
    tokens += [m.replace(" ", "") for m in merges] + ["<|endoftext|>"]
    head_dim = hidden // heads
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny-{arch}")
    writer.add_block_count(layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types([1] * (len(tokens) - 1) + [3])
    writer.add_bos_token_id(len(tokens) - 1)
    writer.add_add_bos_token(False)

    def tensor(name, *shape, scale=None):  # shape in (out, in) order, as nn.Linear
        scale = (1.0 / np.sqrt(shape[-1])) if scale is None else scale
        writer.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    tensor("token_embd.weight", len(tokens), hidden, scale=1.0)
    writer.add_tensor("output_norm.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))
    for i in range(layers):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))
        writer.add_tensor(p + "ffn_norm.weight", (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32))
        tensor(p + "attn_q.weight", heads * head_dim, hidden)
        tensor(p + "attn_k.weight", kv_heads * head_dim, hidden)
        tensor(p + "attn_v.weight", kv_heads * head_dim, hidden)
        if arch == "qwen2":
            for n, width in (("attn_q", heads), ("attn_k", kv_heads), ("attn_v", kv_heads)):
                writer.add_tensor(p + n + ".bias", (0.1 * rng.standard_normal(width * head_dim)).astype(np.float32))
        tensor(p + "attn_output.weight", hidden, heads * head_dim)
        tensor(p + "ffn_gate.weight", ffn, hidden)
        tensor(p + "ffn_up.weight", ffn, hidden)
        tensor(p + "ffn_down.weight", hidden, ffn)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
