"""Activations and weights to study: synthetic DeepSeek-V4-like tensors
(:mod:`nvfp4lab.data.synthetic`) and real ones captured from all-MiniLM-L6-v2
(:mod:`nvfp4lab.data.minilm`)."""
