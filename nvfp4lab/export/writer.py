"""Where an export goes: a folder that does not exist yet or is empty (an export never mixes
with other files), written through :class:`nvfp4lab.output_folder.OutputFolder` so that a
failed export leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import torch


def checked_out_dir(out_dir: str | Path) -> Path:
    """``out_dir`` as a Path; ``ValueError`` when it is a file or a non-empty folder."""
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"the output folder {path} is a file; give a new or empty folder")
    if path.is_dir() and any(path.iterdir()):
        raise ValueError(f"the output folder {path} exists and is not empty; give a new or empty folder "
                         "(nothing was written)")
    return path


def safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    """The tensors as one safetensors file (``{"format": "pt"}`` metadata, as transformers writes it)."""
    from safetensors.torch import save

    return save({name: t.contiguous() for name, t in tensors.items()}, metadata={"format": "pt"})
