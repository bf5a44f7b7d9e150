"""Synthetic attention outputs and ``wo_a`` weights modelled on DeepSeek V4 (NVFP4.md §5).

Per head, ``D = 512`` dims: the first 448 ("nope") are heavy-tailed (Student-t with
``tail_dof`` (an integer > 2) degrees of freedom, unit variance), the last 64 (RoPE, inverse-rotated
before ``wo_a``) Gaussian with standard deviation ``rope_std``. Every head is multiplied
by a fixed gain ``10^-U(0, head_spread_decades)`` (heads that put mass on the attention
sink come out shrunk), every token by ``exp(N(0, token_log_std))``, and a fraction
``outlier_token_fraction`` of tokens by ``outlier_scale``. Weights ``(G, K, N)`` are
Gaussian ``/ sqrt(K)`` with per-output-channel gains ``10^-U(0, weight_channel_spread_decades)``.

The model (head gains, weights) depends on ``model_seed`` only; tokens on the ``seed``
given to :func:`activations`, so calibration and evaluation sets come from one model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class SyntheticV4:
    groups: int = 8
    heads_per_group: int = 8
    head_dim: int = 512
    rope_dims: int = 64
    out_features: int = 1024
    head_spread_decades: float = 2.0
    tail_dof: int = 5
    rope_std: float = 1.5
    token_log_std: float = 0.3
    outlier_token_fraction: float = 0.002
    outlier_scale: float = 20.0
    weight_channel_spread_decades: float = 1.0
    model_seed: int = 0

    @property
    def heads(self) -> int:
        return self.groups * self.heads_per_group

    @property
    def in_features(self) -> int:
        return self.heads_per_group * self.head_dim

    def with_(self, **changes) -> SyntheticV4:
        return replace(self, **changes)


#: The shapes of NVFP4.md §5 (per tensor-parallel rank).
FLASH = SyntheticV4()
PRO_TP2 = SyntheticV4(groups=8)  # V4-Pro: 16 groups, 8 per rank at TP2
SKETCH = SyntheticV4(heads_per_group=16, out_features=1536)  # the original sketch: K=8192


def head_gains(config: SyntheticV4) -> torch.Tensor:
    g = torch.Generator().manual_seed(config.model_seed)
    return 10.0 ** (-config.head_spread_decades * torch.rand(config.heads, generator=g))


def activations(config: SyntheticV4, tokens: int, seed: int) -> torch.Tensor:
    """``o (tokens, H, D)`` bf16."""
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0; got {tokens}")
    g = torch.Generator().manual_seed(10_000 + seed)
    nope = config.head_dim - config.rope_dims
    normal = torch.randn(tokens, config.heads, nope, generator=g)
    # Student-t: normal / sqrt(chi2_dof / dof), chi2 as a sum of dof squared normals (seeded)
    chi2 = torch.randn(config.tail_dof, tokens, config.heads, nope, generator=g).square().sum(dim=0)
    t = normal / torch.sqrt(chi2 / config.tail_dof) * ((config.tail_dof - 2) / config.tail_dof) ** 0.5
    rope = torch.randn(tokens, config.heads, config.rope_dims, generator=g) * config.rope_std
    o = torch.cat([t, rope], dim=-1) * head_gains(config)[None, :, None]
    o = o * torch.exp(config.token_log_std * torch.randn(tokens, 1, 1, generator=g))
    outliers = torch.rand(tokens, generator=g) < config.outlier_token_fraction
    o[outliers] *= config.outlier_scale
    return o.to(torch.bfloat16)


def weights(config: SyntheticV4) -> torch.Tensor:
    """``W (G, K, N)`` bf16."""
    g = torch.Generator().manual_seed(20_000 + config.model_seed)
    w = torch.randn(config.groups, config.in_features, config.out_features, generator=g) / config.in_features**0.5
    gain = 10.0 ** (-config.weight_channel_spread_decades * torch.rand(config.out_features, generator=g))
    return (w * gain).to(torch.bfloat16)


def grouped(o: torch.Tensor, config: SyntheticV4) -> torch.Tensor:
    """``(T, H, D)`` -> ``(T, G, K)`` (heads of a group contiguous, as ``wo_a``)."""
    return o.reshape(o.shape[0], config.groups, config.in_features)
