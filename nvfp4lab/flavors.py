"""The NVFP4 conventions of the peer libraries, as flavors of the quantizer.

Every library computes ``s_b = e4m3(amax_b / 6 · S_enc)`` and ``q = rne_e2m1(x · S_enc / s_b)``
but orders and rounds the steps differently (NVFP4.md §2), so bytes differ near ties. A
flavor reproduces one library's convention exactly, to deploy-match its numerics:

=======================  ==================================================================
flavor                   block scale / element multiplier (all float32, IEEE)
=======================  ==================================================================
``nvfp4lab``             ``e4m3(min((amax_b/6)/gs, 448))`` / ``(1/gs)/s``, 0 if s = 0 (docs/numerics.md)
``torchao``              ``e4m3(clamp((amax_b/6)/gs, 2^-6, 448))`` / ``(1/gs)/s``       (verified)
``modelopt``             ``e4m3(clamp(amax_b/(6·gs), 2^-9, 448))``, zero blocks 1.0 /
                         true division ``x/(s·gs)``, sign from ``x < 0``                  (verified)
``transformer_engine``   encode form ``S = 2688/amax`` (1 if amax = 0): ``e4m3(amax_b·(S·(1/6)))``
                         / ``min(1/(s·(1/S)), FLT_MAX)``                          (from its source's
                         description; TE's kernels do not run here)
``flashinfer_precise``   ``S = 2688/amax``: ``e4m3(S·(amax_b/6))`` / ``1/(s·(1/S))``, 0 if s = 0
                         (FlashInfer with ``FLASHINFER_DISABLE_FP4_QUANT_FAST_MATH``; vLLM's
                         default uses approximate reciprocals, which no CPU code reproduces)
=======================  ==================================================================

``gs`` is the dequant-form global scale ``amax/2688``. The returned :class:`NVFP4Tensor`
carries each flavor's own dequant-form global scale (``1/S`` for the encode-form ones).
"""

from __future__ import annotations

import torch

from nvfp4lab.formats import E2M1_MAX, E4M3_MAX, GLOBAL_SCALE_DIVISOR, e2m1_code_from_float, e4m3_from_float, pack_e2m1
from nvfp4lab.quantize import BLOCK, FLT_MAX, NVFP4Tensor, global_scale_from_amax, quantize_nvfp4, true_divide

FLAVORS = ("nvfp4lab", "torchao", "modelopt", "transformer_engine", "flashinfer_precise")


def _finish(x, blocks, scales, multiplier, global_scale, sign_from_input=False) -> NVFP4Tensor:
    scaled = (blocks * multiplier[..., None]).clamp(-E2M1_MAX, E2M1_MAX)
    codes = e2m1_code_from_float(scaled)
    if sign_from_input:  # ModelOpt: sign bit from x < 0, so -0.0 encodes as +0
        codes = (codes & 7) | ((blocks < 0).to(torch.uint8) << 3)
    return NVFP4Tensor(pack_e2m1(codes.reshape(x.shape)), scales, global_scale, x.shape, x.dtype)


def _division(blocks, scales, gs) -> torch.Tensor:
    """ModelOpt's element step: x / (s·gs) as a multiplier-free true division."""
    return true_divide(blocks, (scales.to(torch.float32) * gs)[..., None])


