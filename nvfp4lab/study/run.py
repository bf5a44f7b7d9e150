"""``nvfp4lab study [--fast | --full]``: execute every notebook into ``reports/`` and write
``reports/findings.md``.

For each ``notebooks/NN_*.py`` (Jupytext percent format) it replaces the cell tagged
``parameters`` with ``FAST`` / ``DATA_DIR``, executes it with nbclient, and writes the
executed ``.ipynb`` and an ``.html`` next to the figures (``reports/figures``, PNG and
SVG). Then it recomputes every finding (``nvfp4lab.study.findings``) and writes
``findings.md`` and ``findings.json``: each claim with its numbers and whether it holds.
Real-model tensors are captured first when ``DATA_DIR`` has none. Exit status 1 when a
finding does not hold.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tqdm import tqdm

from nvfp4lab.validation import check_writable_folder

ROOT = Path(__file__).resolve().parents[2]
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


def execute_notebook(path: Path, out_dir: Path, fast: bool, data_dir: Path, timeout: int = 1800) -> Path:
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
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    target = out_dir / f"{path.stem}.ipynb"
    nbformat.write(notebook, target)
    html, _ = HTMLExporter().from_notebook_node(notebook)
    (out_dir / f"{path.stem}.html").write_text(html)
    return target


def write_findings(out_dir: Path, fast: bool, data_dir: Path) -> bool:
    from nvfp4lab.study.findings import FINDINGS

    lines = [f"# nvfp4lab findings ({'fast' if fast else 'full'} mode)", ""]
    records, all_hold = [], True
    for finding in tqdm(FINDINGS, desc="findings"):
        numbers = finding.compute(fast, data_dir)
        holds = bool(finding.holds(numbers))
        all_hold &= holds
        lines += [f"## {finding.id} — {'holds' if holds else 'DOES NOT HOLD'}", "", finding.statement(numbers), "",
                  f"Notebook `notebooks/{finding.notebook}.py`; pinned by `{finding.test}`.", ""]
        records.append({"id": finding.id, "holds": holds, "claim": finding.statement(numbers),
                        "numbers": {k: float(v) for k, v in numbers.items()}})
    (out_dir / "findings.md").write_text("\n".join(lines))
    (out_dir / "findings.json").write_text(json.dumps(records, indent=1))
    return all_hold


def run(fast: bool, out: str = "reports", data: str = "data/generated/minilm") -> int:
    out_dir, data_dir = Path(out).resolve(), Path(data).resolve()
    check_writable_folder(out_dir)
    ensure_real_data(data_dir)
    os.environ["NVFP4LAB_FIGURES"] = str(out_dir / "figures")
    os.environ.setdefault("MPLBACKEND", "Agg")
    start = time.time()
    for path in tqdm(notebook_paths(), desc=f"notebooks ({'fast' if fast else 'full'})"):
        execute_notebook(path, out_dir, fast, data_dir)
    all_hold = write_findings(out_dir, fast, data_dir)
    print(f"study done in {time.time() - start:.0f} s: {out_dir / 'findings.md'}"
          + ("" if all_hold else "  — some findings DO NOT HOLD"))
    return 0 if all_hold else 1
