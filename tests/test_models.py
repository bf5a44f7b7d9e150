"""nvfp4lab.models: GGUF decoders in plain torch against transformers, the tokenizers, the
grouped o_proj hook, the corpus split, the model-level evaluation and ``calibrate-model``."""

import json
import math

import pytest
import torch

from gguf_tiny import write_tiny
from nvfp4lab.cli import main
from nvfp4lab.models import corpus, packaged, tokenizer
from nvfp4lab.models.decoder import Decoder
from nvfp4lab.models.evaluate import ModelEvaluation, Row, evaluate_model, from_dict, recommend
from nvfp4lab.models.projection import LayerWeights, Recipe, RecipeProjection, all_recipes

# Both sides compute in float32 from the same dequantized weights (gguf.quants), so they
# differ only by float32 summation order through the layers: seen ≤ 1e-4 on logits of
# magnitude ≤ 40. 2e-3 leaves margin for other CPUs' kernels, yet a wrong RoPE, norm offset,
# permutation or scale moves logits by ≥ 0.1.
LOGIT_TOLERANCE = 2e-3
PROMPT = "In the beginning God created the heaven and the earth. And the earth was without form, and void."


def _transformers_logits(path, ids):
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    with torch.no_grad():
        return model.eval()(ids).logits


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-gguf")
    return {arch: write_tiny(directory / f"{arch}.gguf", arch) for arch in ("llama", "qwen2")}


@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
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


@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_tokenizer_from_gguf_metadata_matches_transformers(model):
    transformers = pytest.importorskip("transformers")
    path = packaged.path_of(model)
    text = corpus.held_out_text()[:3000] + "\n\n\nNumbers 1234, naïve café — “quotes”  double  spaces\ttab."
    reference = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    assert tokenizer.encode(path, text) == reference(text, add_special_tokens=False).input_ids


def test_gemma_file_is_joined_and_checked_against_the_packaged_sha256():
    path = packaged.gemma3_path()
    assert packaged.sha256(path) == packaged.gemma_expected_sha256()
    assert len(packaged.gemma_expected_sha256()) == 64


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


def test_model_evaluation_covers_every_recipe_and_measures_against_bf16(tiny):
    texts = (corpus.calibration_text()[:4000], corpus.held_out_text()[:4000])
    evaluation = evaluate_model(tiny["qwen2"], groups=2, tokens=48, seq_len=24, texts=texts, progress=False)
    labels = {(r.recipe, r.mode) for r in evaluation.rows}
    assert {(r.name, r.mode) for r in all_recipes()} == labels
    bf16 = evaluation.row("bf16")
    assert bf16.kl == 0 and bf16.top1_agreement == 1
    assert all(r.kl >= -1e-9 and 0 <= r.top1_agreement <= 1 and math.isfinite(r.perplexity) for r in evaluation.rows)
    nvfp4 = [r for r in evaluation.rows if r.mode != "-"]
    assert min(r.kl for r in nvfp4) > 0, "quantizing every o_proj must move the distribution"
    assert evaluation.row("bf16").mean_layer_sqnr_db > evaluation.row("dynamic", "per_group dynamic").mean_layer_sqnr_db + 15
    assert len(evaluation.sensitivity_kl) == 2 and all(k > 0 for k in evaluation.sensitivity_kl)
    assert evaluation.tokens == 2 * 23 and evaluation.calibration_tokens == 48
    assert from_dict(json.loads(json.dumps(evaluation.as_dict()))) == evaluation


def test_model_evaluation_rejects_a_text_too_short(tiny):
    with pytest.raises(ValueError, match="held-out text is too short"):
        evaluate_model(tiny["llama"], groups=2, tokens=64, texts=("a long enough text " * 100, "short"), progress=False)


def _evaluation(rows):
    return ModelEvaluation("m", "llama", 4, 2, 100, 100, 50, [Row(*r, [20.0]) for r in rows], "", [], [], [], [], [])


