"""The forward pass of a Llama / Qwen2 / Gemma 3 decoder in plain torch, with a hook on
every layer's attention output projection.

``Decoder.from_gguf(path, device, dtype)`` loads the file (:mod:`.gguf_weights`).
``decoder.logits(ids, projection)`` runs ``ids (B, S)`` int64 to logits ``(B, S, vocab)``
float32. ``projection(layer, o, w) -> y`` replaces ``o_proj``: ``o (B·S, heads·head_dim)``
is the attention output right before the projection (heads contiguous, head h at columns
``h·head_dim …``), ``w (hidden, heads·head_dim)`` the layer's weight, ``y (B·S, hidden)``
``= o wᵀ`` for the unquantized layer (:func:`dense_projection`).

Per layer: Llama/Qwen2 ``x += o_proj(attn(rms(x)))``, ``x += down(silu(gate(rms(x)))·up(rms(x)))``;
Gemma 3 ``x += post_norm(o_proj(attn(rms(x))))``, ``x += post_ffw_norm(down(gelu_tanh(gate)·up))``,
with per-head q/k RMS norms, embeddings × √hidden, local layers on a sliding window with RoPE
base 10⁴, global layers with the file's base. Qwen2 adds biases to q, k and v. Attention is
causal, rotate-half RoPE with angle ``position · inverse_frequency`` (per layer, including the
file's linear scaling and ``rope_freqs`` factors: :meth:`Config.inverse_frequencies`), grouped KV
heads; scores are ``q kᵀ / √head_dim``; on a sliding-window layer with window ``W`` query ``t``
sees keys ``s`` with ``t − W < s ≤ t`` (:func:`attention_mask`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from nvfp4lab.models.gguf_weights import Config, load

Projection = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def dense_projection(layer: int, o: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return o @ w.T


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


def attention_mask(length: int, window: int | None, device="cpu") -> torch.Tensor:
    """``(length, length)`` bool, True where query ``t`` may attend to key ``s``: ``s ≤ t``,
    and ``t − s < window`` on a sliding-window layer."""
    position = torch.arange(length, device=device)
    allowed = position[None, :] <= position[:, None]
    if window is not None:
        allowed &= position[:, None] - position[None, :] < window
    return allowed


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Decoder:
    """A GGUF decoder LM in torch (weights in ``dtype`` on ``device``)."""

    def __init__(self, config: Config, weights: dict[str, torch.Tensor], device="cpu", dtype=torch.float32):
        self.config = config
        self.device = torch.device(device)
        self.dtype = dtype
        self.w = {k: v.to(self.device, dtype) for k, v in weights.items()}
        self._rope_cache: dict[tuple[bytes, int], tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_gguf(cls, path: str | Path, device="cpu", dtype=torch.float32) -> Decoder:
        config, weights = load(path)
        return cls(config, weights, device, dtype)

    def o_proj_weight(self, layer: int) -> torch.Tensor:
        """``(hidden, heads·head_dim)``: the output projection of ``layer``."""
        return self.w[f"blk.{layer}.attn_output.weight"]

    def _cos_sin(self, layer: int, length: int):
        """``cos, sin (length, head_dim)`` of the angles ``position · inverse_frequency`` of ``layer``."""
        inverse = self.config.inverse_frequencies(layer)
        key = (inverse.numpy().tobytes(), length)
        if key not in self._rope_cache:
            angles = torch.arange(length, dtype=torch.float64)[:, None] * inverse[None]
            angles = torch.cat((angles, angles), dim=-1).to(self.device)
            self._rope_cache[key] = (angles.cos().to(self.dtype), angles.sin().to(self.dtype))
        return self._rope_cache[key]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.w["token_embd.weight"][ids]
        if self.config.architecture == "gemma3":
            x = x * torch.tensor(math.sqrt(self.config.hidden), dtype=self.dtype)
        return x

    def _linear(self, x, name, layer):
        y = x @ self.w[f"blk.{layer}.{name}.weight"].T
        bias = self.w.get(f"blk.{layer}.{name}.bias")
        return y if bias is None else y + bias

    def _attention(self, layer: int, x: torch.Tensor, stats: dict | None) -> torch.Tensor:
        """Attention output before ``o_proj``: ``(B, S, heads·head_dim)``."""
        c = self.config
        b, s, _ = x.shape
        q = self._linear(x, "attn_q", layer).view(b, s, c.heads, c.head_dim).transpose(1, 2)
        k = self._linear(x, "attn_k", layer).view(b, s, c.kv_heads, c.head_dim).transpose(1, 2)
        v = self._linear(x, "attn_v", layer).view(b, s, c.kv_heads, c.head_dim).transpose(1, 2)
        if c.architecture == "gemma3":
            q = _rms(q, self.w[f"blk.{layer}.attn_q_norm.weight"], c.rms_eps)
            k = _rms(k, self.w[f"blk.{layer}.attn_k_norm.weight"], c.rms_eps)
        cos, sin = self._cos_sin(layer, s)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        repeat = c.heads // c.kv_heads
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(c.head_dim)
        allowed = attention_mask(s, c.window_of(layer), self.device)
        probabilities = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        if stats is not None:  # attention sinks: the mean weight the queries (after the first) put on position 0
            stats.setdefault("first_token_attention", []).append(float(probabilities[:, :, 1:, 0].mean()))
        o = probabilities.to(self.dtype) @ v
        return o.transpose(1, 2).reshape(b, s, c.attention_width)

    def layer(self, i: int, x: torch.Tensor, projection: Projection = dense_projection, stats: dict | None = None):
        c = self.config
        w = self.w
        o = self._attention(i, _rms(x, w[f"blk.{i}.attn_norm.weight"], c.rms_eps), stats)
        b, s, width = o.shape
        attn = projection(i, o.reshape(b * s, width), self.o_proj_weight(i)).reshape(b, s, c.hidden).to(self.dtype)
        if c.architecture == "gemma3":
            x = x + _rms(attn, w[f"blk.{i}.post_attention_norm.weight"], c.rms_eps)
            h = _rms(x, w[f"blk.{i}.ffn_norm.weight"], c.rms_eps)
            gate = torch.nn.functional.gelu(self._linear(h, "ffn_gate", i), approximate="tanh")
            mlp = self._linear(gate * self._linear(h, "ffn_up", i), "ffn_down", i)
            return x + _rms(mlp, w[f"blk.{i}.post_ffw_norm.weight"], c.rms_eps)
        x = x + attn
        h = _rms(x, w[f"blk.{i}.ffn_norm.weight"], c.rms_eps)
        gate = torch.nn.functional.silu(self._linear(h, "ffn_gate", i))
        return x + self._linear(gate * self._linear(h, "ffn_up", i), "ffn_down", i)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        x = _rms(x, self.w["output_norm.weight"], self.config.rms_eps)
        out = self.w.get("output.weight", self.w["token_embd.weight"])
        return (x @ out.T).float()

    def with_bos(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids (B, S)`` with the BOS token prepended when the file asks for one."""
        c = self.config
        if not c.add_bos or c.bos_id is None:
            return ids
        return torch.cat((torch.full((ids.shape[0], 1), c.bos_id, dtype=ids.dtype, device=ids.device), ids), dim=1)

    @torch.no_grad()
    def hidden_states(self, ids: torch.Tensor, projection: Projection = dense_projection,
                      start: int = 0, x: torch.Tensor | None = None, stats: dict | None = None) -> list[torch.Tensor]:
        """The residual stream entering each layer from ``start`` on, and the last one:
        ``[x_start, …, x_L]`` each ``(B, S, hidden)``. ``x`` is the stream entering
        ``start`` (default: the embeddings of ``ids``)."""
        x = self.embed(ids.to(self.device)) if x is None else x
        states = [x]
        for i in range(start, self.config.layers):
            x = self.layer(i, x, projection, stats)
            states.append(x)
        return states

    @torch.no_grad()
    def logits(self, ids: torch.Tensor, projection: Projection = dense_projection, start: int = 0,
               x: torch.Tensor | None = None, stats: dict | None = None) -> torch.Tensor:
        """``(B, S, vocab)`` float32 logits of ``ids (B, S)`` (no BOS added here)."""
        x = self.embed(ids.to(self.device)) if x is None else x
        for i in range(start, self.config.layers):
            x = self.layer(i, x, projection, stats)
        return self.head(x)
