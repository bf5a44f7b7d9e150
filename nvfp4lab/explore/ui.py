"""The explorer's ipywidgets: one widget per control, wired to redraw on change.

``ExplorerUI(explorer).widget`` is the box to display. Every change of a control calls
:meth:`ExplorerUI.update`, which reads the widgets into a
:class:`~nvfp4lab.explore.compute.Controls`, computes the
:class:`~nvfp4lab.explore.compute.View`, draws it (``nvfp4lab.explore.views``) into an
image widget and writes the one-line summary and the update time. Errors (a bad file, a
group count the data cannot take, an activation transform the data cannot take) appear in
the status line, not as tracebacks. The activation transforms the current data cannot
take (a rotation whose block does not divide the head dimension, or any rotation when
the head dimension is unknown) are marked "(unavailable)" in their dropdown, with the
reasons in a note line. The widgets work without a browser, so tests drive them by
setting ``.value``.
"""

from __future__ import annotations

import html
import time
from dataclasses import fields

import ipywidgets as widgets

from nvfp4lab.explore.compute import OCTAVES, RECIPES, SPREAD_DECADES, Controls, Explorer, TransformUnavailable, View
from nvfp4lab.explore.sources import OPTION_FIELDS, SOURCES, get_source
from nvfp4lab.quantize import BLOCK_RULES
from nvfp4lab.scale_modes import SHARINGS, SOURCES as SCALE_SOURCES
from nvfp4lab.transforms.recipes import ACTIVATION_TRANSFORMS, WEIGHT_RECIPES

#: what the UI catches and shows: the library's and the loaders' clear errors
SHOWN_ERRORS = (ValueError, TypeError, RuntimeError, OSError, KeyError)


def _control_widgets(controls: Controls) -> dict[str, widgets.Widget]:
    style = {"description_width": "11em"}

    def wide():  # one Layout per widget: hiding a widget sets its layout's display
        return widgets.Layout(width="40em")

    source = get_source(controls.source)
    return {
        "source": widgets.Dropdown(options=list(SOURCES), value=controls.source, description="data", style=style),
        "layer": widgets.IntSlider(value=controls.layer, min=0, max=max(source.layers - 1, controls.layer),
                                   description="layer", style=style, continuous_update=False),
        "path": widgets.Text(value=controls.path, description="activations file", style=style, layout=wide(),
                             placeholder="path/to/activations.safetensors (T, H, D) or (T, G, K)",
                             continuous_update=False),
        "weights_path": widgets.Text(value=controls.weights_path, description="weights file", style=style,
                                     layout=wide(), placeholder="optional: (G, K, N) or (G·N, K)",
                                     continuous_update=False),
        "groups": widgets.Dropdown(options=list(source.groups), value=controls.groups, description="groups G",
                                   style=style),
        "octaves": widgets.FloatSlider(value=controls.octaves, min=OCTAVES[0], max=OCTAVES[1], step=0.25,
                                       description="scale ×2^octaves", style=style, continuous_update=False,
                                       layout=wide()),
        "sharing": widgets.ToggleButtons(options=list(SHARINGS), value=controls.sharing, description="sharing",
                                         style=style),
        "scale_source": widgets.ToggleButtons(options=list(SCALE_SOURCES), value=controls.scale_source,
                                              description="source", style=style),
        "recipe": widgets.Dropdown(options=list(RECIPES), value=controls.recipe, description="calibration",
                                   style=style),
        "block_rule": widgets.ToggleButtons(options=list(BLOCK_RULES), value=controls.block_rule,
                                            description="block rule", style=style),
        "spread_decades": widgets.FloatSlider(value=controls.spread_decades, min=SPREAD_DECADES[0],
                                              max=SPREAD_DECADES[1], step=0.5, description="group spread (dec)",
                                              style=style, continuous_update=False, layout=wide()),
        "activation_transform": widgets.Dropdown(options=list(ACTIVATION_TRANSFORMS),
                                                 value=controls.activation_transform,
                                                 description="activation transform", style=style),
        "weight_recipe": widgets.Dropdown(options=list(WEIGHT_RECIPES), value=controls.weight_recipe,
                                          description="weights", style=style),
    }


