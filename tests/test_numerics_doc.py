"""docs/numerics.md names the test that pins each rule: every named test must exist, and
every section must name at least one."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "numerics.md"
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[[^\]`]*\])?`")


def references(text):
    return REFERENCE.findall(text)


def test_every_test_named_in_numerics_md_exists():
    text = DOC.read_text()
    found = references(text)
    assert len(found) >= 30, "docs/numerics.md names too few tests; did the reference format change?"
    missing = []
    for path, name in found:
        source = ROOT / path
        if not source.is_file():
            missing.append(f"{path} (no such file)")
        elif not re.search(rf"^def {name}\(", source.read_text(), re.MULTILINE):
            missing.append(f"{path}::{name}")
    assert not missing, f"docs/numerics.md names tests that do not exist: {missing}"


def test_every_numbered_section_names_a_test():
    sections = re.split(r"^## ", DOC.read_text(), flags=re.MULTILINE)[1:]
    numbered = [s for s in sections if re.match(r"\d+\.", s)]
    assert len(numbered) >= 5
    for section in numbered:
        assert references(section), f"section {section.splitlines()[0]!r} names no test"


def test_the_reference_parser_sees_a_wrong_name():
    assert references("x (`tests/test_quantize.py::test_nope`) y") == [("tests/test_quantize.py", "test_nope")]
    assert references("`tests/findings/test_findings.py::test_finding[F01]`") == [
        ("tests/findings/test_findings.py", "test_finding")]
