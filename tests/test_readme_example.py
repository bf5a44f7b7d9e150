"""README's Python example runs as written (on the CPU here; the same code picks the GPU
when there is one)."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    z, layer = namespace["z"], namespace["layer"]
    assert z.shape == (16, 8, 1024) and z.dtype == torch.bfloat16 and bool(z.abs().sum() > 0)
    assert layer.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert "torch.Size([16, 8, 1024]) torch.bfloat16" in capsys.readouterr().out
