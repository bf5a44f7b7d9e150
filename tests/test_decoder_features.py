"""RoPE scaling (``rope_freqs.weight``, linear ``{arch}.rope.scaling.*``) and Gemma 3's sliding
window, on tiny GGUF files: each against a hand-computed expectation or an independent
computation, and each with a check that removing the feature changes the result."""

import dataclasses

import numpy as np
import pytest
import torch

from gguf_tiny import write_tiny
from nvfp4lab.models.decoder import Decoder
from nvfp4lab.models.gguf_weights import load

TOLERANCE = 2e-3  # as tests/test_models.py: float32 summation order only; a wrong angle or mask moves ≥ 0.1
HEAD_DIM = 16  # write_tiny's default llama: hidden 64, 4 heads
IDS = torch.tensor([[5, 77, 30, 12, 99, 260, 33, 41, 7, 200, 150, 88, 3, 64]])


def _transformers_logits(path, ids):
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                              dtype=torch.float32)
    with torch.no_grad():
        return model.eval()(ids).logits


# --- RoPE scaling ---------------------------------------------------------------------------

def test_inverse_frequencies_are_base_power_divided_by_rope_freqs_and_the_linear_factor(tmp_path):
    factors = [1.0, 1.0, 1.0, 1.5, 2.0, 4.0, 8.0, 8.0]
    path = write_tiny(tmp_path / "scaled.gguf", "llama", rope_base=500000.0, rope_freqs=np.array(factors),
                      fields={"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 2.0,
                              "llama.rope.scaling.original_context_length": 128})
    config, weights = load(path)
    expected = [500000.0 ** (-(2 * i) / HEAD_DIM) / (factors[i] * 2.0) for i in range(HEAD_DIM // 2)]
    assert config.inverse_frequencies(0).tolist() == pytest.approx(expected, rel=1e-6)  # factors stored as float32
    assert "rope_freqs.weight" not in weights


def test_scaled_rope_in_the_forward_equals_an_unscaled_file_with_the_equivalent_base(tmp_path):
    """base 10⁴ with factors f_i = (b/10⁴)^(2i/d) / s and linear factor s has exactly the inverse
    frequencies of base b: its logits must equal transformers' on the unscaled base-b file."""
    base, scale = 500000.0, 2.0
    factors = np.array([(base / 1e4) ** (2 * i / HEAD_DIM) / scale for i in range(HEAD_DIM // 2)])
    scaled = write_tiny(tmp_path / "scaled.gguf", "llama", rope_freqs=factors,
                        fields={"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": scale})
    plain = write_tiny(tmp_path / "plain.gguf", "llama", rope_base=base)
    unscaled = write_tiny(tmp_path / "unscaled.gguf", "llama")
    ours = Decoder.from_gguf(scaled).logits(IDS)
    assert (ours - _transformers_logits(plain, IDS)).abs().max() < TOLERANCE
    assert (ours - Decoder.from_gguf(unscaled).logits(IDS)).abs().max() > 0.1, "the scaling must change the forward"


@pytest.mark.parametrize("fields, scale", [
    ({"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0}, 4.0),
    ({"llama.rope.scale_linear": 4.0}, 4.0),  # the older key; the type defaults to linear (llama.cpp)
    ({"llama.rope.scaling.type": "none", "llama.rope.scaling.factor": 4.0}, 1.0),  # none never scales
    ({"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 0.0}, 1.0),  # 0: unset
])
def test_linear_scaling_is_read_as_llama_cpp_reads_it(tmp_path, fields, scale):
    config, _ = load(write_tiny(tmp_path / "s.gguf", "llama", fields=fields))
    assert config.rope_scale == scale
    assert config.inverse_frequencies(0)[1].item() == pytest.approx(1e4 ** (-2 / HEAD_DIM) / scale, rel=1e-12)


def test_gemma3_scales_only_its_global_layers(tmp_path):
    path = write_tiny(tmp_path / "g.gguf", "gemma3", layers=6, hidden=64, heads=2, kv_heads=1, head_dim=32,
                      sliding_window=4, rope_base=1e6, fields={"gemma3.rope.scaling.type": "linear",
                                                                "gemma3.rope.scaling.factor": 8.0})
    config, _ = load(path)
    assert config.global_layers == (5,)
    assert config.inverse_frequencies(0)[1].item() == pytest.approx(1e4 ** (-2 / 32), rel=1e-12)
    assert config.inverse_frequencies(5)[1].item() == pytest.approx(1e6 ** (-2 / 32) / 8, rel=1e-12)


@pytest.mark.parametrize("arch, fields, rope_freqs, message", [
    ("llama", {"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0}, None,
     "unsupported llama.rope.scaling.type = 'yarn'"),
    ("llama", {"llama.rope.scaling.type": "longrope"}, None, "unsupported llama.rope.scaling.type = 'longrope'"),
    ("llama", {"llama.rope.scaling.attn_factor": 1.2}, None, "unsupported GGUF field llama.rope.scaling.attn_factor"),
    ("llama", {"llama.rope.scaling.yarn_log_multiplier": 0.1}, None,
     "unsupported GGUF field llama.rope.scaling.yarn_log_multiplier"),
    ("llama", {"llama.rope.dimension_count": 8}, None, "unsupported llama.rope.dimension_count = 8 .partial rotary"),
    ("llama", {"llama.rope.scaling.factor": -2.0}, None, "llama.rope.scaling.factor must be positive"),
    ("llama", {}, np.ones(5), "rope_freqs.weight must hold 8 positive factors"),
    ("llama", {}, np.zeros(8), "rope_freqs.weight must hold 8 positive factors"),
    ("qwen2", {}, np.ones(8), "unsupported tensor rope_freqs.weight in a qwen2 file"),
])
def test_rope_fields_it_does_not_implement_are_refused_naming_the_field(tmp_path, arch, fields, rope_freqs, message):
    path = write_tiny(tmp_path / "bad.gguf", arch, fields=fields, rope_freqs=rope_freqs)
    with pytest.raises(ValueError, match=message) as error:
        load(path)
    assert "\n" not in str(error.value)


# --- Gemma 3's sliding window ---------------------------------------------------------------

@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    """Tiny Gemma-3-like files with a window of 4: six layers (0-4 local, 5 global; head_dim 256
    so that transformers' default query scale 1/√256 is the file's) and one local layer."""
    directory = tmp_path_factory.mktemp("gemma")
    six = write_tiny(directory / "six.gguf", "gemma3", layers=6, hidden=64, heads=2, kv_heads=1, head_dim=256,
                     sliding_window=4, rope_base=1e6)
    one = write_tiny(directory / "one.gguf", "gemma3", layers=1, hidden=64, heads=2, kv_heads=1, head_dim=256,
                     sliding_window=4, rope_base=1e6)
    return {"six": six, "one": one}


def test_gemma3_window_matches_transformers_on_a_prompt_longer_than_the_window(gemma):
    decoder = Decoder.from_gguf(gemma["six"])
    assert decoder.config.sliding_window == 4 and IDS.shape[1] > 3 * 4
    assert [decoder.config.window_of(i) for i in range(6)] == [4, 4, 4, 4, 4, None]
    assert (decoder.logits(IDS) - _transformers_logits(gemma["six"], IDS)).abs().max() < TOLERANCE


def test_a_local_layer_sees_exactly_the_last_window_tokens(gemma):
    """One local layer: position t depends on tokens t−3 … t only, and RoPE is relative, so its
    logits equal those of the last position of the prompt cut to those 4 tokens (a run no
    longer than the window, where no mask but the causal one applies)."""
    decoder = Decoder.from_gguf(gemma["one"])
    full = decoder.logits(IDS)
    for t in range(IDS.shape[1]):
        alone = decoder.logits(IDS[:, max(0, t - 3):t + 1])[0, -1]
        assert (full[0, t] - alone).abs().max() < TOLERANCE, t


def test_removing_the_window_changes_exactly_the_positions_beyond_it(gemma):
    decoder = Decoder.from_gguf(gemma["six"])
    windowed = decoder.logits(IDS)
    unwindowed = Decoder(dataclasses.replace(decoder.config, sliding_window=None), decoder.w).logits(IDS)
    change = (windowed - unwindowed).abs().amax(dim=-1)[0]
    assert change[:4].max() < 1e-5, "within the window both see the whole prefix"
    assert change[4:].min() > 0.1, "beyond it the window must matter at every position"
