"""Soak test: replay captured CUDA graphs of the layer's forward many times with new
inputs and varying token counts, checking every output against the reference backend
on the same GPU: ``python -m nvfp4lab.tools.soak [--replays N]``.

One graph is captured per token count (as serving stacks capture one per batch size);
replays cycle through them. Both a static shared and a dynamic per-group activation scale
are soaked. Prints the worst relative error seen; exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse

import torch
from tqdm import tqdm

from nvfp4lab import Nvfp4GroupedLinear
from nvfp4lab.kernels import gpu_supported

TOKEN_COUNTS = (1, 5, 64, 130, 257)
TOLERANCE = 2e-3  # relative Frobenius error, as tests/gpu (fp32 summation order only)


def make_layers(activation_scale: str, source: str, w: torch.Tensor):
    layers = {}
    for backend in ("cutedsl", "reference"):
        layer = Nvfp4GroupedLinear(8, 8, 512, 1024, max_num_tokens=max(TOKEN_COUNTS), device="cuda",
                                   activation_scale=activation_scale, activation_scale_source=source,
                                   backend=backend, check_finite=False)
        layer.set_bf16_weight(w)
        layer.finalize_weights()
        layer.set_activation_global_scale(torch.full((8,), 6.0 / 2688))
        layers[backend] = layer
    return layers


def soak(replays: int) -> float:
    torch.backends.cuda.matmul.allow_tf32 = False
    w = (torch.randn(8, 4096, 1024, device="cuda") / 64).to(torch.bfloat16)
    worst = 0.0
    for activation_scale, source in (("shared", "static"), ("per_group", "dynamic")):
        layers = make_layers(activation_scale, source, w)
        kernel = layers["cutedsl"]
        graphs = {}
        stream = torch.cuda.Stream()
        for tokens in TOKEN_COUNTS:
            static_o = torch.randn(tokens, 64, 512, device="cuda").to(torch.bfloat16)
            kernel(static_o)  # compile outside the capture
            graph = torch.cuda.CUDAGraph()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), torch.cuda.graph(graph, stream=stream):
                static_z = kernel(static_o)
            torch.cuda.current_stream().wait_stream(stream)
            graphs[tokens] = (graph, static_o, static_z)
        for step in tqdm(range(replays), desc=f"soak {activation_scale} {source}"):
            tokens = TOKEN_COUNTS[step % len(TOKEN_COUNTS)]
            graph, static_o, static_z = graphs[tokens]
            o = torch.randn(tokens, 64, 512, device="cuda") * (1 + step % 7)
            static_o.copy_(o.to(torch.bfloat16))
            graph.replay()
            reference = layers["reference"](static_o).double()
            error = ((static_z.double() - reference).norm() / reference.norm()).item()
            worst = max(worst, error)
            if not error < TOLERANCE:
                raise AssertionError(f"replay {step} (T={tokens}, {activation_scale} {source}): relative error {error}")
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--replays", type=int, default=300)
    args = parser.parse_args()
    if not gpu_supported(torch.device("cuda")):
        parser.error("needs a CUDA GPU with compute capability >= 9.0 and CuTeDSL (nvidia-cutlass-dsl)")
    if args.replays < 1:
        parser.error(f"--replays must be >= 1; got {args.replays}")
    worst = soak(args.replays)
    print(f"soak: {2 * args.replays} graph replays over T in {TOKEN_COUNTS}, worst relative error {worst:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
