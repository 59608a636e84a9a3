"""The no-reference rain measure: streaks score, still texture does not, more rain scores more."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from pipeline.images import write_rgb
from pipeline.model.rainmeter import measure
from pipeline.model.synth import LIGHT, MEDIUM, add_rain, frozen


def scene(h=96, w=128) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([60 + x * 0.5, 80 + y * 0.3, np.full_like(x, 70.0)], -1)
    img[:, ::12] += 90  # a fence: thin bright vertical bars that never move
    return np.clip(img, 0, 255).astype(np.uint8)


def rainy_video(style, n=7, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    style = frozen(style, rng)
    base = scene().astype(np.float32) / 255
    return [np.round(add_rain(base, rng, style) * 255).astype(np.uint8) for _ in range(n)]


def test_still_thin_texture_is_not_changing_rain():
    still = measure([scene()] * 7)
    assert still["rain_left"] > 1.0  # the fence looks like streaks to the single-frame measure
    assert still["rain_changing"] == 0.0  # but it holds still


def test_more_rain_scores_more():
    light, medium = measure(rainy_video(LIGHT)), measure(rainy_video(MEDIUM))
    clean = measure([scene()] * 7)
    assert clean["rain_changing"] < light["rain_changing"] < medium["rain_changing"]
    assert clean["rain_left"] < medium["rain_left"]


def test_short_videos_have_no_changing_score_and_the_cli_reads_folders(tmp_path):
    assert measure([scene()] * 4)["rain_changing"] is None
    for i, f in enumerate(rainy_video(MEDIUM, n=6)):
        write_rgb(tmp_path / f"{i:05d}.png", f)
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "rainmeter", str(tmp_path), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["frames"] == 6 and res["rain_changing"] > 0 and "per_frame" not in res


def test_a_bad_path_is_said_and_the_others_are_still_measured(tmp_path, capsys):
    """The first bad path ended the command: the paths after it were never measured."""
    from media import make_video
    from pipeline.cli import main

    good = make_video(tmp_path / "good.mp4", frames=3)
    assert main(["rainmeter", str(tmp_path / "nope.mp4"), str(good), "--json"]) == 1
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0] == {"path": str(tmp_path / "nope.mp4"), "ok": False, "error": f"{tmp_path / 'nope.mp4'}: file not found"}
    assert lines[1]["path"] == str(good) and lines[1]["frames"] == 3
    assert "nope.mp4: file not found" in err
