"""The explorer (nvfp4lab.explore, notebooks/00_explore.py): its numbers against the
library computed independently here, its widgets driven without a browser, its errors,
and the notebook executed headless."""

from dataclasses import fields, replace

import pytest
import torch

from nvfp4lab import baselines, io, metrics
from nvfp4lab.data import synthetic
from nvfp4lab.explore import SOURCES, Controls, Explorer, Layer, register_source
from nvfp4lab.explore import compute as explore_compute
from nvfp4lab.explore.compute import ERROR_EDGES, relative_error_histogram
from nvfp4lab.quantize import dequantize_nvfp4, quantize_nvfp4
from nvfp4lab.transforms.hadamard import fold_into_weights, rotate_activations
from nvfp4lab.transforms.recipes import activation_statistics
from nvfp4lab.transforms.smoothing import search_alpha

pytest.importorskip("ipywidgets")
from nvfp4lab.explore.ui import ExplorerUI  # noqa: E402

TOKENS = 64  # per split: small and fast


@pytest.fixture(scope="module")
def explorer():
    return Explorer(tokens=TOKENS)


def independent_inputs(groups: int, spread: float):
    """The synthetic V4-Flash source rebuilt here: 8 heads, N=256, group g scaled by
    10^(-spread·g/(G-1)); calibration tokens from seed 1, held-out from seed 2."""
    config = synthetic.FLASH.with_(groups=groups, heads_per_group=8 // groups, out_features=256)
    gain = torch.tensor([10.0 ** (-spread * g / max(groups - 1, 1)) for g in range(groups)], dtype=torch.float64)

    def tokens(seed):
        x = synthetic.activations(config, TOKENS, seed).float().reshape(TOKENS, groups, -1)
        return (x.double() * gain[None, :, None]).float()

    return tokens(1), tokens(2), synthetic.weights(config).float()


def independent_global_scale(x_cal, x, c: Controls) -> torch.Tensor:
    """max calibration (running amax / 2688) or dynamic amax / 2688, shared or per
    group, times 2^octaves (and 2688/1536 for four-over-six)."""
    source = x_cal if c.scale_source == "static" else x
    amax = source.abs().amax(dim=(0, 2)).double()
    if c.sharing == "shared":
        amax = amax.max().expand(x.shape[1])
    divisor = 1536.0 if c.block_rule == "four_over_six" else 2688.0
    return (amax / divisor * 2.0**c.octaves).to(torch.float32)


COMBINATIONS = [
    Controls(),
    Controls(octaves=-2.5, sharing="shared"),
    Controls(octaves=6.0, scale_source="dynamic", block_rule="four_over_six"),
    Controls(groups=8, spread_decades=3.0, sharing="shared", scale_source="dynamic"),
    Controls(groups=2, spread_decades=1.5, octaves=-1.0, block_rule="four_over_six"),
]


@pytest.mark.parametrize("controls", COMBINATIONS, ids=lambda c: f"G{c.groups}-{c.sharing}-{c.scale_source}-"
                         f"{c.block_rule}-oct{c.octaves:g}-spread{c.spread_decades:g}")
def test_the_numbers_shown_equal_the_library_on_independently_built_tensors(explorer, controls):
    view = explorer.compute(controls)
    x_cal, x, w = independent_inputs(controls.groups, controls.spread_decades)
    gs = independent_global_scale(x_cal, x, controls)
    torch.testing.assert_close(view.global_scale, gs, rtol=2e-7, atol=0)

    q = quantize_nvfp4(x, view.global_scale, block_rule=controls.block_rule)
    x_hat = dequantize_nvfp4(q)
    w_nk = w.transpose(1, 2).contiguous()
    w_hat = dequantize_nvfp4(quantize_nvfp4(w_nk, w_nk.abs().amax(dim=(1, 2)) / 2688.0, group_dim=0))
    z = torch.einsum("tgk,gkn->tgn", x.double(), w.double())
    z_hat = torch.einsum("tgk,gnk->tgn", x_hat.double(), w_hat.double()).to(torch.bfloat16).double()

    torch.testing.assert_close(view.sqnr_x_db, metrics.sqnr_db_per_group(x, x_hat), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(view.sqnr_z_db, metrics.sqnr_db_per_group(z, z_hat), rtol=1e-6, atol=1e-6)
    assert view.sqnr_z_total_db == pytest.approx(metrics.sqnr_db(z, z_hat), abs=1e-6)
    z_bf16 = torch.einsum("tgk,gkn->tgn", x.bfloat16().double(), w.bfloat16().double()).to(torch.bfloat16).double()
    torch.testing.assert_close(view.baseline_z_db["bf16"], metrics.sqnr_db_per_group(z, z_bf16), rtol=1e-6, atol=1e-6)
    z_fp8 = baselines.fp8_output(x, w)
    torch.testing.assert_close(view.baseline_z_db["fp8"], metrics.sqnr_db_per_group(z, z_fp8), rtol=1e-6, atol=1e-6)

    torch.testing.assert_close(view.clipped_fraction, metrics.clipped_fraction_per_group(x, q))
    assert view.stats == metrics.quantization_stats(x, q)
    scale_bytes = q.scales.view(torch.uint8).flatten()
    assert view.scale_byte_counts.tolist() == [int((scale_bytes == b).sum()) for b in range(256)]
    assert view.zero_scale_share == float((scale_bytes == 0).double().mean())
    assert view.subnormal_scale_share == float(((scale_bytes > 0) & (scale_bytes < 8)).double().mean())
    amax = x.abs().amax(dim=(0, 2)).double()
    torch.testing.assert_close(view.headroom_octaves, torch.log2(gs.double() * 2688 / amax), rtol=1e-6, atol=1e-6)
    assert f"z SQNR {metrics.sqnr_db(z, z_hat):.1f} dB" in view.summary


def test_moving_the_multiplier_below_zero_octaves_raises_the_clipped_fraction(explorer):
    clipped = [explorer.compute(Controls(octaves=o)).clipped_fraction_total for o in (2.0, -1.0, -2.0, -3.0, -4.0)]
    assert clipped[0] == 0.0
    assert all(later > earlier for earlier, later in zip(clipped[1:], clipped[2:])), clipped
    assert clipped[1] > clipped[0]


def test_per_group_scales_beat_a_shared_one_when_the_group_spread_is_large(explorer):
    def worst(spread, sharing):
        return float(explorer.compute(Controls(spread_decades=spread, sharing=sharing)).sqnr_z_db.min())

    assert abs(worst(0.0, "per_group") - worst(0.0, "shared")) < 1.0  # no spread: no difference
    assert worst(6.0, "per_group") > worst(6.0, "shared") + 10.0
    shared = explorer.compute(Controls(spread_decades=6.0, sharing="shared"))
    assert shared.zero_scale_share > 0.1  # the quiet groups' blocks underflow to zero scales


def test_relative_error_histogram_puts_each_element_in_its_bin():
    x = torch.tensor([1.0, 1.0, 1.0, 2.0, 0.0, -4.0, 1.0, 1.0]).reshape(2, 2, 2)  # (T, G, K)
    x_hat = torch.tensor([1.0, 1.5, 0.0, 2.0, 0.0, -4.3, 1.0, 1.0015]).reshape(2, 2, 2)  # errors off bin edges
    shares = relative_error_histogram(x, x_hat)
    assert shares.shape == (2, ERROR_EDGES.numel() - 1)
    def bin_of(r):
        return int(torch.bucketize(torch.log10(torch.tensor(r, dtype=torch.float64)), ERROR_EDGES)) - 1

    # group 0 holds x[:, 0] = (1, 1 | 0, -4) -> errors 0, 0.5 | (zero left out), 0.075
    expected0 = torch.zeros_like(shares[0])
    expected0[0] += 1 / 3
    expected0[bin_of(0.5)] += 1 / 3
    expected0[bin_of(0.075)] += 1 / 3
    torch.testing.assert_close(shares[0], expected0)
    # group 1 holds (1, 2 | 1, 1) -> errors 1 (flushed to zero, last bin), 0, 0, 0.0015
    expected1 = torch.zeros_like(shares[1])
    expected1[-1] += 0.25
    expected1[0] += 0.5
    expected1[bin_of(0.0015)] += 0.25
    torch.testing.assert_close(shares[1], expected1)


@pytest.mark.parametrize(("change", "message"), [
    (dict(octaves=12.5), "octaves must be in [-4, 12]"),
    (dict(spread_decades=-1.0), "spread_decades must be in [0, 8]"),
    (dict(groups=3), "groups=3 is not offered"),
    (dict(recipe="magic"), "recipe must be one of"),
    (dict(source="nowhere"), "unknown data source 'nowhere'"),
    (dict(block_rule="max4"), "block_rule must be one of"),
    (dict(activation_transform="rotate"), "activation_transform must be one of .* got 'rotate'"),
    (dict(weight_recipe="awq"), "weight_recipe must be one of .* got 'awq'"),
    (dict(activation_transform="rtn"), "activation_transform must be one of"),  # a weight recipe, not a transform
])
def test_bad_controls_are_named_in_the_error(explorer, change, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        explorer.compute(replace(Controls(), **change))


def test_the_widgets_drive_the_callbacks_without_a_browser(explorer):
    ui = ExplorerUI(explorer)
    assert ui.image.value[:8] == b"\x89PNG\r\n\x1a\n" and ui.last_view.summary in ui.status.value
    assert set(ui.controls) == {f.name for f in fields(Controls)}  # one widget per control
    assert list(ui.controls["activation_transform"].options) == ["none", "hadamard 16", "hadamard head",
                                                                 "hadamard 128", "smoothquant"]
    assert ui.controls["weight_recipe"].value == "rtn" and "gptq" in ui.controls["weight_recipe"].options
    settings = dict(octaves=-2.0, sharing="shared", scale_source="dynamic", block_rule="four_over_six",
                    spread_decades=2.0, groups=8, recipe="headroom x4", activation_transform="hadamard 16",
                    weight_recipe="four-over-six weights")
    for name, value in settings.items():
        ui.controls[name].value = value
        assert ui.last_error is None and getattr(ui.last_view.controls, name) == value
    assert ui.last_view.controls == replace(Controls(), **settings)
    assert ui.controls["recipe"].disabled  # dynamic scales use no recipe
    direct = explorer.compute(ui.current())
    torch.testing.assert_close(ui.last_view.sqnr_z_db, direct.sqnr_z_db)
    assert "transform hadamard 16 + four-over-six weights" in ui.status.value and ui.transform_note.value == ""

    ui.controls["source"].value = "synthetic sketch"
    assert ui.last_view.controls.source == "synthetic sketch" and ui.last_view.controls.groups == 8
    ui.controls["source"].value = "safetensors file"
    assert ui.controls["path"].layout.display == "" and ui.controls["layer"].layout.display == "none"
    ui.controls["source"].value = "synthetic V4-Flash"  # hides the path boxes, and nothing else
    hidden = {name for name, widget in ui.controls.items() if widget.layout.display == "none"}
    assert hidden == {"layer", "path", "weights_path"}
    ui.controls["source"].value = "safetensors file"
    assert "type the path" in ui.last_error and ui.image.value == b"" and "color:#b00" in ui.status.value


def test_a_bad_safetensors_path_shows_the_loaders_clear_error(explorer, tmp_path):
    ui = ExplorerUI(explorer, Controls(source="safetensors file"))
    missing = tmp_path / "missing.safetensors"
    ui.controls["path"].value = str(missing)
    with pytest.raises(ValueError) as loader_error:
        io.load_activations(missing, 4)
    assert ui.last_error == f"ValueError: {loader_error.value}"
    assert "activations file not found" in ui.last_error and "Traceback" not in ui.status.value

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    ui.controls["path"].value = str(corrupt)
    assert "is not a readable safetensors file" in ui.last_error


def test_a_users_safetensors_file_is_explored_with_its_weights(explorer, tmp_path):
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(3)
    o = torch.randn(128, 8, 32, generator=generator).to(torch.bfloat16)  # (T, H, D)
    w = torch.randn(4, 64, 128, generator=generator)  # (G, K, N)
    save_file({"o": o}, str(tmp_path / "a.safetensors"))
    save_file({"w": w}, str(tmp_path / "w.safetensors"))
    save_file({"w": torch.randn(4, 32, 128)}, str(tmp_path / "bad_w.safetensors"))
    ui = ExplorerUI(explorer, Controls(source="safetensors file", path=str(tmp_path / "a.safetensors")))
    assert ui.last_error is None and "random Gaussian stand-in" in ui.last_view.description
    ui.controls["weights_path"].value = str(tmp_path / "w.safetensors")
    view = ui.last_view
    x = o.float().reshape(128, 4, 64)[96:]  # the last 25 % of tokens are held out
    z = torch.einsum("tgk,gkn->tgn", x.double(), w.double())
    assert "fp8" not in view.baseline_z_db  # K = 64 is not a multiple of 128
    z_bf16 = torch.einsum("tgk,gkn->tgn", x.double(), w.bfloat16().double()).to(torch.bfloat16).double()
    torch.testing.assert_close(view.baseline_z_db["bf16"], metrics.sqnr_db_per_group(z, z_bf16))
    ui.controls["weights_path"].value = str(tmp_path / "bad_w.safetensors")
    assert "must be (G=4, K=64, N) or (G·N, K=64)" in ui.last_error
    ui.controls["groups"].value = 3
    assert "not divisible by groups=3" in ui.last_error


def test_a_new_source_is_one_registered_function(explorer):
    @register_source("test source", groups=(1, 2), default_groups=2)
    def constant(groups, options):
        x = torch.linspace(-1, 1, 64 * 128).reshape(64, groups, -1)
        return Layer(x[:32], x[32:], torch.eye(128 // groups).expand(groups, -1, -1).contiguous(), "linspace")

    try:
        ui = ExplorerUI(explorer)
        assert "test source" in ui.controls["source"].options
        ui.controls["source"].value = "test source"
        assert ui.last_error is None and ui.last_view.description == "linspace" and ui.last_view.groups == 2
    finally:
        SOURCES.pop("test source")


def test_minilm_layers_and_group_counts(captured_minilm):
    explorer = Explorer(captured_minilm)
    view = explorer.compute(Controls(source="MiniLM (captured)", layer=2, groups=3))  # K = 128
    assert "layer 2" in view.description and view.groups == 3 and "fp8" in view.baseline_z_db
    assert view.head_dim == 32 and list(view.unavailable) == ["hadamard 128"]  # 128 divides K, not D = 32
    view = explorer.compute(Controls(source="MiniLM (captured)", layer=2, groups=3,
                                     activation_transform="hadamard head"))
    assert "hadamard head (D=32)" in view.summary
    view = explorer.compute(Controls(source="MiniLM (captured)", layer=2, groups=4))  # K = 96: no FP8 recipe
    assert "fp8" not in view.baseline_z_db and view.baseline_z_db["bf16"].shape == (4,)
    with pytest.raises(ValueError, match="layer must be in 0..5"):
        explorer.compute(Controls(source="MiniLM (captured)", layer=6, groups=4))


def test_time_controls_times_each_control_and_restores_it(explorer):
    from nvfp4lab.explore.timing import time_controls

    ui = ExplorerUI(explorer)
    changes = {"octaves": ([1.0], [0.5, -0.5]), "sharing": ([], ["shared", "per_group"])}
    times = time_controls(ui, repeats=1, changes=changes)
    assert set(times) == {"octaves", "sharing"}
    assert times["octaves"]["cold"][0] > 0 and times["sharing"]["warm"][1] > 0
    assert ui.current() == Controls()


def test_the_bars_of_a_view_take_the_colour_of_its_scale_mode(explorer):
    from matplotlib.colors import to_hex

    from nvfp4lab.explore.views import draw
    from nvfp4lab.style import scale_mode_colour

    for sharing, source in (("per_group", "static"), ("shared", "dynamic")):
        figure = draw(explorer.compute(Controls(sharing=sharing, scale_source=source)))
        sqnr_x, sqnr_z, headroom = figure.axes[:3]
        for ax in (sqnr_x, sqnr_z, headroom):
            assert {to_hex(bar.get_facecolor()) for bar in ax.patches} == {scale_mode_colour(f"{sharing} {source}")}


@pytest.mark.slow  # notebook 00 in a kernel, as ./lab study runs it; the explorer itself is tested in-process above
def test_the_notebook_executes_headless_and_saves_the_default_figure(tmp_path, monkeypatch):
    pytest.importorskip("nbclient")
    from nvfp4lab.study import run

    monkeypatch.setenv("NVFP4LAB_FIGURES", str(tmp_path / "figures"))
    path = next(p for p in run.notebook_paths() if p.name.startswith("00_"))
    executed = run.execute_notebook(path, tmp_path, fast=True, data_dir=tmp_path / "no-data")
    text = executed.read_text()
    assert '"image/png"' in text and "z SQNR" in text and "shared static" in text
    assert (tmp_path / "figures" / "00_explore_default.png").stat().st_size > 10_000
    assert (tmp_path / "00_explore.html").is_file()


@pytest.mark.filterwarnings("error::RuntimeWarning")  # exact (infinite-SQNR) groups draw without NaN maths
def test_the_layer_slider_follows_the_sources_layer_count(explorer):
    @register_source("deep test source", groups=(1,), default_groups=1, options=("layer",), layers=30)
    def deep(groups, options):
        x = torch.full((64, 1, 32), float(options.layer + 1))
        return Layer(x[:32], x[32:], torch.ones(1, 32, 16), f"layer {options.layer}")

    try:
        ui = ExplorerUI(explorer)
        ui.controls["source"].value = "deep test source"
        assert ui.controls["layer"].max == 29 and ui.controls["layer"].layout.display == ""
        ui.controls["layer"].value = 20
        assert ui.last_error is None and ui.last_view.description == "layer 20"
        assert torch.isinf(ui.last_view.sqnr_x_db).all()  # constant blocks quantize exactly: drawn as "exact"
        ui.controls["source"].value = "MiniLM (captured)"
        assert ui.controls["layer"].max == 5 and ui.controls["layer"].value == 5
    finally:
        SOURCES.pop("deep test source")


# ------------------------------------------------------------------- the transforms
def test_the_default_controls_are_the_plain_layer_bit_for_bit(explorer):
    """No transform, RTN weights: the view is the one the explorer showed before the
    transforms came (x quantized as is, z̃ with baselines.nvfp4_weights(W)), exactly."""
    view = explorer.compute(Controls())
    assert view.controls.activation_transform == "none" and view.controls.weight_recipe == "rtn"
    x_cal, x, w = independent_inputs(4, 0.0)
    torch.testing.assert_close(view.global_scale, independent_global_scale(x_cal, x, Controls()), rtol=2e-7, atol=0)
    q = quantize_nvfp4(x, view.global_scale)
    x_hat = dequantize_nvfp4(q)
    z = torch.einsum("tgk,gkn->tgn", x.double(), w.double())
    z_hat = baselines.grouped_matmul(x_hat, baselines.nvfp4_weights(w))
    assert torch.equal(view.sqnr_x_db, metrics.sqnr_db_per_group(x, x_hat))
    assert torch.equal(view.sqnr_z_db, metrics.sqnr_db_per_group(z, z_hat))
    assert view.sqnr_z_total_db == metrics.sqnr_db(z, z_hat)
    assert view.stats == metrics.quantization_stats(x, q)
    assert view.head_dim == 512 and view.alpha is None and view.unavailable == {}
    assert view.activation_stats == view.plain_activation_stats == activation_statistics(x)
    assert "transform none" in view.summary and "x: kurtosis" in view.summary


@pytest.mark.parametrize("controls", [Controls(activation_transform="hadamard head"),
                                      Controls(activation_transform="hadamard head", groups=2, sharing="shared",
                                               scale_source="dynamic", octaves=-1.0, block_rule="four_over_six")],
                         ids=["default", "G2-shared-dynamic-four_over_six"])
def test_a_hadamard_head_view_equals_an_independent_recomputation(explorer, controls):
    """x' = x·(I ⊗ Ĥ_512) per head, scales calibrated on the rotated calibration tokens,
    ẑ = NVFP4(x')·NVFP4(Ĥᵀ W) against the untransformed z = x·W."""
    view = explorer.compute(controls)
    x_cal, x, w = independent_inputs(controls.groups, 0.0)
    x_cal_r, x_r = rotate_activations(x_cal, 512), rotate_activations(x, 512)
    gs = independent_global_scale(x_cal_r, x_r, controls)
    torch.testing.assert_close(view.global_scale, gs, rtol=2e-7, atol=0)
    q = quantize_nvfp4(x_r, view.global_scale, block_rule=controls.block_rule)
    x_hat = dequantize_nvfp4(q)
    w_hat = baselines.nvfp4_weights(fold_into_weights(w, 512))
    z = torch.einsum("tgk,gkn->tgn", x.double(), w.double())  # the reference is the plain layer
    z_hat = torch.einsum("tgk,gkn->tgn", x_hat.double(), w_hat).to(torch.bfloat16).double()
    torch.testing.assert_close(view.sqnr_z_db, metrics.sqnr_db_per_group(z, z_hat), rtol=1e-6, atol=1e-6)
    assert view.sqnr_z_total_db == pytest.approx(metrics.sqnr_db(z, z_hat), abs=1e-6)
    torch.testing.assert_close(view.sqnr_x_db, metrics.sqnr_db_per_group(x_r, x_hat), rtol=1e-9, atol=1e-9)
    assert view.stats == metrics.quantization_stats(x_r, q)
    plain = explorer.compute(replace(controls, activation_transform="none"))
    assert not torch.equal(view.sqnr_x_db, plain.sqnr_x_db)  # the rotation did run
    statistics = activation_statistics(x_r)
    assert view.activation_stats == pytest.approx(statistics)
    assert view.activation_stats["kurtosis"] < view.plain_activation_stats["kurtosis"]  # spikes spread out
    assert "hadamard head (D=512)" in view.summary and f"x′: kurtosis {statistics['kurtosis']:.0f}" in view.summary


def test_smoothquant_divides_x_by_the_searched_scales(explorer):
    view = explorer.compute(Controls(activation_transform="smoothquant", scale_source="dynamic"))
    x_cal, x, w = independent_inputs(4, 0.0)
    search = search_alpha(x_cal, w)
    assert view.alpha == search.alpha and f"smoothquant (α={search.alpha:g})" in view.summary
    x_s = x / search.scales
    q = quantize_nvfp4(x_s, view.global_scale)
    torch.testing.assert_close(view.global_scale, x_s.abs().amax(dim=(0, 2)) / 2688.0, rtol=2e-7, atol=0)
    torch.testing.assert_close(view.sqnr_x_db, metrics.sqnr_db_per_group(x_s, dequantize_nvfp4(q)), rtol=1e-9,
                               atol=1e-9)


def test_the_fitted_transform_is_cached_across_scale_controls(monkeypatch):
    calls = []

    def counting(transforms, *args, **kwargs):
        calls.append([t.label for t in transforms])
        return fit_transforms(transforms, *args, **kwargs)

    fit_transforms = explore_compute.fit_transforms
    monkeypatch.setattr(explore_compute, "fit_transforms", counting)
    explorer = Explorer(tokens=TOKENS)
    state = Controls(activation_transform="smoothquant", weight_recipe="gptq")
    first = explorer.compute(state)
    for change in (dict(octaves=3.0), dict(octaves=-1.5), dict(sharing="shared"), dict(scale_source="dynamic"),
                   dict(block_rule="four_over_six"), dict(recipe="headroom x4")):
        state = replace(state, **change)
        explorer.compute(state)
    assert calls == [["smoothquant + gptq"]]  # one α search and one GPTQ for all of those
    again = explorer.compute(replace(state, **{f.name: getattr(Controls(activation_transform="smoothquant",
                                                                        weight_recipe="gptq"), f.name)
                                               for f in fields(Controls)}))
    torch.testing.assert_close(again.sqnr_z_db, first.sqnr_z_db, rtol=0, atol=0)
    explorer.compute(replace(state, weight_recipe="rtn"))
    explorer.compute(replace(state, spread_decades=1.0))  # new calibration tokens: a new fit
    assert calls == [["smoothquant + gptq"], ["smoothquant"], ["smoothquant + gptq"]]


def _save_activations(path, shape):
    from safetensors.torch import save_file

    save_file({"o": torch.randn(*shape, generator=torch.Generator().manual_seed(5))}, str(path))
    return str(path)


def test_an_unavailable_transform_is_reported_not_crashed(explorer, tmp_path):
    tgk = _save_activations(tmp_path / "tgk.safetensors", (128, 4, 64))  # (T, G, K) at G=4: D unknown
    with pytest.raises(ValueError, match="activation_transform 'hadamard head' is unavailable for this data: "
                                         "hadamard head needs the head dimension"):
        explorer.compute(Controls(source="safetensors file", path=tgk, activation_transform="hadamard head"))
    ui = ExplorerUI(explorer, Controls(source="safetensors file", path=tgk))
    assert ui.last_error is None and ui.last_view.head_dim is None
    assert set(ui.last_view.unavailable) == {"hadamard 16", "hadamard head", "hadamard 128"}
    assert "unavailable for this data: hadamard 16, hadamard head, hadamard 128" in ui.status.value
    labels = [label for label, _ in ui.controls["activation_transform"].options]
    assert labels == ["none", "hadamard 16 (unavailable)", "hadamard head (unavailable)",
                      "hadamard 128 (unavailable)", "smoothquant"]
    ui.controls["activation_transform"].value = "hadamard 16"
    assert ui.last_view is None and "is unavailable for this data" in ui.last_error
    assert "color:#b00" in ui.status.value and "Traceback" not in ui.status.value and ui.image.value == b""
    assert ui.controls["activation_transform"].value == "hadamard 16"  # relabelling kept the choice
    assert "needs the head dimension" in ui.transform_note.value

    ui.controls["path"].value = _save_activations(tmp_path / "thd.safetensors", (128, 8, 32))  # (T, H, D): D = 32
    assert ui.last_error is None and ui.last_view.head_dim == 32 and "hadamard 16" in ui.last_view.summary
    ui.controls["activation_transform"].value = "hadamard 128"  # K = 64 at G=4, D = 32
    assert "head dimension 32" in ui.last_error and "Traceback" not in ui.status.value
    ui.controls["activation_transform"].value = "hadamard head"
    assert ui.last_error is None and "hadamard head (D=32)" in ui.last_view.summary
    assert [label for label, _ in ui.controls["activation_transform"].options][3] == "hadamard 128 (unavailable)"
    ui.controls["groups"].value = 8  # as many heads as groups: read as (T, G, K), D unknown again
    assert "needs the head dimension" in ui.last_error
    ui.controls["path"].value = str(tmp_path / "missing.safetensors")  # no data: no transform marked
    assert "not found" in ui.last_error and ui.transform_note.value == ""
    assert list(ui.controls["activation_transform"].options)[2] == "hadamard head"


def test_a_transformed_view_says_so_in_its_figure(explorer):
    from nvfp4lab.explore.views import draw

    figure = draw(explorer.compute(Controls(activation_transform="hadamard 128", weight_recipe="16x16 weights")))
    assert "x′" in figure.axes[0].get_title() and "x′" in figure.axes[3].get_title()
    assert "transform hadamard 128 + 16x16 weights" in figure._suptitle.get_text()
    assert "x′: kurtosis" in figure._suptitle.get_text()
