"""Every relative link of README.md and docs/*.md, and every path in backticks that climbs
out of its folder (``../x``), names a file or folder inside the repository: a clone holds
everything the documentation cites. (Backticked ``./name`` paths are the user's folders,
e.g. an output folder, and are not checked.)"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
RELATIVE_CODE = re.compile(r"`(\.\./[^`\s]+)`")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative_targets(text: str) -> list[str]:
    """Link targets that are not URLs (``scheme:``) or anchors, without their ``#anchor``;
    and backticked paths starting with ``../``."""
    targets = [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]
    return [t.split("#")[0] for t in targets] + RELATIVE_CODE.findall(text)


def broken(document: Path) -> list[str]:
    found = []
    for target in relative_targets(document.read_text()):
        path = (document.parent / target).resolve()
        if not path.is_relative_to(ROOT):
            found.append(f"{target} (outside the repository)")
        elif not path.exists():
            found.append(f"{target} (missing)")
    return found


def test_the_link_reader_finds_links_images_and_relative_code_paths():
    text = ("[a](docs/x.md) ![b](figures/y.png) [c](https://example.org/z) [d](#section) "
            "[e](kernels.md#speed) `../shared/design/NVFP4.md` `./calibration-report` `nvfp4lab.flavors`")
    assert relative_targets(text) == ["docs/x.md", "figures/y.png", "kernels.md", "../shared/design/NVFP4.md"]


def test_every_relative_link_in_the_readme_and_docs_resolves_inside_the_repository(tmp_path):
    outside = tmp_path / "doc.md"
    outside.write_text("see `../elsewhere/NOTES.md`")
    assert broken(outside) == ["../elsewhere/NOTES.md (outside the repository)"]  # the check can fail
    problems = {doc.relative_to(ROOT).as_posix(): broken(doc) for doc in documents()}
    assert {doc: found for doc, found in problems.items() if found} == {}
