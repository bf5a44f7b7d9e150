"""An output folder that a failed run leaves as it found it.

``with OutputFolder(path) as out: ...; out.write(name, data)`` creates ``path`` (and
any missing parents) on entry, checking that it can be written, and records every
folder it created and every file written through it. If the ``with`` body raises
(including ``KeyboardInterrupt``), those files are deleted and the folders it created
are removed again (only if empty); a folder that existed before is never removed.
"""

from __future__ import annotations

from pathlib import Path


class OutputFolder:
    def __init__(self, path) -> None:
        self.path = Path(path)
        self.created: list[Path] = []
        self.written: list[Path] = []

    def __enter__(self) -> OutputFolder:
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"the output folder {self.path} is a file")
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        try:
            for folder in reversed(missing):
                folder.mkdir()
                self.created.append(folder)
            probe = self.path / ".nvfp4lab-write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            self._undo()
            raise ValueError(f"cannot write to the output folder {self.path}: {error.strerror or error}") from error
        return self

    def write(self, name: str, data: bytes | str) -> Path:
        path = self.path / name
        if not path.exists():
            self.written.append(path)
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
        return path

    def _undo(self) -> None:
        for path in self.written:
            path.unlink(missing_ok=True)
        for folder in reversed(self.created):
            try:
                folder.rmdir()
            except OSError:  # not empty: someone else wrote there meanwhile
                break

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            self._undo()
