"""The tokenizer of a GGUF decoder LM, built from the file's own metadata with the
``tokenizers`` library as the BPE engine.

* ``tokenizer.ggml.model == "gpt2"`` (SmolLM2, Qwen2, Llama 3): byte-level BPE from
  ``tokenizer.ggml.tokens`` and ``tokenizer.ggml.merges``. The text is first cut by the
  pre-tokenizer that ``tokenizer.ggml.pre`` names (:data:`PRE_TOKENIZERS`): a sequence of
  regexes, each cutting every piece left by the previous one into its matches and the text
  between them (llama.cpp's ``unicode_regex_split``; ``tokenizers``' ``Split(...,
  "isolated")``); then each piece's UTF-8 bytes are spelled in GPT-2's byte alphabet and
  merged. Tokens the file marks user-defined (type 4, e.g. Qwen's ``<tool_call>``) match
  whole first, as llama.cpp always does; control tokens (type 3, ``<|endoftext|>``) are not
  parsed out of text (llama.cpp's ``parse_special=false``).
* ``tokenizer.ggml.model == "llama"`` (Gemma 3): SentencePiece-style BPE: the file has tokens
  and scores but no merges. Merging the adjacent pair whose merged token scores highest is
  BPE with the merges ranked by that score, so the merges are rebuilt from the vocabulary
  (every split of a token into two tokens, ranked by the token's score); spaces become
  ``▁``; user-defined pieces (runs of newlines or spaces, markup) match whole first; bytes
  outside the vocabulary fall back to the ``<0xNN>`` tokens. ``tokenizer.ggml.pre`` does not
  apply (llama.cpp reads it for BPE vocabularies only).

``encode(text) -> list[int]`` adds no BOS; :func:`nvfp4lab.models.decoder` adds it when the
file says so (``tokenizer.ggml.add_bos_token``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SPACE = "\u2581"
NORMAL, CONTROL, USER_DEFINED = 1, 3, 4  # llama.cpp token types

# GPT-2's split: contractions, optional space + letters, optional space + digits, optional
# space + other symbols, whitespace not followed by a non-space.
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
# Llama 3 (tiktoken cl100k-like): any one non-letter/digit/newline glued before letters (so
# ``#include``, ``_sort`` stay whole), digits in runs of 1-3, symbols keep trailing newlines
# (``):\n``), newline runs with their leading spaces.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen2: Llama 3's regex with every digit on its own.
QWEN2_SPLIT = LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")


@dataclass(frozen=True)
class PreTokenizer:
    """How a ``tokenizer.ggml.pre`` value cuts text before BPE: ``splits`` applied in order
    (each isolates its matches within the previous pieces); ``ignore_merges``: a piece that
    is itself a vocabulary token becomes that token without merging (llama.cpp's and the
    Llama 3 ``tokenizer.json``'s ``ignore_merges``)."""

    splits: tuple[str, ...]
    ignore_merges: bool = False


# The values llama.cpp (src/llama-vocab.cpp, ``llm_tokenizer_bpe``) maps to each regex list.
_DEFAULT = PreTokenizer((r"[\p{P}\$\+<=>\^~\|]+", GPT2_SPLIT, r"\p{N}+", r"[0-9][0-9][0-9]"))
_GPT2 = PreTokenizer((GPT2_SPLIT,))
_SMOLLM = PreTokenizer((r"\p{N}", GPT2_SPLIT))  # StarCoder's: every digit alone, then GPT-2's
_LLAMA3 = PreTokenizer((LLAMA3_SPLIT,), ignore_merges=True)
_QWEN2 = PreTokenizer((QWEN2_SPLIT,))
PRE_TOKENIZERS = {
    "default": _DEFAULT,  # also a file without the field, as in llama.cpp
    "gpt-2": _GPT2, "gpt2": _GPT2,  # llama.cpp spells it gpt-2; gpt2 accepted as the same
    "smollm": _SMOLLM, "starcoder": _SMOLLM,
    "llama-bpe": _LLAMA3, "llama3": _LLAMA3, "llama-v3": _LLAMA3,
    "qwen2": _QWEN2, "deepseek-r1-qwen": _QWEN2,
}


def pre_tokenizer_of(pre: str | None) -> PreTokenizer:
    """The :class:`PreTokenizer` a ``tokenizer.ggml.pre`` value names (``None``: the field is
    absent, llama.cpp's ``default``); an unknown value raises ``ValueError``."""
    key = "default" if pre is None or pre == "" else pre
    if key not in PRE_TOKENIZERS:
        raise ValueError(f"unsupported tokenizer.ggml.pre {pre!r}; nvfp4lab.models supports "
                         f"{', '.join(sorted(PRE_TOKENIZERS))}")
    return PRE_TOKENIZERS[key]


def _strings(field) -> list[str]:
    return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]


