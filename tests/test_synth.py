"""The rain synthesiser: every style adds rain only, in the look it is named for."""
import numpy as np
import pytest

from pipeline.model.synth import STYLES, VIDEO, add_rain, streak_layer


def flat(h=128, w=128, level=0.3):
    return np.full((h, w, 3), level, np.float32)


@pytest.mark.parametrize("name", sorted(STYLES))
def test_every_style_brightens_some_pixels_and_keeps_the_range(name):
    rainy = add_rain(flat(), np.random.default_rng(0), STYLES[name])
    assert rainy.dtype == np.float32 and rainy.min() >= 0 and rainy.max() <= 1
    lit = ((rainy - 0.3).mean(2) > 3 / 255).mean()
    if STYLES[name].haze[1]:  # the veil lifts every pixel
        assert lit > 0.9
    else:  # streaks add light to some pixels, never take it
        assert (rainy >= 0.3 - 1e-6).all() and 0.005 < lit < 0.9


def test_a_style_draws_the_same_rain_from_the_same_seed():
    a = add_rain(flat(), np.random.default_rng(7), VIDEO)
    b = add_rain(flat(), np.random.default_rng(7), VIDEO)
    assert np.array_equal(a, b)


def test_video_rain_is_near_vertical():
    """NTURain's streaks fall straight down: the rain layer changes across x, hardly along y."""
    for seed in range(4):
        layer = streak_layer(192, 192, np.random.default_rng(seed), VIDEO, angle=0.0)
        along_y = np.abs(np.diff(layer, axis=0)).mean()
        across_x = np.abs(np.diff(layer, axis=1)).mean()
        assert across_x > 4 * along_y


def test_video_rain_mixes_faint_and_bright_drops_in_one_frame():
    """Depth: in one frame some streaks are several times brighter than others."""
    rain = (add_rain(flat(256, 256, 0.0), np.random.default_rng(1), VIDEO)).mean(2)
    lit = rain[rain > 2 / 255]
    assert np.percentile(lit, 95) > 3 * np.percentile(lit, 20)
