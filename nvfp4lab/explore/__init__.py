"""An interactive explorer of NVFP4 activation numerics (``notebooks/00_explore.py``).

* :mod:`~nvfp4lab.explore.sources`: the data-source registry (synthetic, MiniLM, a
  user's safetensors file; one decorated function adds one);
* :mod:`~nvfp4lab.explore.compute`: :class:`Controls` -> :class:`View`, the numbers
  behind every plot, with caching;
* :mod:`~nvfp4lab.explore.views`: one seaborn figure of a :class:`View`;
* :mod:`~nvfp4lab.explore.ui`: the ipywidgets controls wired to them.
"""

from nvfp4lab.explore.compute import Controls, Explorer, View
from nvfp4lab.explore.sources import SOURCES, Layer, SourceOptions, register_source

__all__ = ["SOURCES", "Controls", "Explorer", "Layer", "SourceOptions", "View", "register_source"]
