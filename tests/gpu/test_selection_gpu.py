"""Each forward path the layer selects is the kernel that actually ran on the GPU: the CUDA
kernels of one forward, read from the profiler (not from which Python function was called),
for every range of T and both scale sources. Skipped without a CUDA sm_90+ GPU."""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from nvfp4lab.kernels import launch

from test_decode_gpu import layers_for
from test_kernels_gpu import CUDA, activations

GROUPS, K, N = 8, 4096, 1024
#: nvfp4lab's kernel functions (longest first: one name may contain another)
OURS = sorted(["decode_forward_kernel", "prefill_gemm_kernel", "quantize_activations_kernel", "group_amax_kernel",
               "grouped_gemm_kernel", "grouped_gemm_wgmma_kernel", "split_k_reduce_kernel"], key=len, reverse=True)


def ours(names: list[str]) -> list[str]:
    """The nvfp4lab kernels among ``names`` (CUDA kernel names), as their function names."""
    return [next(o for o in OURS if o in name) for name in names if any(o in name for o in OURS)]


def kernels_of_one_forward(layer, tokens: int) -> list[str]:
    """Names of the CUDA kernels one forward of ``tokens`` tokens launched, in order."""
    o = activations(tokens, GROUPS, K, seed=tokens).view(tokens, GROUPS * K // 512, 512)
    layer(o)  # compile outside the profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        layer(o)
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def expected_kernels(tokens: int, dynamic: bool) -> list[str]:
    """What ``launch``'s selection rule says one forward runs, in order."""
    amax = ["group_amax_kernel"] if dynamic else []
    decode = tokens <= launch.DECODE_MAX_TOKENS
    assert launch.decode_selected(tokens, GROUPS, K, N, launch.multiprocessors(0)) == decode
    if decode:
        if launch.decode_fuses_amax(tokens, GROUPS, K, shared=False):  # the prologue finds the amax
            amax = []
        return amax + ["decode_forward_kernel"]
    assert launch.prefill_selected(tokens, GROUPS, K, N, launch.multiprocessors(0))
    return amax + ["quantize_activations_kernel", "prefill_gemm_kernel"]


@pytest.mark.parametrize("source", ["static", "dynamic"])
def test_the_selected_kernel_is_the_one_that_runs(source):
    layer = layers_for(GROUPS, K, N, "per_group", source, max_tokens=1024)["cutedsl"]
    for tokens in (1, 8, 9, 16, 17, 24, 32, 33, 64, 128, 256, 512, 1024):
        names = kernels_of_one_forward(layer, tokens)
        assert ours(names) == expected_kernels(tokens, source == "dynamic"), f"T={tokens}: ran {names}"
