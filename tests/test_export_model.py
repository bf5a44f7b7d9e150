"""nvfp4lab.export on decoder LMs: tiny GGUF models exported in both formats, loaded back by
transformers (compressed-tensors) and read by ModelOpt's own functions; ``nvfp4lab export``
and its refusals."""

import json

import pytest
import torch

from gguf_tiny import write_tiny
from nvfp4lab import baselines
from nvfp4lab.cli import main
from nvfp4lab.export import compressed_tensors as ct
from nvfp4lab.export import export_decoder, hf_model, modelopt
from nvfp4lab.models import tokenizer
from nvfp4lab.models.decoder import Decoder
from nvfp4lab.models.projection import LayerWeights, Recipe, RecipeProjection

transformers = pytest.importorskip("transformers")
pytest.importorskip("compressed_tensors")
pytest.importorskip("modelopt")

TEXT = "the cat in the hat, and then a hat in the cat; then the hat sat on the mat"
SCALES = {0: torch.tensor([0.004, 0.006]), 1: torch.tensor([0.005, 0.003])}
RECIPE = "max | per_group static"
# Measured on the tiny Llama (logits up to ~52): the HF model (float32, o_proj weights decompressed by
# compressed-tensors) against the lab's decoder with a float32 o_proj on the same weights: 1.5e-5
# (summation order only); against the lab's w4a16 recipe (bf16 o_proj input and output) on the same
# bf16 weights: 0.06; on the lab's own float32 NVFP4 weights (groups=1): 0.08. Tolerances keep ~3x.
SAME_WEIGHTS_FLOAT32 = 2e-3
W4A16_RECIPE = 0.25


def _safetensors(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _module(tensors, layer):
    prefix = f"model.layers.{layer}.self_attn.o_proj."
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    llama, qwen2 = write_tiny(root / "llama.gguf", "llama"), write_tiny(root / "qwen2.gguf", "qwen2", seed=1)
    export_decoder(llama, root / "llama-ct", "compressed-tensors", RECIPE, SCALES)
    export_decoder(qwen2, root / "qwen2-modelopt", "modelopt", RECIPE, SCALES)
    return {"llama": llama, "qwen2": qwen2, "llama-ct": root / "llama-ct", "qwen2-modelopt": root / "qwen2-modelopt"}


def test_compressed_tensors_export_loads_in_transformers_and_matches_the_lab_decoder(exported):
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    path, folder = exported["llama"], exported["llama-ct"]
    # float32 on the CPU: transformers' default route decompresses to bf16 weights inside a float32 model and fails
    # (dtype mismatch), so the weights are decompressed at load by compressed-tensors (dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32,
                                                 quantization_config=CompressedTensorsConfig(dequantize=True)).eval()
    ids = torch.tensor([tokenizer.encode(path, TEXT)])
    with torch.no_grad():
        theirs = model(ids).logits
    decoder = Decoder.from_gguf(path)
    lab_weights = LayerWeights(decoder, 1)
    stored = _safetensors(folder)
    hf_w = {i: model.model.layers[i].self_attn.o_proj.weight.detach() for i in range(2)}
    for i in range(2):  # the decompressed weights are nvfp4lab's dequantized ones, bit for bit (in bf16)
        assert torch.equal(hf_w[i], lab_weights.nvfp4(i)[0].T.float().bfloat16().float())
        assert torch.equal(hf_w[i], ct.dequantize(_module(stored, i)).float())
    same = decoder.logits(ids, lambda layer, o, w: o @ hf_w[layer].T)
    w4a16_same = decoder.logits(ids, lambda layer, o, w: baselines.w4a16_output(
        o[:, None], None, hf_w[layer].T[None].double()).sum(1).to(o.dtype))
    w4a16_lab = decoder.logits(ids, RecipeProjection(Recipe("w4a16", "-"), lab_weights, measure=False))
    assert (theirs - same).abs().max() < SAME_WEIGHTS_FLOAT32
    assert (theirs - w4a16_same).abs().max() < W4A16_RECIPE
    assert (theirs - w4a16_lab).abs().max() < W4A16_RECIPE
    unquantized = decoder.logits(ids)
    assert (theirs - unquantized).abs().max() > 10 * SAME_WEIGHTS_FLOAT32  # o_proj really is NVFP4
    for name, value in model.state_dict().items():  # every other tensor is the decoder's
        gguf = {hf_model.hf_name(k): k for k in decoder.w}.get(name)
        if gguf is not None and "o_proj" not in name:
            assert torch.equal(value, decoder.w[gguf]), name