def test_recommend_prefers_a_static_row_within_ten_percent_of_the_lowest_kl():
    rows = [("bf16", "-", 10.0, 0.0, 1.0), ("dynamic", "per_group dynamic", 10.5, 0.100, 0.9),
            ("max", "per_group static", 10.6, 0.105, 0.9), ("percentile 99.99", "shared static", 12.0, 0.5, 0.8)]
    choice, why = recommend(_evaluation(rows))
    assert (choice.recipe, choice.mode) == ("max", "per_group static") and "no amax pass" in why
    assert why.startswith("Rule: ") and why.index("Rule: ") < why.index("Chosen: ")
    rows[2] = ("max", "per_group static", 10.6, 0.2, 0.9)
    choice, why = recommend(_evaluation(rows))
    assert (choice.recipe, choice.mode) == ("dynamic", "per_group dynamic") and "lowest mean KL" in why


def test_calibrate_model_writes_its_outputs(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.txt").write_text(corpus.held_out_text()[:6000])
    assert main(["calibrate-model", "--gguf", str(tiny["llama"]), "--text", "text.txt", "--groups", "2",
                 "--tokens", "32", "--out", "report"]) == 0
    record = json.loads((tmp_path / "report" / "model_calibration.json").read_text(),
                        parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert record["model"] == "tiny-llama" and record["tokens"] == 31 and record["bf16"]["perplexity"] > 1
    assert {"recipe", "mode", "perplexity", "kl", "top1_agreement"} <= set(record["recipes"][0])
    assert {(r["recipe"], r["mode"]) for r in record["recipes"]} == {(r.name, r.mode) for r in all_recipes()}
    recommended = record["recommended"]
    assert recommended["mode"] != "-" and recommended["reason"].startswith("Rule: ")
    best = min(r["kl"] for r in record["recipes"] if r["mode"] != "-")
    chosen = next(r for r in record["recipes"] if (r["recipe"], r["mode"]) == (recommended["recipe"], recommended["mode"]))
    assert chosen["kl"] <= best * 1.1
    assert "Recommended:" in (tmp_path / "report" / "model_calibration.md").read_text()
    assert (tmp_path / "report" / "model_calibration.png").stat().st_size > 10_000
    capsys.readouterr()


@pytest.mark.parametrize("argv, message", [
    (["--gguf", "missing.gguf"], "GGUF file not found"),
    (["--gguf", "{falcon}"], "unsupported architecture"),
    (["--gguf", "{llama}", "--groups", "3"], "must divide the model's 4 attention heads"),
    (["--gguf", "{llama}", "--text", "short.txt"], "text is too short"),
    (["--gguf", "{llama}", "--text", "missing.txt"], "text file not found"),
])
def test_calibrate_model_rejects_bad_input_with_exit_2_and_no_folder(tiny, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    write_tiny(tmp_path / "falcon.gguf", "falcon")
    (tmp_path / "short.txt").write_text("In the beginning.")
    argv = [a.format(llama=tiny["llama"], falcon=tmp_path / "falcon.gguf") for a in argv]
    assert main(["calibrate-model", *argv, "--tokens", "32", "--out", "report"]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1 and "Traceback" not in error
    assert not (tmp_path / "report").exists()


def test_a_failed_calibrate_model_leaves_nested_and_existing_folders_as_it_found_them(tiny, tmp_path, monkeypatch,
                                                                                     capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "short.txt").write_text("In the beginning.")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for out in ("a/b/report", "mine"):
        assert main(["calibrate-model", "--gguf", str(tiny["llama"]), "--text", "short.txt", "--tokens", "32",
                     "--out", out]) == 2
    assert "text is too short" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"


def test_static_scales_come_from_the_calibration_text_only(tiny):
    held_out = corpus.held_out_text()[:3000]
    quiet = evaluate_model(tiny["llama"], groups=2, tokens=32, texts=(corpus.calibration_text()[:3000], held_out),
                           sensitivity=False, include_mse=False, progress=False)
    loud = evaluate_model(tiny["llama"], groups=2, tokens=32, texts=("0 1 2 3 4 5 6 7 8 9 ~ ^ | " * 40, held_out),
                          sensitivity=False, include_mse=False, progress=False)
    for recipe, mode in (("dynamic", "per_group dynamic"), ("w4a16", "-"), ("fp8 (1x128 act, 128x128 wt)", "-")):
        assert quiet.row(recipe, mode) == loud.row(recipe, mode), "rows without static scales ignore the calibration text"
    assert quiet.row("max", "per_group static").kl != loud.row("max", "per_group static").kl
    assert not any(r.recipe.startswith("mse") for r in quiet.rows)
