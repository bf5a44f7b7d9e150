"""nvfp4lab's floors, read from the sources: the study (notebooks' computations, findings,
the study runner) sits on top; nothing below it imports ``nvfp4lab.study``, and the
plotting style (``nvfp4lab.style``) imports nothing of nvfp4lab."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nvfp4lab"
#: Modules allowed to import the study: the study itself and the command line above it.
ABOVE_THE_STUDY = ("study/", "cli.py", "__main__.py")


def module_name(path: Path) -> str:
    parts = ["nvfp4lab", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports, at any depth of the code:
    ``import a.b`` gives ``a.b``; ``from a import b`` gives ``a`` and ``a.b`` (``b`` may be
    a module); relative imports are resolved against ``module``'s package."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)
    return found


def sources():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, path.relative_to(PACKAGE).as_posix()


def is_study(name: str) -> bool:
    return name == "nvfp4lab.study" or name.startswith("nvfp4lab.study.")


def test_the_import_reader_sees_every_form_of_import():
    source = ("import nvfp4lab.study.run\nfrom nvfp4lab import study\nfrom ..study import paths\n"
              "def f():\n    from .style import apply_style\n")
    found = imported_modules(source, "nvfp4lab.models.command")
    assert {"nvfp4lab.study.run", "nvfp4lab.study", "nvfp4lab.study.paths", "nvfp4lab.models.style"} <= found
    assert imported_modules("from . import compute\n", "nvfp4lab.explore", is_package=True) >= {
        "nvfp4lab.explore.compute"}


def test_no_module_below_the_study_imports_it():
    offenders = []
    for path, relative in sources():
        if relative.startswith(ABOVE_THE_STUDY):
            continue
        names = imported_modules(path.read_text(), module_name(path), path.name == "__init__.py")
        offenders += [f"nvfp4lab/{relative} imports {name}" for name in sorted(names) if is_study(name)]
    assert offenders == [], "move what they need below the study (e.g. nvfp4lab.style):\n" + "\n".join(offenders)


def test_the_plotting_style_imports_nothing_of_nvfp4lab():
    path = PACKAGE / "style.py"
    names = imported_modules(path.read_text(), "nvfp4lab.style")
    assert not [name for name in names if name.split(".")[0] == "nvfp4lab"], names
