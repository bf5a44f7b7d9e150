"""``nvfp4lab study [--fast | --full]``: execute every notebook into ``reports/`` and write
``reports/findings.md``.

For each ``notebooks/NN_*.py`` (Jupytext percent format) it replaces the cell tagged
``parameters`` with ``FAST`` / ``DATA_DIR``, executes it with nbclient (kernel in the
project root, matplotlib inline) and writes the executed ``.ipynb`` and an ``.html`` with
the figures inline; the notebooks also save each figure under ``<out>/figures`` (PNG and
SVG). Then it recomputes every finding (``nvfp4lab.study.findings``) and writes
``findings.md`` (the conditions and definitions, then each claim with its numbers, whether
it holds and a link to its figure) and ``findings.json``.
Real-model tensors are captured first when ``DATA_DIR`` has none. Exit status 1 when a
finding does not hold.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tqdm import tqdm

from nvfp4lab.study.paths import project_root
from nvfp4lab.validation import check_writable_folder

ROOT = project_root()
NOTEBOOKS = ROOT / "notebooks"


def ensure_real_data(data_dir: Path) -> None:
    if (data_dir / "manifest.json").is_file():
        return
    from nvfp4lab.data import minilm

    print(f"capturing all-MiniLM-L6-v2 attention outputs into {data_dir} ...")
    minilm.capture(data_dir)


def notebook_paths() -> list[Path]:
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
    if not paths:
        raise ValueError(f"no notebooks found in {NOTEBOOKS}")
    return paths


def kernel_environment() -> dict[str, str]:
    """The notebook kernel's environment: ours, with matplotlib's inline backend forced (a
    ``MPLBACKEND=Agg`` from the caller would keep every figure out of the notebook and
    its HTML)."""
    return {**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline"}


def execute_notebook(path: Path, out_dir: Path, fast: bool, data_dir: Path, timeout: int = 1800,
                     cwd: Path = ROOT) -> Path:
    """Execute ``path`` (kernel started in ``cwd``) with ``FAST``/``DATA_DIR`` in its
    ``parameters`` cell; write ``out_dir/<stem>.ipynb`` and ``.html`` with the figures
    inline. Returns the ``.ipynb`` path."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    notebook = jupytext.read(path)
    parameters = f"FAST = {fast!r}\nDATA_DIR = {str(data_dir)!r}\n"
    tagged = [cell for cell in notebook.cells if "parameters" in cell.get("metadata", {}).get("tags", [])]
    if not tagged:
        raise ValueError(f"{path.name} has no cell tagged 'parameters'")
    tagged[0].source = parameters
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute(env=kernel_environment())
    target = out_dir / f"{path.stem}.ipynb"
    nbformat.write(notebook, target)
    html, _ = HTMLExporter().from_notebook_node(notebook)
    (out_dir / f"{path.stem}.html").write_text(html)
    return target


def findings_markdown(records: list[dict], fast: bool, conditions: str, figures: Path | None) -> str:
    """``findings.md``: the conditions, then per finding its claim, whether it holds, its
    notebook, test and figure: a link relative to ``findings.md`` (the figures lie in
    ``figures`` next to it; ``None`` when they do not), or a note when the file is missing."""
    lines = [f"# nvfp4lab findings ({'fast' if fast else 'full'} mode)", "", conditions, "## Findings", ""]
    for r in records:
        lines += [f"### {r['id']} — {'holds' if r['holds'] else 'DOES NOT HOLD'}", "", r["claim"], ""]
        where = f"Notebook `notebooks/{r['notebook']}.py`; pinned by `{r['test']}`."
        if r["figure"] and figures is not None and (figures / f"{r['figure']}.png").is_file():
            where += f" Figure: [{r['figure']}](figures/{r['figure']}.png)"
            lines += [where, "", f"![{r['figure']}](figures/{r['figure']}.png)", ""]
        elif r["figure"]:
            lines += [where + f" Figure `{r['figure']}` was not produced by this run.", ""]
        else:
            lines += [where, ""]
    return "\n".join(lines)


def write_findings(out_dir: Path, fast: bool, data_dir: Path) -> bool:
    from nvfp4lab.study.conditions import conditions_markdown
    from nvfp4lab.study.findings import FINDINGS

    records = []
    for finding in tqdm(FINDINGS, desc="findings"):
        numbers = finding.compute(fast, data_dir)
        records.append({"id": finding.id, "holds": bool(finding.holds(numbers)), "claim": finding.statement(numbers),
                        "notebook": finding.notebook, "test": finding.test, "figure": finding.figure,
                        "numbers": {k: float(v) for k, v in numbers.items()}})
    figures = out_dir / "figures"
    text = findings_markdown(records, fast, conditions_markdown(fast, data_dir), figures if figures.is_dir() else None)
    (out_dir / "findings.md").write_text(text)
    (out_dir / "findings.json").write_text(json.dumps(records, indent=1))
    return all(r["holds"] for r in records)


def run(fast: bool, out: str = "reports", data: str = "data/generated/minilm") -> int:
    out_dir, data_dir = Path(out).resolve(), Path(data).resolve()
    check_writable_folder(out_dir)
    ensure_real_data(data_dir)
    os.environ["NVFP4LAB_FIGURES"] = str(out_dir / "figures")
    start = time.time()
    for path in tqdm(notebook_paths(), desc=f"notebooks ({'fast' if fast else 'full'})"):
        execute_notebook(path, out_dir, fast, data_dir)
    all_hold = write_findings(out_dir, fast, data_dir)
    print(f"study done in {time.time() - start:.0f} s: {out_dir / 'findings.md'}"
          + ("" if all_hold else "  — some findings DO NOT HOLD"))
    return 0 if all_hold else 1
