"""nvfp4lab.export: each serving format's tensors against the real packages (compressed-tensors,
ModelOpt): nibble order, linear scale layout, divisor vs multiplier, dequantized bits,
four-over-six weights, configs, grouped layers and the recipes that can travel."""

import pytest
import torch

from nvfp4lab import baselines
from nvfp4lab.export import compressed_tensors as ct
from nvfp4lab.export import conventions, grouped, modelopt, recipes
from nvfp4lab.quantize import dequantize_nvfp4, true_divide

ct_package = pytest.importorskip("compressed_tensors")
pytest.importorskip("modelopt")


def _weight(seed: int, shape=(48, 64)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.05


def _quantized(w, rule="amax", block_rule="max6"):
    gs = conventions.weight_global_scale(w, rule=rule, block_rule=block_rule)
    return conventions.quantize_weight(w, gs, block_rule=block_rule)


def _ct_decompress(tensors: dict) -> torch.Tensor:
    """compressed-tensors' own decompression of one module (bf16, as transformers loads it)."""
    from compressed_tensors.compressors.nvfp4 import NVFP4PackedCompressor
    from compressed_tensors.quantization import QuantizationScheme
    from compressed_tensors.quantization.quant_scheme import NVFP4

    scheme = QuantizationScheme(targets=["Linear"], **NVFP4)
    return NVFP4PackedCompressor.decompress(dict(tensors), scheme)["weight"]


def _modelopt_dequantize(tensors: dict, shape, dtype=torch.float32) -> torch.Tensor:
    """ModelOpt's own NVFP4 dequantization (``NVFP4QTensor.dequantize``)."""
    from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

    q = NVFP4QTensor(torch.Size(shape), dtype, tensors["weight"])
    return q.dequantize(dtype=dtype, scale=tensors["weight_scale"], double_scale=tensors["weight_scale_2"],
                        block_sizes={-1: 16})


def test_element_2i_is_the_low_nibble_as_compressed_tensors_and_modelopt_unpack_it():
    from compressed_tensors.compressors.nvfp4 import unpack_fp4_from_uint8

    w = torch.zeros(1, 16)
    w[0, 0], w[0, 1] = 6.0, -1.0  # gs = 6/2688, block scale 448: codes 7 (6.0) and 10 (-1.0)
    t = _quantized(w)
    c, m = ct.module_tensors(t, 1.0), modelopt.module_tensors(t, 1.0)
    assert c["weight_packed"][0, 0] == 0xA7 == m["weight"][0, 0]  # low nibble 7 = element 0, high 10 = element 1
    assert unpack_fp4_from_uint8(c["weight_packed"], 1, 16, dtype=torch.float32)[0, :2].tolist() == [6.0, -1.0]
    assert _modelopt_dequantize(m, (1, 16))[0, :2].tolist() == [6.0, -1.0]


def test_block_scales_are_row_major_one_per_16_inputs_in_both_packages():
    # every block (n, b) holds its own power-of-two magnitude on the E2M1 grid: the packages'
    # dequantization reproduces w exactly only if scale [n, b] belongs to block (n, b)
    w = torch.zeros(3, 64)
    for n in range(3):
        for b in range(4):
            w[n, 16 * b : 16 * b + 16] = torch.tensor([6.0, -4.0, 3.0, 0.5] * 4) * 2.0 ** (n * 4 + b - 10)
    t = _quantized(w, rule="pow2")
    c, m = ct.module_tensors(t, 1.0), modelopt.module_tensors(t, 1.0)
    assert tuple(c["weight_scale"].shape) == (3, 4) and c["weight_scale"].dtype == torch.float8_e4m3fn
    assert torch.equal(c["weight_scale"].view(torch.uint8), m["weight_scale"].view(torch.uint8))
    gs = conventions.weight_global_scale(w, rule="pow2")
    ratios = c["weight_scale"].float() * gs * 6 / w.abs().reshape(3, 4, 16).amax(-1)
    assert torch.all(ratios == 1)
    assert torch.equal(_ct_decompress(c).float(), w)
    assert torch.equal(_modelopt_dequantize(m, w.shape), w)


def test_compressed_tensors_stores_divisors_and_modelopt_multipliers():
    w = _weight(1)
    t = _quantized(w)
    gs_a = torch.tensor(0.0123)
    c, m = ct.module_tensors(t, gs_a), modelopt.module_tensors(t, gs_a)
    amax = w.abs().max()
    assert c["weight_global_scale"].shape == (1,) and c["input_global_scale"].shape == (1,)
    assert torch.equal(c["weight_global_scale"], true_divide(1.0, t.global_scale).reshape(1))  # 1 / gs: a divisor
    assert torch.allclose(c["weight_global_scale"], 2688 / amax, rtol=2**-22)  # = 448·6 / amax
    assert torch.equal(c["input_global_scale"], true_divide(1.0, gs_a).reshape(1))
    assert m["weight_scale_2"].shape == () and torch.equal(m["weight_scale_2"], t.global_scale)  # gs = amax/2688
    assert torch.equal(m["input_scale"], gs_a)
    for back in (ct.to_nvfp4(c), modelopt.to_nvfp4(m)):  # and back: the same bytes, gs up to the reciprocal's ulp
        assert torch.equal(back.data.view(torch.uint8), t.data.view(torch.uint8))
        assert torch.equal(back.scales.view(torch.uint8), t.scales.view(torch.uint8))
        assert abs(float(back.global_scale) - float(t.global_scale)) <= 2**-23 * float(t.global_scale)


def test_compressed_tensors_converts_our_modelopt_tensors_into_our_compressed_tensors_ones():
    from compressed_tensors.entrypoints.convert.converters.modelopt_nvfp4 import ModelOptNvfp4Converter

    t = _quantized(_weight(2))
    c, m = ct.module_tensors(t, 0.02), modelopt.module_tensors(t, 0.02)
    converted = ModelOptNvfp4Converter(targets=["re:.*"]).process({f"layer.{k}": v.clone() for k, v in m.items()})
    assert sorted(converted) == sorted(f"layer.{k}" for k in c)
    for key, value in c.items():  # the package writes 0-d global scales, we write (1,) as its modules hold them
        assert torch.equal(converted[f"layer.{key}"].reshape(value.shape).view(torch.uint8), value.view(torch.uint8))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compressed_tensors_decompresses_to_nvfp4labs_bits(seed):
    w = _weight(seed)
    t = _quantized(w)  # amax / 2688, as the lab evaluates: bit for bit in bf16, what the package decompresses to
    c = ct.module_tensors(t, 0.01)
    package = _ct_decompress(c)
    assert package.dtype == torch.bfloat16
    assert torch.equal(package, dequantize_nvfp4(t).bfloat16())
    assert torch.equal(package, ct.dequantize(c))  # our reading of the format's rule is the package's
    exact = _quantized(w, rule="pow2")  # power-of-two global scale: every value exact, float32 bit for bit
    assert torch.equal(_ct_decompress(ct.module_tensors(exact, 0.01)).float(), dequantize_nvfp4(exact))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_modelopt_dequantizes_to_nvfp4labs_bits(seed):
    w = _weight(seed)
    exact = _quantized(w, rule="pow2")
    m = modelopt.module_tensors(exact, 0.01)
    assert torch.equal(_modelopt_dequantize(m, w.shape), dequantize_nvfp4(exact))
    t = _quantized(w)
    m = modelopt.module_tensors(t, 0.01)
    package, ours = _modelopt_dequantize(m, w.shape), dequantize_nvfp4(t)
    assert torch.equal(package, modelopt.dequantize(m))
    assert torch.equal(package.bfloat16(), ours.bfloat16())
    ulp = torch.finfo(torch.float32).eps * ours.abs()
    assert torch.all((package - ours).abs() <= ulp)


def test_the_packages_multiply_scale_by_global_scale_first_so_float32_can_differ_by_one_ulp():
    # nvfp4lab: (code · s) · gs; ModelOpt: code · (s · gs); compressed-tensors: code · (s / (1/gs))
    t = _quantized(_weight(0))
    m, c = modelopt.module_tensors(t, 1.0), ct.module_tensors(t, 1.0)
    ours = dequantize_nvfp4(t)
    assert not torch.equal(modelopt.dequantize(m), ours)
    assert not torch.equal(ct.dequantize(c, torch.float32), ours)


def test_four_over_six_weights_travel_in_both_formats():
    from types import SimpleNamespace

    from modelopt.torch.quantization.utils.numeric_utils import E2M1_MAX, fp8_max_for_normalization

    from nvfp4lab.quantize import FOUR_OVER_SIX_DIVISOR

    w = _weight(3)
    t = _quantized(w, block_rule="four_over_six")
    four_over_six = SimpleNamespace(block_sizes={-1: 16, "four_over_six": True})
    assert E2M1_MAX * fp8_max_for_normalization(four_over_six) == FOUR_OVER_SIX_DIVISOR == 1536  # ModelOpt: 6·256
    assert torch.equal(t.global_scale, true_divide(w.abs().max(), 1536.0))
    assert t.scales.float().max() <= 384
    c, m = ct.module_tensors(t, 0.01), modelopt.module_tensors(t, 0.01)
    assert torch.equal(_ct_decompress(c), dequantize_nvfp4(t).bfloat16())
    assert torch.equal(_modelopt_dequantize(m, w.shape).bfloat16(), dequantize_nvfp4(t).bfloat16())
    exact = _quantized(w, rule="pow2", block_rule="four_over_six")
    assert torch.equal(_modelopt_dequantize(modelopt.module_tensors(exact, 0.01), w.shape), dequantize_nvfp4(exact))


def test_configs_parse_with_the_packages_config_classes():
    from compressed_tensors.quantization import QuantizationConfig
    from compressed_tensors.quantization.quant_scheme import NVFP4
    from modelopt.torch.export.convert_hf_config import convert_hf_quant_config_format

    config = QuantizationConfig.model_validate(ct.quantization_config(["lm_head", "model.layers.0.mlp.up_proj"]))
    group = config.config_groups["group_0"]
    assert group.weights == NVFP4["weights"] and group.input_activations == NVFP4["input_activations"]
    assert config.format == "nvfp4-pack-quantized" and config.quant_method == "compressed-tensors"
    assert config.ignore == ["lm_head", "model.layers.0.mlp.up_proj"] and group.targets == ["Linear"]
    for activations in (True, False):
        hf = modelopt.hf_quant_config(["lm_head"], "0.1.0", activations)
        assert modelopt.config_json_quantization_config(hf) == convert_hf_quant_config_format(hf)
    assert modelopt.hf_quant_config([], "0.1.0")["quantization"]["quant_algo"] == "NVFP4"


@pytest.mark.parametrize("fmt", ["compressed-tensors", "modelopt"])
def test_grouped_layer_per_group_modules_hold_the_labs_grouped_weights(fmt):
    g, k, n = 3, 32, 24
    w = torch.randn(g, k, n, generator=torch.Generator().manual_seed(4)) / 8
    scales = torch.tensor([0.01, 0.03, 0.02])
    tensors = grouped.grouped_layer_tensors(w, scales, fmt, layout="per_group", activation_scale="per_group")
    module = grouped.format_module(fmt)
    lab = baselines.nvfp4_weights(w).float()  # (G, K, N), each group its own weight global scale
    for i in range(g):
        mine = {key.split(".", 2)[-1]: value for key, value in tensors.items() if key.startswith(f"wo_a.{i}.")}
        assert torch.equal(dequantize_nvfp4(module.to_nvfp4(mine)).T, lab[i]) if fmt == "modelopt" else \
            torch.equal(module.dequantize(mine), lab[i].T.bfloat16())
    act = "input_scale" if fmt == "modelopt" else "input_global_scale"
    written = torch.stack([tensors[f"wo_a.{i}.{act}"].reshape(()) for i in range(g)])
    assert torch.equal(written, scales if fmt == "modelopt" else true_divide(1.0, scales))
    shared = grouped.grouped_layer_tensors(w, scales, fmt, activation_scale="shared")
    assert all(torch.equal(shared[f"wo_a.{i}.{act}"], shared["wo_a.0." + act]) for i in range(g))


def test_grouped_layer_single_module_is_the_concatenated_linear_and_needs_a_shared_scale():
    g, k, n = 2, 32, 16
    w = torch.randn(g, k, n, generator=torch.Generator().manual_seed(5)) / 8
    x = torch.randn(5, g, k, generator=torch.Generator().manual_seed(6))
    tensors = grouped.grouped_layer_tensors(w, torch.tensor([0.01, 0.02]), "modelopt", layout="single",
                                            activation_scale="shared", weight_scale_rule="pow2")
    module = {key.split(".", 1)[1]: value for key, value in tensors.items()}
    assert tuple(module["weight"].shape) == (n, g * k // 2) and float(module["input_scale"]) == pytest.approx(0.02)
    w_hat = modelopt.dequantize(module)  # (N, G·K)
    dense = torch.einsum("tgk,gkn->tn", x.double(), w.double())
    error = (x.reshape(5, -1).double() @ w_hat.double().T - dense).norm() / dense.norm()
    assert error < 0.15  # NVFP4 weights: ~10 % relative error; a misplaced group would give ~140 %
    with pytest.raises(ValueError, match="one module has one input global scale"):
        grouped.grouped_layer_tensors(w, torch.tensor([0.01, 0.02]), "modelopt", layout="single",
                                      activation_scale="per_group")


def test_export_grouped_layer_writes_a_safetensors_and_its_config(tmp_path):
    from safetensors.torch import load_file

    w = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(7))
    out = grouped.export_grouped_layer(tmp_path / "layer", w, torch.tensor([0.1, 0.2]), "compressed-tensors")
    names = sorted(f"wo_a.{g}.{suffix}" for g in range(2) for suffix in ct.SUFFIXES)
    assert sorted(load_file(out / "layer.safetensors")) == names
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    with pytest.raises(ValueError, match="not empty"):
        grouped.export_grouped_layer(tmp_path / "busy", w, torch.tensor([0.1, 0.2]), "modelopt")


def test_bad_input_is_refused_with_one_line():
    with pytest.raises(ValueError, match="multiple of 16"):
        conventions.quantize_weight(torch.randn(4, 40), torch.tensor(0.01))
    with pytest.raises(ValueError, match="2-D"):
        conventions.weight_global_scale(torch.randn(2, 4, 16))
    with pytest.raises(ValueError, match="finite"):
        ct.module_tensors(_quantized(_weight(0)), float("nan"))
    with pytest.raises(ValueError, match="one module has one"):
        modelopt.module_tensors(_quantized(_weight(0)), torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="format must be one of"):
        grouped.grouped_layer_tensors(torch.randn(1, 16, 4), 0.1, "gguf")
    for error in ("multiple of 16", "2-D", "finite"):
        assert "\n" not in error


def test_power_of_two_at_least_rounds_up_and_keeps_powers_of_two():
    gs = torch.tensor([1.0, 0.75, 3.0e-5, 2.0**-20, 1.5 * 2.0**-100])
    assert conventions.power_of_two_at_least(gs).tolist() == [1.0, 1.0, 2.0**-15, 2.0**-20, 2.0**-99]


@pytest.mark.parametrize("label, message", [
    ("dynamic | shared dynamic", "computes its global activation scale at run time"),
    ("max + four-over-six | per_group static", "four-over-six activation rule cannot travel"),
    ("w4a16", "baseline"),
    ("no such recipe", "unknown recipe"),
])
def test_recipes_that_cannot_travel_are_refused_saying_why(label, message):
    with pytest.raises(ValueError, match=message) as error:
        recipes.servable_recipe(label)
    assert "\n" not in str(error.value)


def test_static_max6_w4a4_recipes_travel():
    labels = recipes.recipe_labels()
    assert "headroom x4 | shared static" in labels
    recipe = recipes.servable_recipe("max | per_group static")
    assert recipe.job.rule == "max6" and recipe.job.factory is not None
