"""Command-line tools that exercise the GPU path end to end (they use the layer and the
reference, so they live above :mod:`nvfp4lab.kernels`):

* ``python -m nvfp4lab.tools.selfcheck``: every kernel path on odd sizes vs the reference
  (run it under ``compute-sanitizer``);
* ``python -m nvfp4lab.tools.soak``: CUDA-graph replays of the layer with new inputs.
"""
