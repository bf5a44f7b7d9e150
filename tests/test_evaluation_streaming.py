"""evaluation.evaluate streams the held-out tokens in bounded chunks and gives the same
table as one pass over them; the loader keeps a bf16 dump in bf16 (half the memory)."""

import pytest
import torch
from safetensors.torch import save_file

from nvfp4lab import baselines, evaluation, io, metrics
from nvfp4lab.calibration import MaxCalibrator
from nvfp4lab.scale_modes import ScaleMode

T_CAL, T_HELD, G, K, N = 96, 70, 2, 64, 32


def problem():
    g = torch.Generator().manual_seed(5)
    gain = torch.tensor([1.0, 0.03])[None, :, None]
    calibration = (torch.randn(T_CAL, G, K, generator=g) * gain).to(torch.bfloat16)
    held_out = (torch.randn(T_HELD, G, K, generator=g) * gain * 1.3).to(torch.bfloat16)
    return calibration, held_out, torch.randn(G, K, N, generator=g) / 8


def test_the_evaluation_reads_held_out_tokens_in_chunks_and_matches_one_pass(monkeypatch):
    calibration, held_out, w = problem()
    whole = evaluation.evaluate(calibration, held_out, w, progress=False, chunk_elements=10**9)
    seen = []
    reference_output = baselines.reference_output

    def spy(x, weights):
        seen.append(x.shape[0])
        return reference_output(x, weights)

    monkeypatch.setattr(baselines, "reference_output", spy)
    per_token = G * max(K, N)
    chunked = evaluation.evaluate(calibration, held_out, w, progress=False, chunk_elements=8 * per_token)
    assert seen == [8] * 8 + [6]  # 70 tokens, 8 at a time
    assert len(whole) == len(chunked) == 20  # no fp8 row: K, N are not multiples of 128
    for a, b in zip(whole, chunked):
        assert (a.recipe, a.mode) == (b.recipe, b.mode)
        for name in ("sqnr_db", "worst_group_sqnr_db", "clipped_fraction", "subnormal_scale_fraction"):
            assert getattr(a, name) == pytest.approx(getattr(b, name), abs=1e-9), (a.recipe, a.mode, name)


def test_rows_equal_the_single_pass_definition():
    calibration, held_out, w = problem()
    results = {(r.recipe, r.mode): r for r in evaluation.evaluate(calibration, held_out, w, progress=False,
                                                                   chunk_elements=5 * G * K)}
    x = held_out.float()
    reference = baselines.reference_output(x, w)
    for sharing in ("shared", "per_group"):
        mode = ScaleMode(sharing, "dynamic")  # one dynamic scale for the whole held-out set
        z, xq = baselines.nvfp4_output(x, w, mode.global_scale(x))
        row = results[("dynamic", mode.name)]
        assert row.sqnr_db == pytest.approx(metrics.sqnr_db(reference, z), abs=1e-9)
        assert row.worst_group_sqnr_db == pytest.approx(float(metrics.sqnr_db_per_group(reference, z).min()), abs=1e-9)
    bf16 = results[("bf16", "-")]
    assert bf16.sqnr_db == pytest.approx(metrics.sqnr_db(reference, baselines.bf16_output(x, w)), abs=1e-9)
    # The max recipe calibrated on quieter tokens clips on the held-out ones: counts summed over chunks.
    calibrator = MaxCalibrator("per_group")
    calibrator.observe(calibration)
    z, xq = baselines.nvfp4_output(x, w, calibrator.global_scale())
    stats = metrics.quantization_stats(x, xq)
    assert stats["clipped_elements"] > 0
    row = results[("max", "per_group static")]
    assert row.clipped_fraction == stats["clipped_elements"] / stats["elements"]
    assert row.sqnr_db == pytest.approx(metrics.sqnr_db(reference, z), abs=1e-9)


def test_a_bf16_dump_stays_bf16_when_loaded(tmp_path):
    x = torch.randn(32, 4, 32).to(torch.bfloat16)
    save_file({"o": x}, str(tmp_path / "a.safetensors"))
    loaded = io.load_activations(tmp_path / "a.safetensors", 2)
    assert loaded.dtype == torch.bfloat16 and torch.equal(loaded, x.reshape(32, 2, 64))
