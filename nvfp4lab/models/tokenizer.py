"""The tokenizer of a GGUF decoder LM, built from the file's own metadata with the
``tokenizers`` library as the BPE engine.

* ``tokenizer.ggml.model == "gpt2"`` (SmolLM2, Qwen2): byte-level BPE from
  ``tokenizer.ggml.tokens`` and ``tokenizer.ggml.merges``; digits are split one by one
  (``tokenizer.ggml.pre`` ``smollm``/``qwen2``/``default`` all do), then the GPT-2
  byte-level regex.
* ``tokenizer.ggml.model == "llama"`` (Gemma 3): SentencePiece-style BPE: the file has tokens
  and scores but no merges. Merging the adjacent pair whose merged token scores highest is
  BPE with the merges ranked by that score, so the merges are rebuilt from the vocabulary
  (every split of a token into two tokens, ranked by the token's score); spaces become
  ``▁``; user-defined pieces (runs of newlines or spaces, markup) match whole first; bytes
  outside the vocabulary fall back to the ``<0xNN>`` tokens.

``encode(text) -> list[int]`` adds no BOS; :func:`nvfp4lab.models.decoder` adds it when the
file says so (``tokenizer.ggml.add_bos_token``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

SPACE = "\u2581"


def _strings(field) -> list[str]:
    return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]


def _byte_level(tokens: list[str], merges: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _sentencepiece_bpe(tokens: list[str], scores, token_types):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers

    normal, user_defined = 1, 4  # llama.cpp token types; control, byte and unused tokens never merge
    vocab = {token: i for i, token in enumerate(tokens)}
    ranked = []
    for i, token in enumerate(tokens):
        if token_types[i] != normal or len(token) < 2:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            a, b = vocab.get(left), vocab.get(right)
            if a is not None and b is not None and token_types[a] == normal and token_types[b] == normal:
                ranked.append((-float(scores[i]), i, a, b, left, right))
    ranked.sort()
    merges = [(left, right) for *_, left, right in ranked]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, fuse_unk=True,
                                     unk_token=tokens[3] if len(tokens) > 3 else None))
    tokenizer.normalizer = normalizers.Replace(Regex(" "), SPACE)
    # user-defined pieces (runs of newlines or spaces, markup) match whole, before BPE, as in SentencePiece
    tokenizer.add_tokens([AddedToken(t, normalized=True, special=False)
                          for t, kind in zip(tokens, token_types) if kind == user_defined])
    tokenizer.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    return tokenizer


@lru_cache(maxsize=4)
def _build(path: str, _mtime: float):
    from nvfp4lab.models.gguf_weights import reader

    r = reader(path)
    kind = r.fields["tokenizer.ggml.model"].contents() if "tokenizer.ggml.model" in r.fields else None
    tokens = _strings(r.fields["tokenizer.ggml.tokens"])
    if kind == "gpt2":
        if "tokenizer.ggml.merges" not in r.fields:
            raise ValueError(f"{path}: a gpt2 tokenizer without tokenizer.ggml.merges")
        return _byte_level(tokens, _strings(r.fields["tokenizer.ggml.merges"]))
    if kind == "llama":
        scores = r.fields["tokenizer.ggml.scores"].contents()
        types = r.fields["tokenizer.ggml.token_type"].contents()
        return _sentencepiece_bpe(tokens, scores, types)
    raise ValueError(f"{path}: unsupported tokenizer model {kind!r} (nvfp4lab.models reads 'gpt2' and 'llama')")


def tokenizer_of(path: str | Path):
    """A ``tokenizers.Tokenizer`` for the GGUF file at ``path`` (cached per file)."""
    path = Path(path).resolve()
    return _build(str(path), path.stat().st_mtime)


def encode(path: str | Path, text: str) -> list[int]:
    return tokenizer_of(path).encode(text, add_special_tokens=False).ids
