"""MSE-search calibrator: pick the global scale that minimises a quantization error.

Candidates are ``gs_j = m_j · amax / 2688`` for multipliers ``m_j = 2^(j/8)``,
``j = -40 … 8`` (1/32 … 2, 49 candidates), ``amax`` the running max over every observed
token. The error is measured on a uniform sample of observed tokens (bottom-k sampling
by random keys, at most ``sample_tokens``, so memory is O(sample_tokens · G · K) however
many batches stream by), as

* ``target="activations"``: ``Σ (x − x̂)²`` over the sample (the quantizer's own error);
* ``target="output"``: ``Σ (z − ẑ)²`` with ``z = x @ W`` and ``ẑ = x̂ @ Ŵ`` (the layer's
  error, with the weights quantized as deployed; needs ``weights (G, K, N)``).

Per group the search runs independently (the error of group g depends only on gs[g]);
shared, it minimises the sum over groups. Cost: one quantization (and, for ``output``,
one grouped matmul) of the sample per candidate.
"""

from __future__ import annotations

import torch

from nvfp4lab import validation as v
from nvfp4lab.calibration.base import Calibrator
from nvfp4lab.formats import GLOBAL_SCALE_DIVISOR
from nvfp4lab.quantize import dequantize_nvfp4, dynamic_global_scale, quantize_nvfp4

MULTIPLIERS = tuple(2.0 ** (j / 8) for j in range(-40, 9))
TARGETS = ("activations", "output")


class MseCalibrator(Calibrator):
    def __init__(
        self,
        sharing: str = "per_group",
        target: str = "activations",
        weights: torch.Tensor | None = None,
        sample_tokens: int = 2048,
        seed: int = 0,
        groups: int | None = None,
    ):
        super().__init__(sharing, groups)
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}; got {target!r}")
        if target == "output":
            if weights is None:
                raise ValueError("target='output' needs weights (G, K, N)")
            v.check_tensor(weights, "weights")
            v.check_ndim(weights, "weights", 3, "(G, K, N)")
            v.check_finite(weights, "weights")
        if sample_tokens <= 0:
            raise ValueError(f"sample_tokens must be positive; got {sample_tokens}")
        self.target = target
        self.weights = weights
        self.sample_tokens = sample_tokens
        self.generator = torch.Generator().manual_seed(seed)
        self.sample: torch.Tensor | None = None  # (S, G, K) float32
        self.keys: torch.Tensor | None = None  # (S,) random priorities
        self.errors: torch.Tensor | None = None  # (len(MULTIPLIERS), G) of the last search

    def _observe(self, x: torch.Tensor) -> None:
        keys = torch.rand(x.shape[0], generator=self.generator)
        sample = x.detach().to(torch.float32)
        if self.sample is not None:
            sample, keys = torch.cat([self.sample, sample]), torch.cat([self.keys, keys])
        keep = torch.topk(keys, min(self.sample_tokens, keys.shape[0])).indices.sort().values
        self.sample, self.keys = sample[keep.to(sample.device)], keys[keep]

    def _errors(self, x: torch.Tensor) -> torch.Tensor:
        """``(len(MULTIPLIERS), G)`` float64 squared errors of the candidates."""
        base = self.amax.to(x.device) / GLOBAL_SCALE_DIVISOR
        if self.sharing == "shared":
            base = base.max().expand(x.shape[1])
        reference = None
        weights_q = None
        if self.target == "output":
            w = self.weights.detach().to(torch.float32).to(x.device)  # (G, K, N)
            w_nk = w.transpose(1, 2).contiguous()
            gs_w = dynamic_global_scale(w_nk, per_group=True, group_dim=0)
            weights_q = dequantize_nvfp4(quantize_nvfp4(w_nk, gs_w, group_dim=0)).double()  # (G, N, K)
            reference = torch.einsum("tgk,gkn->tgn", x.double(), w.double())
        rows = []
        for multiplier in MULTIPLIERS:  # a fixed search grid, not data
            gs = (base * multiplier).to(torch.float32).clamp(min=2.0**-126)
            x_hat = dequantize_nvfp4(quantize_nvfp4(x, gs, check_finite=False)).double()
            if self.target == "activations":
                error = (x_hat - x.double()).square()
            else:
                error = (torch.einsum("tgk,gnk->tgn", x_hat, weights_q) - reference).square()
            rows.append(error.sum(dim=(0, 2)))
        return torch.stack(rows)

    def global_scale(self) -> torch.Tensor:
        self._require_data()
        errors = self._errors(self.sample).cpu()
        self.errors = errors
        base = self.amax.cpu() / GLOBAL_SCALE_DIVISOR
        multipliers = torch.tensor(MULTIPLIERS, dtype=torch.float64)
        if self.sharing == "shared":
            best = int(errors.sum(dim=1).argmin())
            gs = (base.max() * MULTIPLIERS[best]).expand(self.groups)
        else:
            gs = base.double() * multipliers[errors.argmin(dim=0)]
        return gs.to(torch.float32).clamp(min=2.0**-126).contiguous().to(self.amax.device)
