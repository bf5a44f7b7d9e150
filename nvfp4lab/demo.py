"""A small demo: quantize a DeepSeek-V4-Flash-shaped ``wo_a`` layer (G=8, K=4096,
N=1024) and print the error of ``z`` for each activation-scale mode.

The activations are synthetic: Gaussian heads whose magnitudes spread over ``spread``
orders of magnitude (the attention sink shrinks some heads), with rare outlier tokens.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from nvfp4lab import metrics
from nvfp4lab.linear import Nvfp4GroupedLinear

FLASH = dict(n_local_groups=8, heads_per_group=8, head_dim=512, o_lora_rank=1024)


def synthetic_attention_output(tokens: int, gain: torch.Tensor, head_dim: int, seed: int) -> torch.Tensor:
    """``(tokens, heads, head_dim)`` bf16: Gaussian heads times ``gain (heads,)``, 0.1% outliers ×20."""
    g = torch.Generator().manual_seed(seed)
    heads = gain.shape[0]
    o = torch.randn(tokens, heads, head_dim, generator=g) * gain[None, :, None]
    outlier = torch.rand(tokens, heads, head_dim, generator=g) < 1e-3
    return torch.where(outlier, o * 20.0, o).to(torch.bfloat16)


def run_demo(tokens: int = 128, spread: float = 2.0, seed: int = 0) -> list[dict]:
    """Rows of ``{mode, sqnr_db, worst_group_sqnr_db, clipped_fraction, subnormal_scale_fraction}``."""
    g = torch.Generator().manual_seed(seed)
    groups, k, n = FLASH["n_local_groups"], FLASH["heads_per_group"] * FLASH["head_dim"], FLASH["o_lora_rank"]
    heads = groups * FLASH["heads_per_group"]
    w = (torch.randn(groups, k, n, generator=g) / k**0.5).to(torch.bfloat16)
    gain = 10.0 ** (-spread * torch.rand(heads, generator=g))  # per-head magnitudes: the model's
    calibration = synthetic_attention_output(4 * tokens, gain, FLASH["head_dim"], seed + 1)
    o = synthetic_attention_output(tokens, gain, FLASH["head_dim"], seed + 2)
    unquantized = torch.einsum("tgk,gkn->tgn", o.view(tokens, groups, k).double(), w.double())

    rows = []
    modes = [(share, source) for source in ("static", "dynamic") for share in ("shared", "per_group")]
    for share, source in tqdm(modes, desc="activation-scale modes"):
        layer = Nvfp4GroupedLinear(**FLASH, max_num_tokens=tokens, activation_scale=share, activation_scale_source=source)
        layer.set_bf16_weight(w)
        layer.finalize_weights()
        if source == "static":
            layer.compute_activation_global_scale(calibration)
        z = layer(o)
        stats = metrics.quantization_stats(o.view(tokens, groups, k), layer.quantize_activations(o))
        rows.append(
            dict(
                mode=f"{share} {source}",
                sqnr_db=metrics.sqnr_db(unquantized, z),
                worst_group_sqnr_db=float(metrics.sqnr_db_per_group(unquantized, z).min()),
                clipped_fraction=stats["clipped_elements"] / stats["elements"],
                subnormal_scale_fraction=stats["subnormal_scale_blocks"] / stats["blocks"],
            )
        )
    return rows


def format_table(rows: list[dict]) -> str:
    header = "| activation scale | SQNR of z (dB) | worst group (dB) | clipped | subnormal block scales |"
    lines = [header, "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['sqnr_db']:.2f} | {r['worst_group_sqnr_db']:.2f} |"
            f" {r['clipped_fraction']:.2e} | {r['subnormal_scale_fraction']:.2%} |"
        )
    return "\n".join(lines)
