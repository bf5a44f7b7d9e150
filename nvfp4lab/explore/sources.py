"""The explorer's data sources: a registry of functions that give one layer's tensors.

A source is one function ``load(groups, options) -> Layer`` registered with
:func:`register_source`; the explorer caches what it returns, so a source may be slow.
Every source returns float32 activations ``(T, G, K)`` split into a calibration part and
a held-out part (the static recipes calibrate on the first, every view is measured on
the second), the weights ``(G, K, N)`` and, where it knows it, the head dimension D (the
explorer's Hadamard rotations need it: every block must divide D). Adding a source (e.g.
a decoder LM's layer) is one decorated function::

    @register_source("my model", groups=(1, 2, 4), default_groups=2, options=("layer",), layers=30)
    def my_model(groups, options):
        o = ...  # (T, H, D) attention outputs of layer options.layer
        w = ...  # (H·D, N): the output projection, input features in head order
        return split_layer(o, w, groups, "my model, layer ...")  # head_dim = D of o
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

#: The option fields a source may read (the UI shows only those a source names).
OPTION_FIELDS = ("layer", "path", "weights_path")


@dataclass(frozen=True)
class SourceOptions:
    """What a source may need besides the number of groups.

    ``layer``: which captured layer; ``path`` / ``weights_path``: a user's safetensors
    files (weights optional); ``data_dir``: where captured MiniLM data lives; ``tokens``:
    tokens per split for the synthetic sources (calibration and held-out each)."""

    layer: int = 5
    path: str = ""
    weights_path: str = ""
    data_dir: str = "data/generated/minilm"
    tokens: int = 256


@dataclass(frozen=True)
class Layer:
    """One layer's tensors: ``calibration (Tc, G, K)``, ``held_out (Te, G, K)`` and
    ``weights (G, K, N)``, all float32; ``description`` names the data in words;
    ``head_dim`` the head dimension D (``None`` where the data does not tell it: the
    explorer then disables the Hadamard rotations, whose blocks must divide D)."""

    calibration: torch.Tensor
    held_out: torch.Tensor
    weights: torch.Tensor
    description: str
    head_dim: int | None = None


@dataclass(frozen=True)
class Source:
    name: str
    load: Callable[[int, SourceOptions], Layer]
    groups: tuple[int, ...]
    default_groups: int
    options: tuple[str, ...]
    description: str
    layers: int = 1  # how many layers the "layer" option offers (0 … layers-1)


SOURCES: dict[str, Source] = {}


def register_source(name: str, *, groups: tuple[int, ...], default_groups: int, options: tuple[str, ...] = (),
                    description: str = "", layers: int = 1):
    """Decorator: register ``load(groups, options) -> Layer`` as the source ``name``.
    ``groups`` are the group counts the UI offers; ``options`` the :class:`SourceOptions`
    fields the source reads (from :data:`OPTION_FIELDS`); ``layers`` how many layers
    the ``layer`` option ranges over."""
    unknown = set(options) - set(OPTION_FIELDS)
    if unknown:
        raise ValueError(f"unknown source options {sorted(unknown)}; known: {OPTION_FIELDS}")
    if default_groups not in groups:
        raise ValueError(f"default_groups={default_groups} is not one of groups={groups}")

    def decorate(load):
        SOURCES[name] = Source(name, load, tuple(groups), default_groups, tuple(options),
                               description or (load.__doc__ or ""), layers)
        return load

    return decorate


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"unknown data source {name!r}; choose one of {sorted(SOURCES)}")
    return SOURCES[name]


def split_layer(o: torch.Tensor, w_dense: torch.Tensor, groups: int, description: str) -> Layer:
    """A :class:`Layer` from attention outputs ``o (T, H, D)`` (heads of a group
    contiguous) and the dense projection ``w_dense (H·D, N)``: the first 75 % of tokens
    calibrate, the last 25 % are held out (``nvfp4lab calibrate``'s split and errors);
    the head dimension is D."""
    from nvfp4lab.calibrate_command import split_held_out

    if o.shape[1] % groups:
        raise ValueError(f"{o.shape[1]} heads are not divisible into groups={groups}")
    x = o.to(torch.float32).reshape(o.shape[0], groups, -1)
    calibration, held_out = split_held_out(x)
    weights = w_dense.to(torch.float32).reshape(groups, x.shape[-1], -1)
    return Layer(calibration, held_out, weights, description, head_dim=o.shape[-1])


# ----------------------------------------------------------------- built-in sources
def _synthetic(base, heads: int, out_features: int, label: str):
    def load(groups: int, options: SourceOptions) -> Layer:
        from nvfp4lab.data import synthetic

        if heads % groups:
            raise ValueError(f"{heads} heads are not divisible into groups={groups}")
        config = base.with_(groups=groups, heads_per_group=heads // groups, out_features=out_features)
        calibration, held_out = (synthetic.grouped(synthetic.activations(config, options.tokens, seed), config).float()
                                 for seed in (1, 2))
        description = (f"{label}: {heads} heads × {config.head_dim} dims in {groups} groups, K={config.in_features}, "
                       f"N={out_features}, {options.tokens} calibration + {options.tokens} held-out tokens")
        return Layer(calibration, held_out, synthetic.weights(config).float(), description, head_dim=config.head_dim)

    return load


def _register_synthetic() -> None:
    from nvfp4lab.data import synthetic

    # sized down from NVFP4.md §5 (64 heads, N=1024 / the sketch's 128 heads, N=1536) so
    # that each update stays well under a second on a laptop CPU
    register_source("synthetic V4-Flash", groups=(1, 2, 4, 8), default_groups=4,
                    description="DeepSeek-V4-Flash-like heavy-tailed attention outputs, 8 heads, N=256")(
        _synthetic(synthetic.FLASH, heads=8, out_features=256, label="synthetic V4-Flash (sized down)"))
    register_source("synthetic sketch", groups=(1, 2, 4, 8, 16), default_groups=4,
                    description="the original sketch's shape (16 heads per group at G=8), 16 heads, N=384")(
        _synthetic(synthetic.SKETCH, heads=16, out_features=384, label="synthetic sketch shape (sized down)"))


_register_synthetic()


@register_source("MiniLM (captured)", groups=(1, 2, 3, 4, 6, 12), default_groups=4, options=("layer",), layers=6)
def minilm_source(groups: int, options: SourceOptions) -> Layer:
    """Real all-MiniLM-L6-v2 attention outputs captured by ``nvfp4lab capture``."""
    from nvfp4lab.data import minilm

    activations, weights = minilm.load(options.data_dir, options.layer)
    description = f"all-MiniLM-L6-v2 layer {options.layer} ({activations.shape[0]} tokens, 12 heads × 32 dims)"
    return split_layer(activations, weights.reshape(-1, weights.shape[-1]), groups, description)


@register_source("safetensors file", groups=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64), default_groups=4,
                 options=("path", "weights_path"))
def file_source(groups: int, options: SourceOptions) -> Layer:
    """A user's activations (and optionally weights), read by ``nvfp4lab calibrate``'s loader."""
    from nvfp4lab import io
    from nvfp4lab.calibrate_command import split_held_out, stand_in_weights

    if not options.path.strip():
        raise ValueError("type the path of an activations .safetensors file (T, H, D) or (T, G, K)")
    x = io.load_activations(options.path.strip(), groups)
    if options.weights_path.strip():
        w = io.load_weights(options.weights_path.strip(), groups, x.shape[-1])
        weights_label = options.weights_path.strip()
    else:  # the stand-in `nvfp4lab calibrate` uses without weights
        w = stand_in_weights(groups, x.shape[-1])
        weights_label = "random Gaussian stand-in weights"
    calibration, held_out = split_held_out(x)
    stored = _stored_shape(options.path.strip())
    if stored[1] != groups:  # the loader merged heads into groups: the file is (T, H, D)
        head_dim, layout = stored[2], f"from (T, H, D) = {stored}, head dim {stored[2]}"
    else:  # (T, G, K), or as many heads as groups: no way to tell
        head_dim, layout = None, "read as (T, G, K): head dimension unknown (a (T, H, D) file at G < H gives it)"
    return Layer(calibration, held_out, w,
                 f"{options.path.strip()} {tuple(x.shape)} (T, G, K) {layout}, {weights_label}", head_dim=head_dim)


def _stored_shape(path: str) -> tuple[int, ...]:
    """The shape of the one tensor of a safetensors file (read from its header only)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as file:
        return tuple(file.get_slice(next(iter(file.keys()))).get_shape())