def quantize_flavor(x: torch.Tensor, flavor: str, amax: torch.Tensor | None = None) -> NVFP4Tensor:
    """Quantize ``x (..., K)`` with one global scale from ``amax`` (default: ``max |x|``),
    following ``flavor``'s convention (see the module docstring)."""
    if flavor not in FLAVORS:
        raise ValueError(f"flavor must be one of {FLAVORS}; got {flavor!r}")
    amax = (x.abs().max() if amax is None else torch.as_tensor(amax)).to(torch.float32)
    if flavor == "nvfp4lab":
        return quantize_nvfp4(x, global_scale_from_amax(amax))
    blocks = x.to(torch.float32).reshape(*x.shape[:-1], x.shape[-1] // BLOCK, BLOCK)
    block_amax = blocks.abs().amax(dim=-1)
    if flavor == "torchao":
        gs = true_divide(amax, GLOBAL_SCALE_DIVISOR)
        scales = true_divide(true_divide(block_amax, E2M1_MAX), gs).clamp(min=2.0**-6, max=E4M3_MAX).to(torch.float8_e4m3fn)
        multiplier = true_divide(true_divide(1.0, gs), scales.to(torch.float32))
        return _finish(x, blocks, scales, multiplier, gs)
    if flavor == "modelopt":
        gs = true_divide(amax, GLOBAL_SCALE_DIVISOR)
        scale_f32 = true_divide(block_amax, E2M1_MAX * gs)
        scale_f32 = torch.where(scale_f32 == 0, torch.ones_like(scale_f32), scale_f32)
        scales = scale_f32.clamp(min=2.0**-9, max=E4M3_MAX).to(torch.float8_e4m3fn)
        scaled = _division(blocks, scales, gs)
        return _finish(x, scaled, scales, torch.ones_like(block_amax), gs, sign_from_input=True)
    encode = torch.where(amax > 0, true_divide(GLOBAL_SCALE_DIVISOR, amax), torch.ones_like(amax))
    decode = true_divide(1.0, encode)
    if flavor == "transformer_engine":
        scales = e4m3_from_float(block_amax * (encode * true_divide(1.0, E2M1_MAX)))
        multiplier = true_divide(1.0, scales.to(torch.float32) * decode).clamp(max=FLT_MAX)
        return _finish(x, blocks, scales, multiplier, decode)
    scales = e4m3_from_float(encode * true_divide(block_amax, E2M1_MAX))  # flashinfer_precise
    scale_value = scales.to(torch.float32)
    multiplier = torch.where(scale_value > 0, true_divide(1.0, scale_value * decode), torch.zeros_like(scale_value))
    return _finish(x, blocks, scales, multiplier, decode)


WHY = {
    ("nvfp4lab", "torchao"): "torchao clamps block scales up to 2^-6 and stores zero blocks as 0x08",
    ("nvfp4lab", "modelopt"): "ModelOpt divides x/(s·gs) once (we multiply by (1/gs)/s: near-tie codes differ), "
                              "forms amax_b/(6·gs) in one division, clamps scales to >= 2^-9, stores zero blocks "
                              "as 1.0 (0x38) and encodes -0.0 as +0",
    ("nvfp4lab", "transformer_engine"): "encode-form global scale 2688/amax and amax_b·(S·(1/6)); a block whose scale "
                                        "underflows to 0 gets multiplier FLT_MAX, so its codes saturate to ±6 "
                                        "(values still 0)",
    ("nvfp4lab", "flashinfer_precise"): "encode-form global scale and S·(amax_b/6); multiplier 1/(s·(1/S))",
}


def standard_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    """The inputs of the conformance table, ``(256, 1024)`` each: bf16 and float32
    Gaussians; blocks spread over 8 decades (small block scales); 10 % all-zero blocks
    and signed zeros."""
    g = torch.Generator().manual_seed(seed)
    gaussian = torch.randn(256, 1024, generator=g)
    spread = gaussian * 10.0 ** (-8 * torch.rand(256, 64, 1, generator=g)).repeat_interleave(16, 2).reshape(256, 1024)
    zeros = gaussian.clone()
    zero_blocks = (torch.rand(256, 64, generator=g) < 0.1).repeat_interleave(16, 1)
    zeros[zero_blocks] = 0.0
    zeros[:, :16] = -0.0
    return {
        "gaussian bf16": gaussian.to(torch.bfloat16),
        "gaussian fp32": gaussian,
        "8-decade block spread": spread,
        "zero blocks": zeros,
    }


def conformance_table(inputs: dict[str, torch.Tensor] | None = None) -> list[dict]:
    """For each pair of flavors and each input, the fractions of scale bytes and of
    element codes (nibbles) on which the two flavors differ."""
    from nvfp4lab.formats import unpack_e2m1

    rows = []
    for name, x in (inputs or standard_inputs()).items():
        quantized = {f: quantize_flavor(x, f) for f in FLAVORS}
        for i, a in enumerate(FLAVORS):
            for b in FLAVORS[i + 1 :]:
                qa, qb = quantized[a], quantized[b]
                rows.append({
                    "input": name,
                    "flavors": f"{a} vs {b}",
                    "scale_bytes_differ": float((qa.scales.view(torch.uint8) != qb.scales.view(torch.uint8)).double().mean()),
                    "element_codes_differ": float((unpack_e2m1(qa.data) != unpack_e2m1(qb.data)).double().mean()),
                    "why": WHY.get((a, b), "each differs from nvfp4lab as its own row says"),
                })
    return rows


def conformance_markdown(rows: list[dict] | None = None) -> str:
    """The conformance table as markdown: one row per pair, one column pair per input."""
    rows = rows or conformance_table()
    inputs = list(dict.fromkeys(r["input"] for r in rows))
    pairs = list(dict.fromkeys(r["flavors"] for r in rows))
    cell = {(r["input"], r["flavors"]): r for r in rows}
    header = "| flavors | " + " | ".join(f"{i}: scales / codes" for i in inputs) + " | why |"
    lines = [header, "|---|" + "---|" * (len(inputs) + 1)]
    for pair in pairs:
        values = " | ".join(
            f"{cell[(i, pair)]['scale_bytes_differ']:.2%} / {cell[(i, pair)]['element_codes_differ']:.3%}" for i in inputs
        )
        lines.append(f"| {pair} | {values} | {cell[(inputs[0], pair)]['why']} |")
    return "\n".join(lines)
