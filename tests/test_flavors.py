"""The peer-library flavors: torchao and ModelOpt reproduced byte for byte, every flavor
equal to its documented rule (an oracle written here from ``../shared/design/NVFP4.md`` §2
in numpy float32 with ml_dtypes' casts, no nvfp4lab code) on inputs that exercise where that
rule differs from nvfp4lab's, and the conformance table's claims.

``test_nvfp4lab_under_a_flavors_name_is_caught`` runs every check with nvfp4lab's own
quantizer substituted for the flavor: each exercising input must catch it."""

import functools

import ml_dtypes
import numpy as np
import pytest
import torch

from nvfp4lab import dequantize_nvfp4, flavors
from nvfp4lab.formats import unpack_e2m1

F32 = np.float32
FLT_MAX = np.finfo(np.float32).max
AMAX = F32(2.5234003)  # a global amax whose encode-form 1/(2688/amax) differs from amax/2688 in the last bit


def _nudged(values: np.ndarray, steps: int) -> np.ndarray:
    """float32 ``values (n,)`` and their neighbours up to ``steps`` ulps either way, ((2·steps+1)·n,)."""
    out, up, down = [values], values, values
    for _ in range(steps):
        up, down = np.nextafter(up, F32(np.inf)), np.nextafter(down, F32(0))
        out += [up, down]
    return np.stack(out).astype(F32).reshape(-1)


