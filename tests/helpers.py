"""Helpers shared by the tests: the independent quantizer oracle and test data."""

import math

import ml_dtypes
import numpy as np
import torch


def oracle_quantize(x: np.ndarray, global_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NVFP4 quantization written independently of nvfp4lab: numpy float32 arithmetic and
    ml_dtypes' own E4M3 / E2M1 casts (round to nearest even).

    ``x``: (rows, K) float32; ``global_scale``: float32 scalar or (rows,) array.
    Returns (codes (rows, K) uint8 0..15, scale bytes (rows, K/16) uint8).
    """
    x = x.astype(np.float32)
    rows, k = x.shape
    gs = np.broadcast_to(np.asarray(global_scale, np.float32).reshape(-1, 1), (rows, k // 16))
    blocks = x.reshape(rows, k // 16, 16)
    amax = np.abs(blocks).max(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        scale_f32 = (amax / np.float32(6.0)).astype(np.float32) / gs
        scale = np.minimum(scale_f32, np.float32(448.0)).astype(ml_dtypes.float8_e4m3fn)
        scale_value = scale.astype(np.float32)
        multiplier = (np.float32(1.0) / gs).astype(np.float32) / scale_value
        multiplier = np.minimum(multiplier, np.finfo(np.float32).max).astype(np.float32)
        multiplier = np.where(scale_value > 0, multiplier, np.float32(0.0)).astype(np.float32)
        scaled = np.clip(blocks * multiplier[..., None], -6.0, 6.0).astype(np.float32)
    codes = scaled.astype(ml_dtypes.float4_e2m1fn).view(np.uint8) & 0x0F
    return codes.reshape(rows, k), scale.view(np.uint8)


def oracle_dequantize(packed: np.ndarray, scale_bytes: np.ndarray, global_scale) -> np.ndarray:
    """NVFP4 dequantization written independently of nvfp4lab: unpack the nibbles (element
    2i low, 2i+1 high), decode codes and scale bytes with ml_dtypes, then
    ``(e2m1 · scale) · gs`` in numpy float32.

    ``packed``: (rows, K/2) uint8; ``scale_bytes``: (rows, K/16) uint8; ``global_scale``:
    float32 scalar or (rows,). Returns (rows, K) float32.
    """
    rows = packed.shape[0]
    codes = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(rows, -1)
    values = codes.astype(np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float32)
    scales = scale_bytes.astype(np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    gs = np.asarray(global_scale, np.float32).reshape(-1, 1, 1)
    with np.errstate(invalid="ignore", over="ignore"):
        blocks = (values.reshape(rows, -1, 16) * scales[..., None]).astype(np.float32) * gs
    return blocks.astype(np.float32).reshape(rows, -1)


def heavy_tailed(shape, generator, dtype=torch.bfloat16):
    """Gaussian with a few large outliers and a per-row magnitude spread."""
    x = torch.randn(shape, generator=generator)
    x = x * torch.exp(torch.randn(shape[:-1] + (1,), generator=generator))
    outliers = torch.rand(shape, generator=generator) < 0.002
    x = torch.where(outliers, x * 40.0, x)
    return x.to(dtype)


def gqa_attention(x, w_q, w_k, w_v, b_v, heads, kv_heads, d):
    """Causal softmax attention with grouped KV heads (repeat_interleave): ``x (S, hidden)``
    float64 → the attention output ``(S, heads·d)`` before the output projection."""
    s = x.shape[0]
    q = (x @ w_q.T).view(s, heads, d).transpose(0, 1)
    k = (x @ w_k.T).view(s, kv_heads, d).transpose(0, 1)
    v = (x @ w_v.T + b_v).view(s, kv_heads, d).transpose(0, 1)
    k, v = k.repeat_interleave(heads // kv_heads, 0), v.repeat_interleave(heads // kv_heads, 0)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    mask = torch.ones(s, s, dtype=torch.bool).tril()
    p = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return (p @ v).transpose(0, 1).reshape(s, heads * d)


def gqa_layer(generator, heads, kv_heads, d, hidden, seq, qk_scale):
    """Random float64 ``(x, w_q, w_k, w_v, b_v, w_o)`` of one GQA attention block (q/k weights
    divided by ``qk_scale`` to keep the softmax away from one-hot)."""
    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    return (randn(seq, hidden), randn(heads * d, hidden) / qk_scale, randn(kv_heads * d, hidden) / qk_scale,
            randn(kv_heads * d, hidden), randn(kv_heads * d), randn(hidden, heads * d))
