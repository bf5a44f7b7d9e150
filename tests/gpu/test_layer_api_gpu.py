"""The layer's API on the GPU: the custom op under torch.compile (fullgraph) and under
CUDA graphs (torch.compile's reduce-overhead mode, and a manual capture of model code
calling ``run``), against eager calls. Skipped without a CUDA sm_90+ GPU."""

import pytest
import torch

from nvfp4lab import Nvfp4GroupedLinear

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")
G, HPG, D, N = 8, 8, 512, 1024  # DeepSeek-V4-Flash wo_a


def layer_and_inputs(source, tokens=(256, 256, 96)):
    g = torch.Generator(device=CUDA).manual_seed(0)
    layer = Nvfp4GroupedLinear(G, HPG, D, N, max_num_tokens=512, device=CUDA, activation_scale="per_group",
                               activation_scale_source=source)
    layer.set_bf16_weight((torch.randn(G, HPG * D, N, generator=g, device=CUDA) / 64).to(torch.bfloat16))
    layer.finalize_weights()
    inputs = [torch.randn(t, G * HPG, D, generator=g, device=CUDA).to(torch.bfloat16) for t in tokens]
    if source == "static":
        layer.compute_activation_global_scale(inputs[0])
    return layer, inputs


class Block(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, o):
        first = self.layer.run(o * 0.5).float().relu()
        return first + self.layer.run(o).float()


@pytest.mark.parametrize("source", ["static", "dynamic"])
@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_compiled_fullgraph_equals_eager(source, mode):
    layer, inputs = layer_and_inputs(source)
    assert layer.backend == "cutedsl"
    model = Block(layer)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, mode=mode)
    for _ in range(3):  # reduce-overhead: warm-up, capture, then replays
        for o in inputs:
            assert torch.equal(compiled(o).clone(), model(o))


def test_model_code_calling_run_replays_in_a_cuda_graph():
    layer, inputs = layer_and_inputs("dynamic", tokens=(256, 256))
    layer.check_finite = False
    model = Block(layer)
    static_o = inputs[0].clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        model(static_o)  # warm-up: compiles the kernels outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_z = model(static_o)
    for o in inputs:
        static_o.copy_(o)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_z, model(o))
