import math

import torch

from nvfp4lab import metrics, quantize_nvfp4


def test_sqnr_and_relative_error_on_known_values():
    ref = torch.tensor([3.0, 4.0])
    test = torch.tensor([3.0, 4.5])  # noise energy 0.25, signal 25
    assert math.isclose(metrics.sqnr_db(ref, test), 10 * math.log10(100))
    assert math.isclose(metrics.relative_frobenius_error(ref, test), 0.1)
    assert metrics.sqnr_db(ref, ref) == math.inf


def test_per_group_metrics_reduce_over_everything_but_the_group_dim():
    ref = torch.ones(5, 2, 4)
    test = ref.clone()
    test[:, 1] *= 1.1
    assert metrics.relative_frobenius_error_per_group(ref, test)[0] == 0
    assert math.isclose(float(metrics.relative_frobenius_error_per_group(ref, test)[1]), 0.1, rel_tol=1e-6)
    assert math.isclose(float(metrics.sqnr_db_per_group(ref, test, group_dim=1)[1]), 20.0, rel_tol=1e-6)


def test_quantization_stats_count_clipping_underflow_and_subnormal_scales():
    x = torch.zeros(1, 64)
    x[0, :16] = 100.0  # static gs for amax 1: the block scale saturates -> clipped
    x[0, 16:32] = 0.01  # (0.01/6)/gs = 4.48 -> normal scale
    x[0, 32:48] = 1e-5  # scale 0.0045 -> subnormal
    x[0, 48:64] = 1e-8  # scale underflows to 0
    stats = metrics.quantization_stats(x, quantize_nvfp4(x, 1.0 / 2688))
    assert stats["clipped_blocks"] == 1 and stats["clipped_elements"] == 16
    assert stats["subnormal_scale_blocks"] == 1
    assert stats["zero_scale_blocks"] == 1 and stats["underflowed_blocks"] == 1
    dynamic = metrics.quantization_stats(x, quantize_nvfp4(x))
    assert dynamic["clipped_elements"] == 0
