"""The peer-library flavors: torchao and ModelOpt reproduced byte for byte, and the
conformance table's claims."""

import pytest
import torch

from nvfp4lab import dequantize_nvfp4, flavors


@pytest.mark.parametrize("name", list(flavors.standard_inputs()))
def test_torchao_flavor_equals_torchao_bytes(name):
    torchao_nvfp4 = pytest.importorskip("torchao.prototype.mx_formats.nvfp4_tensor")
    x = flavors.standard_inputs()[name]
    scales, data = torchao_nvfp4.nvfp4_quantize(x, per_tensor_scale=torchao_nvfp4.per_tensor_amax_to_scale(x.float().abs().max()))
    ours = flavors.quantize_flavor(x, "torchao")
    assert torch.equal(ours.scales.view(torch.uint8), scales.view(torch.uint8))
    assert torch.equal(ours.data.view(torch.uint8), data.view(torch.uint8))


@pytest.mark.parametrize("name", list(flavors.standard_inputs()))
def test_modelopt_flavor_equals_modelopt_bytes(name):
    qtensor = pytest.importorskip("modelopt.torch.quantization.qtensor.nvfp4_tensor")
    x = flavors.standard_inputs()[name]
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


def test_flavors_dequantize_to_nearly_the_same_values():
    x = flavors.standard_inputs()["gaussian fp32"]
    reference = dequantize_nvfp4(flavors.quantize_flavor(x, "nvfp4lab"))
    for flavor in flavors.FLAVORS:
        values = dequantize_nvfp4(flavors.quantize_flavor(x, flavor))
        assert ((values - reference).norm() / reference.norm()) < 1e-3, flavor
    with pytest.raises(ValueError, match="flavor"):
        flavors.quantize_flavor(x, "cublas")