class ExplorerUI:
    """The live explorer. ``controls`` gives the starting values (default state)."""

    def __init__(self, explorer: Explorer, controls: Controls = Controls(), dpi: int = 80):
        self.explorer = explorer
        self.dpi = dpi
        self.controls = _control_widgets(controls)
        self.status = widgets.HTML()
        self.progress = widgets.HTML()
        self.transform_note = widgets.HTML()  # the activation transforms this data cannot take, and why
        self.unavailable: dict[str, str] = {}
        self.image = widgets.Image(format="png")
        self.last_view: View | None = None
        self.last_error: str | None = None
        self.last_seconds: float | None = None
        self._quiet = False
        for widget in self.controls.values():
            widget.observe(self._changed, names="value")
        c = self.controls
        self.widget = widgets.VBox([
            widgets.HBox([widgets.VBox([c["source"], c["layer"], c["path"], c["weights_path"], c["groups"]]),
                          widgets.VBox([c["sharing"], c["scale_source"], c["recipe"], c["block_rule"],
                                        c["activation_transform"], c["weight_recipe"]])]),
            c["octaves"], c["spread_decades"], self.transform_note, self.progress, self.status, self.image,
        ])
        self._show_source_options()
        self.update()

    def current(self) -> Controls:
        """The widgets' values as :class:`Controls`."""
        return Controls(**{f.name: self.controls[f.name].value for f in fields(Controls)})

    def _show_source_options(self) -> None:
        source = get_source(self.controls["source"].value)
        for name in OPTION_FIELDS:
            self.controls[name].layout.display = "" if name in source.options else "none"
        self.controls["recipe"].disabled = self.controls["scale_source"].value == "dynamic"

    def _changed(self, change) -> None:
        if self._quiet:
            return
        if change["owner"] is self.controls["source"]:
            source = get_source(change["new"])
            self._quiet = True  # replacing the options fires a change of its own
            try:
                groups = self.controls["groups"]
                previous = groups.value
                groups.options = list(source.groups)
                groups.value = previous if previous in source.groups else source.default_groups
                if "layer" in source.options:  # (a hidden slider keeps its range)
                    self.controls["layer"].max = source.layers - 1  # clamps the value too
            finally:
                self._quiet = False
        self._show_source_options()
        self.update()

    def _show_unavailable(self, reasons: dict[str, str]) -> None:
        """Mark the activation transforms the current data cannot take (``reasons``: name ->
        why; empty when all can, or when the data itself could not load)."""
        self.unavailable = dict(reasons)
        dropdown = self.controls["activation_transform"]
        options = ([(f"{a} (unavailable)" if a in reasons else a, a) for a in ACTIVATION_TRANSFORMS] if reasons
                   else list(ACTIVATION_TRANSFORMS))
        if list(dropdown.options) != options:
            self._quiet = True  # replacing the options resets the value (and fires a change)
            try:
                value = dropdown.value
                dropdown.options = options
                dropdown.value = value
            finally:
                self._quiet = False
        self.transform_note.value = "<br>".join(
            f"<small><b>{html.escape(a)}</b> unavailable for this data: {html.escape(why)}</small>"
            for a, why in reasons.items())

    def _progress(self, message: str) -> None:
        self.progress.value = f"<i>⏳ {html.escape(message)} …</i>"

    def update(self) -> View | None:
        """Recompute and redraw for the widgets' current values; returns the view, or None
        (and the error in the status line) when the controls or the data are invalid."""
        from nvfp4lab.explore.views import draw, png_bytes

        start = time.perf_counter()
        try:
            view = self.explorer.compute(self.current(), progress=self._progress)
        except SHOWN_ERRORS as error:
            self.last_view, self.last_error = None, f"{type(error).__name__}: {error}"
            self._show_unavailable(error.reasons if isinstance(error, TransformUnavailable) else {})
            self.progress.value = ""
            self.status.value = f"<b style='color:#b00'>{html.escape(self.last_error)}</b>"
            self.image.value = b""
            return None
        self._show_unavailable(view.unavailable)
        self._progress("drawing")
        self.image.value = png_bytes(draw(view), self.dpi)
        self.last_view, self.last_error = view, None
        self.last_seconds = time.perf_counter() - start
        self.progress.value = ""
        self.status.value = f"{html.escape(view.summary)} <i>(updated in {self.last_seconds:.2f} s)</i>"
        return view