def _rows_of_blocks(blocks: np.ndarray) -> torch.Tensor:
    """Blocks ``(n, 16)`` padded with zero blocks to rows of 1024 elements, the last block's
    first element set to :data:`AMAX` (the global amax); a float32 ``(rows, 1024)`` tensor."""
    padded = np.zeros((-(-(len(blocks) + 1) // 64) * 64, 16), F32)
    padded[: len(blocks)] = blocks
    padded[-1, 0] = AMAX
    return torch.from_numpy(padded.reshape(-1, 1024))


def _scale_ties() -> torch.Tensor:
    """Blocks whose ``amax_b / 6 / gs`` lies within 3 ulps of a midpoint between two E4M3
    values (so the order of the scale's float32 operations decides its byte)."""
    gs = AMAX / F32(2688)
    grid = np.arange(1, 0x7F, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(F32)
    amaxes = _nudged(((grid[:-1] + grid[1:]) / F32(2) * F32(6) * gs).astype(F32), 3)
    amaxes = amaxes[amaxes < AMAX]
    blocks = amaxes[:, None] * np.linspace(-1, 1, 16, dtype=F32)[::-1]
    return _rows_of_blocks(blocks.astype(F32))


def _element_ties() -> torch.Tensor:
    """Blocks of every normal scale s (amax 6·s·gs) whose elements lie within 2 ulps of the
    E2M1 decision points times s·gs (so the element multiplier's rounding decides codes)."""
    gs = AMAX / F32(2688)
    points = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], F32)
    blocks = []
    for s in np.arange(0x08, 0x78, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(F32):
        near = _nudged((points * s * gs).astype(F32), 2)
        payload = np.concatenate([near, -near]).reshape(-1, 14)
        block = np.zeros((len(payload), 16), F32)
        block[:, :14], block[:, 14] = payload, F32(6) * s * gs
        blocks.append(block)
    return _rows_of_blocks(np.concatenate(blocks))


@functools.cache
def _inputs() -> dict[str, torch.Tensor]:
    """The conformance table's inputs plus near-tie inputs and an all-zero tensor."""
    return {**flavors.standard_inputs(), "scale ties": _scale_ties(), "element ties": _element_ties(),
            "all zero": torch.zeros(4, 64)}


def _e2m1_codes(scaled: np.ndarray) -> np.ndarray:
    """ml_dtypes' round-to-nearest-even E2M1 codes (0..15, sign kept) of float32 ``scaled``."""
    return scaled.astype(ml_dtypes.float4_e2m1fn).view(np.uint8) & 0x0F


def _e4m3(scale: np.ndarray) -> np.ndarray:
    """ml_dtypes' E4M3 of float32 ``scale``, saturating at 448."""
    return np.minimum(scale, F32(448)).astype(ml_dtypes.float8_e4m3fn)


def _encode_form_oracle(blocks, block_amax, amax, flavor):
    """TE: ``fp8(amax_b·(S·(1/6)))``, multiplier ``min(1/(s·S_dec), FLT_MAX)``; FlashInfer
    precise: ``fp8(S·(amax_b/6))``, multiplier ``1/(s·S_dec)`` or 0 for s = 0; both with
    ``S = 2688/amax`` (1 when amax = 0) and ``S_dec = 1/S``."""
    encode = F32(2688) / amax if amax > 0 else F32(1)
    decode = F32(1) / encode
    if flavor == "transformer_engine":
        scales = _e4m3(block_amax * (encode * (F32(1) / F32(6))))
        multiplier = np.minimum(F32(1) / (scales.astype(F32) * decode), FLT_MAX)
    else:
        scales = _e4m3(encode * (block_amax / F32(6)))
        value = scales.astype(F32)
        multiplier = np.where(value > 0, F32(1) / (value * decode), F32(0))
    scaled = np.clip(blocks * multiplier.astype(F32)[..., None], -6, 6).astype(F32)
    return _e2m1_codes(scaled), scales, decode


def _torchao_oracle(blocks, block_amax, amax):
    """torchao: ``gs = amax/2688``, scale ``e4m3(clamp((amax_b/6)/gs, 2^-6, 448))``,
    element ``x·((1/gs)/s)``."""
    gs = amax / F32(2688)
    scales = _e4m3(np.clip((block_amax / F32(6)) / gs, F32(2**-6), F32(448)))
    multiplier = (F32(1) / gs) / scales.astype(F32)
    return _e2m1_codes(np.clip(blocks * multiplier[..., None], -6, 6).astype(F32)), scales, gs


def _modelopt_oracle(blocks, block_amax, amax):
    """ModelOpt: scale ``e4m3(clamp(amax_b/(6·gs), 2^-9, 448))`` with 1.0 for zero blocks,
    element ``x/(s·gs)`` (one division), sign bit from ``x < 0``."""
    gs = amax / F32(2688)
    scale = block_amax / (F32(6) * gs)
    scales = _e4m3(np.clip(np.where(scale == 0, F32(1), scale), F32(2**-9), F32(448)))
    scaled = np.clip(blocks / (scales.astype(F32) * gs)[..., None], -6, 6).astype(F32)
    return (_e2m1_codes(scaled) & 7) | ((blocks < 0).astype(np.uint8) << 3), scales, gs


def oracle(x: torch.Tensor, flavor: str) -> tuple[np.ndarray, np.ndarray, np.float32]:
    """``flavor``'s NVFP4 bytes of ``x (rows, K)`` by its documented rule, independently of
    nvfp4lab: (codes (rows, K) uint8, scale bytes (rows, K/16) uint8, float32 dequant-form
    global scale)."""
    values = x.float().numpy()
    blocks = values.reshape(values.shape[0], -1, 16)
    block_amax, amax = np.abs(blocks).max(-1), F32(np.abs(values).max())
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        if flavor == "torchao":
            codes, scales, gs = _torchao_oracle(blocks, block_amax, amax)
        elif flavor == "modelopt":
            codes, scales, gs = _modelopt_oracle(blocks, block_amax, amax)
        else:
            codes, scales, gs = _encode_form_oracle(blocks, block_amax, amax, flavor)
    return codes.reshape(values.shape), scales.view(np.uint8), F32(gs)


def mismatches(quantize, flavor: str, names: list[str]) -> list[str]:
    """The inputs (of ``names``) on which ``quantize(x, flavor)`` differs from
    :func:`oracle` in any element code, scale byte or the global scale's bits."""
    differing = []
    for name in names:
        x = _inputs()[name]
        q = quantize(x, flavor)
        codes, scales, gs = oracle(x, flavor)
        same = (np.array_equal(unpack_e2m1(q.data).numpy(), codes)
                and np.array_equal(q.scales.view(torch.uint8).numpy(), scales)
                and np.float32(q.global_scale.float()).tobytes() == gs.tobytes())
        if not same:
            differing.append(name)
    return differing


# Where each flavor's documented rule gives other bytes than nvfp4lab's (module docstring of
# nvfp4lab.flavors, docs/conformance.md): the inputs that exercise it.
EXERCISED = {
    # clamp to >= 2^-6, zero blocks 0x08
    "torchao": ["8-decade block spread", "zero blocks", "scale ties"],
    # one division x/(s·gs), clamp to >= 2^-9, zero blocks 0x38, -0.0 encoded +0
    "modelopt": ["gaussian bf16", "8-decade block spread", "zero blocks", "element ties"],
    # encode-form global scale 1/(2688/amax) (1 for amax 0), amax_b·(S·(1/6)), saturated codes of underflowed blocks
    "transformer_engine": ["gaussian fp32", "8-decade block spread", "scale ties", "element ties", "all zero"],
    # encode-form global scale, S·(amax_b/6), multiplier 1/(s·(1/S))
    "flashinfer_precise": ["gaussian fp32", "scale ties", "element ties", "all zero"],
}
ALL_ZERO_IS_NAN = {"torchao", "modelopt"}  # gs = 0: their scales are NaN (docs/numerics.md §4, difference 3)


@pytest.mark.parametrize("flavor", flavors.FLAVORS[1:])
def test_each_flavor_equals_its_documented_rule(flavor):
    names = [n for n in _inputs() if not (n == "all zero" and flavor in ALL_ZERO_IS_NAN)]
    assert mismatches(flavors.quantize_flavor, flavor, names) == []


@pytest.mark.parametrize("flavor", flavors.FLAVORS[1:])
def test_nvfp4lab_under_a_flavors_name_is_caught(flavor):
    """The mutation the issue describes, applied here: nvfp4lab's quantizer in place of the
    flavor must fail the check above on every input that exercises the flavor's rule."""
    def impostor(x, _flavor, amax=None):
        return flavors.quantize_flavor(x, "nvfp4lab", amax)

    assert mismatches(impostor, flavor, EXERCISED[flavor]) == EXERCISED[flavor]


def test_transformer_engine_saturates_the_codes_of_underflowed_blocks_and_keeps_them_zero():
    x = flavors.standard_inputs()["8-decade block spread"]
    te, ours = flavors.quantize_flavor(x, "transformer_engine"), flavors.quantize_flavor(x, "nvfp4lab")
    assert torch.equal(te.scales.view(torch.uint8), ours.scales.view(torch.uint8))
    underflowed = (te.scales.view(torch.uint8) == 0).repeat_interleave(16, -1) & (x != 0)
    assert underflowed.float().mean() > 0.2
    codes = unpack_e2m1(te.data)
    assert torch.equal(codes[underflowed], torch.where(x[underflowed] < 0, 15, 7).to(codes.dtype))  # ±6
    assert (unpack_e2m1(ours.data)[underflowed] & 7 == 0).all()
    assert (dequantize_nvfp4(te)[underflowed] == 0).all()


@pytest.mark.parametrize("flavor", ["transformer_engine", "flashinfer_precise"])
def test_encode_form_flavors_carry_the_reciprocal_of_2688_over_amax(flavor):
    x = flavors.standard_inputs()["gaussian fp32"]
    amax = F32(x.abs().max())
    gs = F32(flavors.quantize_flavor(x, flavor).global_scale)
    ours = F32(flavors.quantize_flavor(x, "nvfp4lab").global_scale)
    assert gs == F32(1) / (F32(2688) / amax) and ours == amax / F32(2688) and gs != ours
    assert flavors.quantize_flavor(torch.zeros(2, 32), flavor).global_scale == 1.0  # S = 1 when amax = 0
    assert flavors.quantize_flavor(torch.zeros(2, 32), "nvfp4lab").global_scale == 2.0**-126


def test_near_ties_split_the_encode_form_flavors_from_nvfp4lab_and_from_each_other():
    assert F32(1) / (F32(2688) / AMAX) != AMAX / F32(2688)
    assert all(x.abs().max() == AMAX for x in (_inputs()["scale ties"], _inputs()["element ties"]))
    def differ(name, a, b, what):
        qa, qb = flavors.quantize_flavor(_inputs()[name], a), flavors.quantize_flavor(_inputs()[name], b)
        if what == "scales":
            return int((qa.scales.view(torch.uint8) != qb.scales.view(torch.uint8)).sum())
        return int((unpack_e2m1(qa.data) != unpack_e2m1(qb.data)).sum())

    for flavor in ("transformer_engine", "flashinfer_precise"):
        assert differ("scale ties", "nvfp4lab", flavor, "scales") > 20
        assert differ("element ties", "nvfp4lab", flavor, "scales") == 0   # same scales ...
        assert differ("element ties", "nvfp4lab", flavor, "codes") > 100   # ... other multipliers
    assert differ("scale ties", "transformer_engine", "flashinfer_precise", "scales") > 20


@pytest.mark.parametrize("name", [n for n in _inputs() if n != "all zero"])
def test_torchao_flavor_equals_torchao_bytes(name):
    torchao_nvfp4 = pytest.importorskip("torchao.prototype.mx_formats.nvfp4_tensor")
    x = _inputs()[name]
    per_tensor_scale = torchao_nvfp4.per_tensor_amax_to_scale(x.float().abs().max())
    scales, data = torchao_nvfp4.nvfp4_quantize(x, per_tensor_scale=per_tensor_scale)
    ours = flavors.quantize_flavor(x, "torchao")
    assert torch.equal(ours.scales.view(torch.uint8), scales.view(torch.uint8))
    assert torch.equal(ours.data.view(torch.uint8), data.view(torch.uint8))


@pytest.mark.parametrize("name", [n for n in _inputs() if n != "all zero"])
def test_modelopt_flavor_equals_modelopt_bytes(name):
    qtensor = pytest.importorskip("modelopt.torch.quantization.qtensor.nvfp4_tensor")
    x = _inputs()[name]
    packed, scales, global_scale = qtensor.NVFP4QTensor.quantize(x.clone(), 16)
    ours = flavors.quantize_flavor(x, "modelopt")
    assert torch.equal(ours.global_scale, global_scale.float())
    assert torch.equal(ours.scales.view(torch.uint8), scales.view(torch.uint8))
    assert torch.equal(ours.data.view(torch.uint8), packed._quantized_data.view(torch.uint8))


def test_flavors_agree_on_plain_gaussians_and_split_where_the_docs_say():
    table = {(r["input"], r["flavors"]): r for r in flavors.conformance_table()}
    for pair in ("nvfp4lab vs torchao", "nvfp4lab vs transformer_engine", "nvfp4lab vs flashinfer_precise"):
        assert table[("gaussian fp32", pair)]["scale_bytes_differ"] == 0
        assert table[("gaussian fp32", pair)]["element_codes_differ"] == 0
    # ModelOpt's single division moves a few near-tie codes, never a scale
    assert 0 < table[("gaussian bf16", "nvfp4lab vs modelopt")]["element_codes_differ"] < 1e-3
    # Zero blocks: torchao 0x08 and ModelOpt 0x38 where nvfp4lab stores 0x00 — exactly the zero blocks
    x = flavors.standard_inputs()["zero blocks"]
    zero_fraction = float((x.reshape(256, 64, 16).abs().amax(-1) == 0).double().mean())
    assert table[("zero blocks", "nvfp4lab vs torchao")]["scale_bytes_differ"] == pytest.approx(zero_fraction)
    assert table[("zero blocks", "nvfp4lab vs modelopt")]["scale_bytes_differ"] == pytest.approx(zero_fraction)
    # Small block scales: torchao's 2^-6 and ModelOpt's 2^-9 clamps change many scales
    assert table[("8-decade block spread", "nvfp4lab vs torchao")]["scale_bytes_differ"] > 0.3
    assert table[("8-decade block spread", "nvfp4lab vs flashinfer_precise")]["scale_bytes_differ"] == 0
    # Underflowed blocks: Transformer Engine's capped multiplier saturates their codes, scales stay equal
    assert table[("8-decade block spread", "nvfp4lab vs transformer_engine")]["scale_bytes_differ"] == 0
    assert table[("8-decade block spread", "nvfp4lab vs transformer_engine")]["element_codes_differ"] > 0.2


def test_flavors_dequantize_to_nearly_the_same_values():
    x = flavors.standard_inputs()["gaussian fp32"]
    reference = dequantize_nvfp4(flavors.quantize_flavor(x, "nvfp4lab"))
    for flavor in flavors.FLAVORS:
        values = dequantize_nvfp4(flavors.quantize_flavor(x, flavor))
        assert ((values - reference).norm() / reference.norm()) < 1e-3, flavor
    with pytest.raises(ValueError, match="flavor"):
        flavors.quantize_flavor(x, "cublas")