def test_compressed_tensors_default_route_applies_the_nvfp4_scheme_with_our_scales_in_bf16(exported):
    from transformers import AutoModelForCausalLM

    folder = exported["llama-ct"]
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16).eval()
    o_proj = model.model.layers[0].self_attn.o_proj
    assert o_proj.quantization_scheme.input_activations.dynamic == "local"
    assert torch.equal(o_proj.input_global_scale, 1 / SCALES[0].max().reshape(1))  # the divisor, as stored
    assert not hasattr(model.model.layers[0].self_attn.q_proj, "quantization_scheme")  # ignored: dense
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer.encode(exported["llama"], TEXT)])).logits
    assert torch.isfinite(logits).all()


def test_modelopt_export_dequantizes_with_modelopts_own_functions_to_the_labs_bits(exported):
    from modelopt.torch.export.convert_hf_config import convert_hf_quant_config_format
    from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

    folder = exported["qwen2-modelopt"]
    stored = _safetensors(folder)
    lab_weights = LayerWeights(Decoder.from_gguf(exported["qwen2"]), 1)
    for i in range(2):
        module = _module(stored, i)
        assert sorted(module) == sorted(modelopt.SUFFIXES)
        shape = (module["weight"].shape[0], 2 * module["weight"].shape[1])
        theirs = NVFP4QTensor(torch.Size(shape), torch.float32, module["weight"]).dequantize(
            dtype=torch.float32, scale=module["weight_scale"], double_scale=module["weight_scale_2"],
            block_sizes={-1: 16})
        ours = lab_weights.nvfp4(i)[0].T.float()
        assert torch.equal(theirs.bfloat16(), ours.bfloat16())
        assert torch.all((theirs - ours).abs() <= torch.finfo(torch.float32).eps * ours.abs())
        assert float(module["input_scale"]) == float(SCALES[i].max())  # shared: the max over groups
    quant = json.loads((folder / "hf_quant_config.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization_config"] == convert_hf_quant_config_format(quant)
    assert quant["quantization"]["quant_algo"] == "NVFP4" and quant["quantization"]["group_size"] == 16
    assert "model.layers.0.self_attn.q_proj" in quant["quantization"]["exclude_modules"]
    assert "model.layers.0.self_attn.o_proj" not in quant["quantization"]["exclude_modules"]
    assert stored["model.layers.0.self_attn.q_proj.bias"].dtype == torch.float32  # Qwen2's biases travel


def test_four_over_six_power_of_two_weights_and_bf16_tensors_export_exactly(exported, tmp_path):
    from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

    from nvfp4lab.export.conventions import quantize_weight, weight_global_scale
    from nvfp4lab.quantize import dequantize_nvfp4

    record = export_decoder(exported["llama"], tmp_path / "out", "modelopt", RECIPE, SCALES, dtype="bfloat16",
                            weight_scale_rule="pow2", weight_block_rule="four_over_six")
    stored = _safetensors(tmp_path / "out")
    decoder = Decoder.from_gguf(exported["llama"])
    for i in range(2):
        module, w = _module(stored, i), decoder.o_proj_weight(i)
        gs = weight_global_scale(w, rule="pow2", block_rule="four_over_six")
        assert float(module["weight_scale_2"]) == float(gs) == record["layers"][i]["weight_global_scale"]
        theirs = NVFP4QTensor(torch.Size(w.shape), torch.float32, module["weight"]).dequantize(
            dtype=torch.float32, scale=module["weight_scale"], double_scale=module["weight_scale_2"],
            block_sizes={-1: 16})
        assert torch.equal(theirs, dequantize_nvfp4(quantize_weight(w, gs, block_rule="four_over_six")))
    assert stored["model.layers.0.mlp.up_proj.weight"].dtype == torch.bfloat16
    assert torch.equal(stored["model.norm.weight"], decoder.w["output_norm.weight"].bfloat16())


def test_architectures_not_exported_are_refused_by_name():
    from types import SimpleNamespace

    with pytest.raises(ValueError, match="'gemma3' is not supported yet"):
        hf_model.check_architecture(SimpleNamespace(architecture="gemma3"), "gemma.gguf")
    with pytest.raises(ValueError, match="no transformers name"):
        hf_model.hf_name("rope_freqs.weight")
    with pytest.raises(ValueError, match="plain RoPE"):
        hf_model.check_rope(SimpleNamespace(rope_scale=2.0), "scaled.gguf")


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_config_json_agrees_with_transformers_reading_of_the_gguf(exported, arch):
    path = exported[arch]
    folder = exported["llama-ct" if arch == "llama" else "qwen2-modelopt"]
    ours = transformers.AutoConfig.from_pretrained(str(folder))
    theirs = transformers.AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    for key in ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "max_position_embeddings", "bos_token_id"):
        assert getattr(ours, key) == getattr(theirs, key), key
    assert ours.rms_norm_eps == pytest.approx(theirs.rms_norm_eps)
    assert ours.rope_parameters["rope_theta"] == theirs.rope_parameters["rope_theta"]
    assert ours.tie_word_embeddings is True


