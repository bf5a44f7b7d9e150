"""``tokenizer.ggml.pre``: every supported value cuts text as llama.cpp does, and matches
transformers' GGUF tokenizer where transformers implements the same pre-tokenizer.

The oracle for llama.cpp's semantics is written here with the ``regex`` module: llama.cpp's
own patterns (copied as data from ``src/llama-vocab.cpp``, in its explicit-case spelling),
applied in order, each cutting every piece into its matches and the text between them
(``unicode_regex_split``); each piece is then BPE-merged by transformers' tokenizer for the
same file (a whole piece that is a token becomes that token when the value sets
``ignore_merges``, as llama.cpp's Llama 3 does). The vocabulary is tiny and synthetic
(:func:`gguf_tiny.write_tiny` with merge chains for words that straddle the regexes'
boundaries), so every split decision shows in the ids.
"""

import pytest
import regex

from gguf_tiny import spell, write_tiny
from nvfp4lab.models import tokenizer

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_CASED = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
LLAMA3 = _CASED + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = _CASED + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
LLAMA_CPP = {  # pre value -> (regexes in order, ignore_merges)
    "default": ([r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"], False),
    "gpt-2": ([GPT2], False),
    "smollm": ([r"\p{N}", GPT2], False),
    "llama-bpe": ([LLAMA3], True),
    "qwen2": ([QWEN2], False),
}
TEXT = ('#include <stdio.h>\n\nint main(void) {\n    printf("%d\\n", 1234567);\n    return 0;\n}\n\n'
        "def _sort(xs):\n    return sorted(xs)  # 1234567\n\n\n\n"
        "class Foo:  \n\tx = [1, 22, 333, 4444, 55555]\r\n"
        "   DON'T panic, I'LL see we're 3.14159e-10 0x1F naïve café — “quotes” 日本語 🙂  \n")
WORDS = ("#include", "include", "stdio", ".h", " <", "int", " main", "(void", ") {", "    ", "   ", "  ", "\n\n",
         "\n\n\n\n", "):\n", ":\n", " return", "return", "def", " _sort", "_sort", "sort", " sorted", "(xs", "xs",
         " #", " 1234567", "1234567", "123", "456", "12", "22", " 22", "333", " 333", "4444", "55555", "\n   ",
         " DON", "DON", "'T", "'t", "'LL", " I", " naïve", " café", " 日本語", "日本語", "printf", "(\"%", "\\n",
         "\",", " 0", " {\n", "}\n", "class", " Foo", "\tx", "\r\n", " panic", " see", " we", "'re")


def llama_cpp_pieces(text: str, patterns: list[str]) -> list[str]:
    """llama.cpp's ``unicode_regex_split``: each pattern cuts every piece into its matches
    and the text between them, in order."""
    pieces = [text]
    for pattern in patterns:
        cut = []
        for piece in pieces:
            start = 0
            for match in regex.finditer(pattern, piece):
                cut += [piece[start:match.start()]] if match.start() > start else []
                cut += [match.group()] if match.end() > match.start() else []
                start = match.end()
            cut += [piece[start:]] if start < len(piece) else []
        pieces = cut
    return pieces


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pre")
    return {pre: write_tiny(directory / f"{pre}.gguf", "llama", layers=1, pre=pre, words=WORDS) for pre in LLAMA_CPP}


def _reference(path):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _ids(reference, text):
    return reference(text, add_special_tokens=False).input_ids


@pytest.mark.parametrize("pre", sorted(LLAMA_CPP))
def test_each_pre_value_cuts_text_as_llama_cpp_does(files, pre):
    reference = _reference(files[pre])
    patterns, ignore_merges = LLAMA_CPP[pre]
    vocab = reference.get_vocab()
    expected = []
    for piece in llama_cpp_pieces(TEXT, patterns):
        whole = vocab.get(spell(piece)) if ignore_merges else None
        expected += [whole] if whole is not None else _ids(reference, piece)
    assert tokenizer.encode(files[pre], TEXT) == expected


@pytest.mark.parametrize("pre", ["qwen2", "llama-bpe", "gpt-2"])
def test_pre_values_transformers_implements_match_transformers(files, pre):
    reference = _reference(files[pre])
    if pre == "llama-bpe":  # Llama 3's tokenizer.json sets ignore_merges; transformers' GGUF path leaves it off
        reference.backend_tokenizer.model.ignore_merges = True
    assert tokenizer.encode(files[pre], TEXT) == _ids(reference, TEXT)


@pytest.mark.parametrize("pre, text, pieces", [
    ("qwen2", "#include <stdio.h>", ["#include", " <", "stdio", ".h", ">"]),
    ("llama-bpe", "#include <stdio.h>", ["#include", " <", "stdio", ".h", ">"]),
    ("gpt-2", "#include <stdio.h>", ["#", "include", " <", "stdio", ".", "h", ">"]),
    ("default", "#include <stdio.h>", ["#", "include", " ", "<", "stdio", ".", "h", ">"]),
    ("qwen2", "_sort(xs):\n    return", ["_sort", "(xs", "):\n", "   ", " return"]),
    ("gpt-2", "_sort(xs):\n    return", ["_", "sort", "(", "xs", "):", "\n   ", " return"]),
    ("qwen2", "def _sort", ["def", " _", "sort"]),
    ("qwen2", "x  # 1234567", ["x", " ", " #", " ", *"1234567"]),
    ("smollm", "x  # 1234567", ["x", " ", " #", " ", *"1234567"]),
    ("llama-bpe", "x  # 1234567", ["x", " ", " #", " ", "123", "456", "7"]),
    ("default", "x  # 1234567", ["x", "  ", "#", " ", "123", "456", "7"]),
    ("gpt-2", "x  # 1234567", ["x", " ", " #", " 1234567"]),
    ("qwen2", "DON'T\n\n\n", ["DON", "'T", "\n\n\n"]),
    ("gpt-2", "DON'T\n\n\n", ["DON", "'", "T", "\n\n\n"]),
])
def test_known_cuts(files, pre, text, pieces):
    """Hand-written expectations of where each pre-tokenizer cuts (before any merge)."""
    cut = tokenizer.tokenizer_of(files[pre]).pre_tokenizer.pre_tokenize_str(text)
    assert [piece for piece, _ in cut] == [spell(piece) for piece in pieces]


def test_llama_bpe_ignores_merges_for_a_piece_that_is_a_token():
    """llama.cpp's Llama 3 (and its ``tokenizer.json``) take a piece that is itself a token whole,
    even when no merge builds it; Qwen2 merges."""
    tokens = [*"abc", "ab", "abc"]  # "abc" has no merge: only "a b"
    llama3 = tokenizer._byte_level(tokens, ["a b"], None, tokenizer.pre_tokenizer_of("llama-bpe"))
    qwen2 = tokenizer._byte_level(tokens, ["a b"], None, tokenizer.pre_tokenizer_of("qwen2"))
    assert llama3.encode("abc").ids == [4]
    assert qwen2.encode("abc").ids == [3, 2]


def test_an_absent_pre_field_is_llama_cpps_default(tmp_path, files):
    absent = write_tiny(tmp_path / "absent.gguf", "llama", layers=1, words=WORDS)
    assert tokenizer.encode(absent, TEXT) == tokenizer.encode(files["default"], TEXT)
    assert tokenizer.encode(absent, TEXT) != tokenizer.encode(files["gpt-2"], TEXT)


def test_an_unknown_pre_value_is_refused_naming_it_and_the_supported_ones(tmp_path):
    path = write_tiny(tmp_path / "odd.gguf", "llama", layers=1, pre="falcon-mystery")
    with pytest.raises(ValueError, match=r"unsupported tokenizer.ggml.pre 'falcon-mystery'.*qwen2.*smollm") as error:
        tokenizer.encode(path, "hello")
    assert "\n" not in str(error.value) and "llama-bpe" in str(error.value) and "default" in str(error.value)


def test_user_defined_tokens_match_whole_and_control_tokens_stay_text(tmp_path):
    path = write_tiny(tmp_path / "user.gguf", "qwen2", layers=1, pre="qwen2", user_defined=("<tool_call>",))
    vocab = tokenizer.tokenizer_of(path).get_vocab()
    assert vocab["<tool_call>"] in tokenizer.encode(path, "a<tool_call>b")
    assert tokenizer.encode(path, "a<tool_call>b") == _ids(_reference(path), "a<tool_call>b")
    assert vocab["<|endoftext|>"] not in tokenizer.encode(path, "<|endoftext|>"), "llama.cpp parse_special=false"
