"""Helpers shared by the tests: the independent quantizer oracle and test data."""

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


def heavy_tailed(shape, generator, dtype=torch.bfloat16):
    """Gaussian with a few large outliers and a per-row magnitude spread."""
    x = torch.randn(shape, generator=generator)
    x = x * torch.exp(torch.randn(shape[:-1] + (1,), generator=generator))
    outliers = torch.rand(shape, generator=generator) < 0.002
    x = torch.where(outliers, x * 40.0, x)
    return x.to(dtype)
