"""One colour per global activation-scale mode (``nvfp4lab.style``), the same in every figure."""

import pytest

from nvfp4lab.scale_modes import SHARINGS, SOURCES, ScaleMode
from nvfp4lab.style import COLORBLIND, SCALE_MODE_COLOURS, scale_mode_colour, scale_mode_palette


def test_every_scale_mode_has_its_own_colour_and_baselines_are_grey():
    names = [ScaleMode(sharing, source).name for source in SOURCES for sharing in SHARINGS]
    colours = [scale_mode_colour(name) for name in names]
    assert len(set(colours)) == 4 and scale_mode_colour("-") not in colours
    assert COLORBLIND[3] not in colours  # red stays free for clipping and the FP8 lines
    assert scale_mode_colour("per-group static") == scale_mode_colour(" Per_group  static ") == colours[1]


def test_the_colours_are_seaborns_colorblind_palette():
    sns = pytest.importorskip("seaborn")
    assert list(COLORBLIND) == sns.color_palette("colorblind").as_hex()


def test_a_palette_for_the_modes_a_frame_holds_and_unknown_modes_are_refused():
    assert scale_mode_palette(["shared dynamic", "-", "shared dynamic"]) == {
        "shared dynamic": SCALE_MODE_COLOURS["shared dynamic"], "-": SCALE_MODE_COLOURS["-"]}
    assert scale_mode_palette() == SCALE_MODE_COLOURS and scale_mode_palette() is not SCALE_MODE_COLOURS
    with pytest.raises(ValueError, match="unknown scale mode 'per_token static'"):
        scale_mode_colour("per_token static")
    with pytest.raises(TypeError, match="a scale mode is a string"):
        scale_mode_colour(None)
