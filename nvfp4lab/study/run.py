"""``nvfp4lab study [--fast | --full]``: execute every notebook into ``reports/`` and write
``reports/findings.md``.

For each ``notebooks/NN_*.py`` (Jupytext percent format) it replaces the cell tagged
``parameters`` with ``FAST`` / ``DATA_DIR``, executes it with nbclient (kernel in the
project root, matplotlib inline, reached over IPC sockets in a private temporary folder)
and writes the executed ``.ipynb`` and an ``.html`` with the figures inline; the notebooks
also save each figure under ``<out>/figures`` (PNG and SVG). Progress bars the kernel
draws on stderr (carriage-return updates, as tqdm writes them) go to the console, never
into the saved notebook: the console names the running notebook, shows the kernel's
latest progress bar and each notebook's duration. Then it recomputes every finding
(``nvfp4lab.study.findings``) and writes ``findings.md`` (the conditions and definitions,
then each claim with its numbers, whether it holds and a link to its figure) and
``findings.json``.
Real-model tensors are captured first when ``DATA_DIR`` has none. Exit status 1 when a
finding does not hold.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
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
    its HTML), and tqdm bars redrawn at most once a second (they go to the console)."""
    return {**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline", "TQDM_MININTERVAL": "1"}


class ProgressFilter:
    """Splits a kernel's stderr text into what stays in the notebook and progress-bar text.

    A line (up to ``\\n``) holding a carriage return is a progress bar's redraw, as tqdm
    writes them; so is everything after such a redraw up to the next ``\\n``, across
    messages (tqdm ends a bar with a lone ``\\n`` when it closes)."""

    def __init__(self) -> None:
        self.in_bar = False

    def split(self, text: str) -> tuple[str, str]:
        """``(kept, progress)`` of one stderr message."""
        kept, progress = [], []
        for line in re.findall(r"[^\n]*\n|[^\n]+", text):
            if self.in_bar or "\r" in line:
                progress.append(line)
                self.in_bar = not line.endswith("\n")
            else:
                kept.append(line)
        return "".join(kept), "".join(progress)


def quiet_client_class():
    """nbclient's ``NotebookClient`` with the kernel's progress bars sent to a callable
    instead of into the notebook (built lazily: nbclient is a notebooks extra)."""
    from nbclient import NotebookClient

    class QuietNotebookClient(NotebookClient):
        def __init__(self, notebook, progress: Callable[[str], None], **kwargs) -> None:
            super().__init__(notebook, **kwargs)
            self.progress = progress
            self.filters: dict[int, ProgressFilter] = {}

        def output(self, outs, msg, display_id, cell_index):
            content = msg["content"]
            if msg["msg_type"] == "stream" and content.get("name") == "stderr":
                kept, bars = self.filters.setdefault(cell_index, ProgressFilter()).split(content["text"])
                if bars:
                    self.progress(bars)
                if not kept:
                    return None
                msg = {**msg, "content": {**content, "text": kept}}
            return super().output(outs, msg, display_id, cell_index)

    return QuietNotebookClient


def run_kernel(notebook, cwd: Path, timeout: int, progress: Callable[[str], None]) -> None:
    """Execute ``notebook`` (an nbformat node, in place) in a ``python3`` kernel started in
    ``cwd``. The kernel listens on IPC sockets in a private temporary folder (no TCP port,
    so no unencrypted-TCP warning), removed afterwards."""
    from traitlets.config import Config

    sockets = Path(tempfile.mkdtemp(prefix="nvfp4lab-kernel-"))
    try:
        config = Config({"KernelManager": {"transport": "ipc", "ip": str(sockets / "kernel")}})
        client = quiet_client_class()(notebook, progress, timeout=timeout, kernel_name="python3", config=config,
                                      resources={"metadata": {"path": str(cwd)}})
        client.execute(env=kernel_environment())
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


class StudyConsole:
    """The study's console (stderr): a line naming each notebook as it starts
    (``notebooks (fast): 7/8 07_decoder_models``), the running kernel's latest progress bar,
    and each notebook's duration. On a terminal the progress redraws one status line; in a
    log (not a terminal) a bar's state is printed when it closes, or every ``every`` seconds."""

    def __init__(self, label: str, total: int, stream=None, every: float = 30.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label, self.total, self.every = label, total, every
        self.line, self.started, self.printed, self.pending = "", 0.0, 0.0, False

    def _status(self, text: str) -> None:
        width = shutil.get_terminal_size().columns - 1
        self.stream.write("\r" + text[:width] + "\x1b[K")
        self.stream.flush()
        self.pending = True

    def _print(self, text: str) -> None:
        self.stream.write(("\r\x1b[K" if self.pending else "") + text + "\n")
        self.stream.flush()
        self.pending, self.printed = False, time.perf_counter()

    def start(self, index: int, name: str) -> None:
        self.line, self.started = f"{self.label}: {index}/{self.total} {name}", time.perf_counter()
        (self._status if self.tty else self._print)(self.line)

    def progress(self, text: str) -> None:
        """Show the latest bar state in ``text`` (a kernel's progress output)."""
        states = [part.strip() for part in re.split(r"[\r\n]", text) if part.strip()]
        if not states:
            return
        shown = f"{self.line} · {states[-1]}"
        if self.tty:
            self._status(shown)
        elif text.endswith("\n") or time.perf_counter() - self.printed >= self.every:
            self._print(shown)

    def done(self, failed: bool = False) -> float:
        """Print the running notebook's duration; returns it in seconds."""
        seconds = time.perf_counter() - self.started
        self._print(f"{self.line} {'FAILED after' if failed else 'done in'} {seconds:.0f} s")
        return seconds


def execute_notebook(path: Path, out_dir: Path, fast: bool, data_dir: Path, timeout: int = 1800,
                     cwd: Path = ROOT, progress: Callable[[str], None] | None = None) -> Path:
    """Execute ``path`` (kernel started in ``cwd``) with ``FAST``/``DATA_DIR`` in its
    ``parameters`` cell; write ``out_dir/<stem>.ipynb`` and ``.html`` with the figures
    inline. The kernel's progress bars go to ``progress`` (default: our stderr), not into
    the notebook. Returns the ``.ipynb`` path."""
    import jupytext
    import nbformat
    from nbconvert import HTMLExporter

    notebook = jupytext.read(path)
    parameters = f"FAST = {fast!r}\nDATA_DIR = {str(data_dir)!r}\n"
    tagged = [cell for cell in notebook.cells if "parameters" in cell.get("metadata", {}).get("tags", [])]
    if not tagged:
        raise ValueError(f"{path.name} has no cell tagged 'parameters'")
    tagged[0].source = parameters
    run_kernel(notebook, cwd, timeout, progress or sys.stderr.write)
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
    paths = notebook_paths()
    console = StudyConsole(f"notebooks ({'fast' if fast else 'full'})", len(paths))
    for index, path in enumerate(paths, 1):
        console.start(index, path.stem)
        try:
            execute_notebook(path, out_dir, fast, data_dir, progress=console.progress)
        except BaseException:
            console.done(failed=True)
            raise
        console.done()
    all_hold = write_findings(out_dir, fast, data_dir)
    print(f"study done in {time.time() - start:.0f} s: {out_dir / 'findings.md'}"
          + ("" if all_hold else "  — some findings DO NOT HOLD"))
    return 0 if all_hold else 1