def _byte_level_pre_tokenizer(pre: PreTokenizer):
    """``tokenizers`` pre-tokenizer: the regex splits on the text, then bytes → GPT-2 alphabet."""
    from tokenizers import Regex, pre_tokenizers

    steps = [pre_tokenizers.Split(Regex(pattern), behavior="isolated") for pattern in pre.splits]
    return pre_tokenizers.Sequence([*steps, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def _byte_level(tokens: list[str], merges: list[str], token_types, pre: PreTokenizer):
    from tokenizers import AddedToken, Tokenizer, decoders, models

    vocab = {token: i for i, token in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, ignore_merges=pre.ignore_merges))
    tokenizer.pre_tokenizer = _byte_level_pre_tokenizer(pre)
    tokenizer.decoder = decoders.ByteLevel()
    if token_types is not None:
        tokenizer.add_tokens([AddedToken(t, normalized=False, special=False)
                              for t, kind in zip(tokens, token_types) if kind == USER_DEFINED])
    return tokenizer


def _sentencepiece_bpe(tokens: list[str], scores, token_types):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers

    vocab = {token: i for i, token in enumerate(tokens)}
    ranked = []
    for i, token in enumerate(tokens):  # control, byte and unused tokens never merge
        if token_types[i] != NORMAL or len(token) < 2:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            a, b = vocab.get(left), vocab.get(right)
            if a is not None and b is not None and token_types[a] == NORMAL and token_types[b] == NORMAL:
                ranked.append((-float(scores[i]), i, a, b, left, right))
    ranked.sort()
    merges = [(left, right) for *_, left, right in ranked]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, fuse_unk=True,
                                     unk_token=tokens[3] if len(tokens) > 3 else None))
    tokenizer.normalizer = normalizers.Replace(Regex(" "), SPACE)
    # user-defined pieces (runs of newlines or spaces, markup) match whole, before BPE, as in SentencePiece
    tokenizer.add_tokens([AddedToken(t, normalized=True, special=False)
                          for t, kind in zip(tokens, token_types) if kind == USER_DEFINED])
    tokenizer.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()])
    return tokenizer


def _field(r, key):
    return r.fields[key].contents() if key in r.fields else None


@lru_cache(maxsize=4)
def _build(path: str, _mtime: float):
    from nvfp4lab.models.gguf_weights import reader

    r = reader(path)
    kind = _field(r, "tokenizer.ggml.model")
    tokens = _strings(r.fields["tokenizer.ggml.tokens"])
    if kind == "gpt2":
        if "tokenizer.ggml.merges" not in r.fields:
            raise ValueError(f"{path}: a gpt2 tokenizer without tokenizer.ggml.merges")
        try:
            pre = pre_tokenizer_of(_field(r, "tokenizer.ggml.pre"))
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
        merges = _strings(r.fields["tokenizer.ggml.merges"])
        return _byte_level(tokens, merges, _field(r, "tokenizer.ggml.token_type"), pre)
    if kind == "llama":
        return _sentencepiece_bpe(tokens, _field(r, "tokenizer.ggml.scores"), _field(r, "tokenizer.ggml.token_type"))
    raise ValueError(f"{path}: unsupported tokenizer model {kind!r} (nvfp4lab.models reads 'gpt2' and 'llama')")


def tokenizer_of(path: str | Path):
    """A ``tokenizers.Tokenizer`` for the GGUF file at ``path`` (cached per file)."""
    path = Path(path).resolve()
    return _build(str(path), path.stat().st_mtime)


def encode(path: str | Path, text: str) -> list[int]:
    """The token ids of ``text`` (no BOS) under the GGUF file's own tokenizer."""
    return tokenizer_of(path).encode(text, add_special_tokens=False).ids