def test_tokenizer_files_encode_like_the_lab(exported):
    folder, path = exported["llama-ct"], exported["llama"]
    loaded = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert loaded(TEXT, add_special_tokens=False).input_ids == tokenizer.encode(path, TEXT)
    assert loaded.convert_tokens_to_ids("<|endoftext|>") == Decoder.from_gguf(path).config.bos_id


def test_export_command_calibrates_and_writes_the_recipes_scales(exported, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["export", "--format", "compressed-tensors", "--gguf", str(exported["llama"]), "--out", str(out),
                 "--tokens", "64", "--recipe", "max | shared static"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "max over its groups" in printed and str(out) in printed
    record = json.loads((out / "nvfp4lab_export.json").read_text())
    stored = _safetensors(out)
    for layer in record["layers"]:
        written = stored[f"model.layers.{layer['layer']}.self_attn.o_proj.input_global_scale"]
        assert torch.equal(written, ct.divisor(torch.tensor(layer["activation_global_scale"])))
        assert layer["activation_global_scale"] == max(layer["recipe_scales_per_group"]) > 0
    assert record["calibration"]["tokens"] == 64 and record["recipe"] == "max | shared static"


@pytest.mark.parametrize("extra, message", [
    (["--activation-scale", "per_group"], "one activation global scale per GEMM"),
    (["--recipe", "max + four-over-six | shared static"], "four-over-six activation rule cannot travel"),
    (["--recipe", "dynamic | per_group dynamic"], "at run time"),
    (["--tokens", "8"], "at least 16"),
])
def test_export_refuses_what_cannot_travel_with_exit_2_and_writes_nothing(exported, tmp_path, capsys, extra, message):
    out = tmp_path / "nested" / "out"
    code = main(["export", "--format", "modelopt", "--gguf", str(exported["llama"]), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "nested").exists()


def test_export_refuses_a_non_empty_folder_and_an_o_proj_not_a_multiple_of_16(tmp_path, capsys):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    odd = write_tiny(tmp_path / "odd.gguf", "llama", hidden=40, heads=4, kv_heads=2)  # K = 4·10 = 40
    for out, gguf, message in ((busy, write_tiny(tmp_path / "ok.gguf"), "not empty"),
                               (tmp_path / "new", odd, "not a multiple of 16")):
        code = main(["export", "--format", "compressed-tensors", "--gguf", str(gguf), "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1
    assert [p.name for p in busy.iterdir()] == ["keep.txt"] and not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match="per-group scales cannot be written"):
        export_decoder(odd, tmp_path / "x", "modelopt", RECIPE, SCALES, activation_scale="per_group")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_smollm2_exports_to_compressed_tensors_and_transformers_runs_it_like_the_lab(tmp_path):
    """The packaged SmolLM2-135M end to end (~20 s on 2 CPU cores): every o_proj's decompressed
    weight is nvfp4lab's (bf16, bit for bit) and the logits equal the lab decoder's on those weights
    (measured 6e-5 on logits up to 30)."""
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    from nvfp4lab.models import packaged

    path = packaged.smollm2_path()
    export_decoder(path, tmp_path / "smollm2", "compressed-tensors", "max | shared static",
                   {i: torch.tensor([0.01, 0.02, 0.03]) for i in range(30)})
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "smollm2"), dtype=torch.float32,
                                                 quantization_config=CompressedTensorsConfig(dequantize=True)).eval()
    decoder = Decoder.from_gguf(path)
    lab_weights = LayerWeights(decoder, 1)
    hf_w = {i: model.model.layers[i].self_attn.o_proj.weight.detach() for i in range(30)}
    assert all(torch.equal(hf_w[i], lab_weights.nvfp4(i)[0].T.float().bfloat16().float()) for i in range(30))
    ids = torch.tensor([tokenizer.encode(path, "In the beginning God created the heaven and the earth.")])
    with torch.no_grad():
        theirs = model(ids).logits
    assert (theirs - decoder.logits(ids, lambda layer, o, w: o @ hf_w[layer].T)).abs().max() < SAME_WEIGHTS_FLOAT32
