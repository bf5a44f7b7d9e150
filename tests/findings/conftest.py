"""``NVFP4LAB_PERTURB_ULPS=k pytest tests/findings`` recomputes the decoder findings with every
layer's output multiplied by ``1 + k·2⁻²⁴·N(0, 1)`` (seeded): a stand-in for another CPU's
float reduction order, the variation the decoder pins must tolerate (test_findings.py's
docstring gives what it measured). The perturbed evaluation is cached apart from the real one."""

import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def perturbed_reduction_order(tmp_path_factory):
    ulps = float(os.environ.get("NVFP4LAB_PERTURB_ULPS", "0"))
    if not ulps:
        yield
        return
    from nvfp4lab.models import decoder, evaluate

    generator = torch.Generator().manual_seed(int(os.environ.get("NVFP4LAB_PERTURB_SEED", "1")))
    original, cache = decoder.Decoder.layer, evaluate.CACHE

    def layer(self, i, x, projection=decoder.dense_projection, stats=None):
        y = original(self, i, x, projection, stats)
        return y * (1 + ulps * 2.0**-24 * torch.randn(y.shape, generator=generator, dtype=y.dtype))

    decoder.Decoder.layer = layer
    evaluate.CACHE = tmp_path_factory.mktemp("perturbed-evaluations")
    evaluate.cached_evaluation.cache_clear()
    yield
    decoder.Decoder.layer, evaluate.CACHE = original, cache
    evaluate.cached_evaluation.cache_clear()
