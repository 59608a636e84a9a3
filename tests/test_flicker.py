"""The warping error (Lai et al.): flow direction, occlusion, flicker, and `derain eval` on frames."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from pipeline.images import write_rgb
from pipeline.model.evaluate import looks_like_video
from pipeline.model.flicker import WarpReference, flow, visible, warp_back


def texture(h=96, w=128, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 2.0)
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).astype(np.uint8)


def panning(frames=5, dx=3.0, dy=1.0) -> list[np.ndarray]:
    """A camera panning over a texture: frame t is the scene moved by (-t dx, -t dy)."""
    big = texture(160, 200)
    out = []
    for t in range(frames):
        m = np.float32([[1, 0, 30 + t * dx], [0, 1, 30 + t * dy]])
        out.append(cv2.warpAffine(big, m, (128, 96), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP))
    return out


def test_flow_points_from_t_to_t_plus_1():
    a, b = panning(2)
    fw = flow(a, b)
    # the scene moves left/up by (3, 1): a(x) is found in b at x - (3, 1)
    assert np.median(fw[..., 0]) == pytest.approx(-3.0, abs=0.3)
    assert np.median(fw[..., 1]) == pytest.approx(-1.0, abs=0.3)
    restored = warp_back(b, fw)
    inner = (slice(10, -10), slice(10, -10))
    assert np.abs(restored[inner].astype(int) - a[inner].astype(int)).mean() < 3


def test_clean_video_scores_near_zero_and_the_wrong_direction_would_not():
    clean = panning()
    ref = WarpReference(clean)
    assert ref.error(clean) < 2e-3
    # The same frames warped with the flow the other way round (a classic mistake) are far off.
    wrong = [warp_back(b, -f) for b, f in zip(clean[1:], ref.flows)]
    err = np.mean([((a.astype(np.float32) - w.astype(np.float32)) / 255) ** 2 for a, w in zip(clean, wrong)])
    assert err * 3 > 10 * ref.error(clean)


def test_flicker_and_shuffled_frames_score_higher():
    clean = panning()
    ref = WarpReference(clean)
    flicker = [np.clip(f.astype(int) + (12 if t % 2 else -12), 0, 255).astype(np.uint8) for t, f in enumerate(clean)]
    assert ref.error(flicker) > 10 * ref.error(clean)
    assert ref.error(flicker) == pytest.approx(3 * (24 / 255) ** 2, rel=0.3)
    assert ref.error(clean[::-1]) > 10 * ref.error(clean)


def test_pixels_that_leave_the_frame_are_masked():
    a, b = panning(2, dx=8, dy=0)
    mask = visible(flow(a, b), flow(b, a))
    assert mask[:, 20:100].mean() > 0.9  # seen in both frames
    assert mask[:, :6].mean() < 0.5  # the scene moves left: these land outside frame t+1


def test_video_is_recognised_by_consecutive_names_and_one_size(tmp_path):
    from pathlib import Path

    frames = [np.zeros((4, 4, 3), np.uint8)] * 3
    assert looks_like_video([Path(f"{i:05d}.jpg") for i in (1, 2, 3)], frames)
    assert not looks_like_video([Path(f"{i:05d}.jpg") for i in (1, 2, 4)], frames)
    assert not looks_like_video([Path(f"rain-{i}.png") for i in (1, 2, 3)],
                                [np.zeros((4, 4, 3), np.uint8), np.zeros((4, 6, 3), np.uint8)] * 2)
    unrelated = [texture(64, 64, seed=s) for s in range(4)]  # numbered, one size, but no one scene
    assert not looks_like_video([Path(f"rain-{i:03d}.png") for i in range(1, 5)], [u // 2 + (80 * (i % 2)) for i, u in
                                                                                  enumerate(unrelated)])
    assert looks_like_video([Path(f"{i:05d}.jpg") for i in range(1, 5)], panning(4))


def test_eval_reports_warp_error_on_a_folder_of_frames(tmp_path):
    clean = panning(4)
    rng = np.random.default_rng(1)
    for d in ("rain", "clean"):
        (tmp_path / d).mkdir()
    for t, f in enumerate(clean):
        streaks = (rng.random(f.shape[:2]) < 0.01)[..., None] * 120
        write_rgb(tmp_path / "rain" / f"{t + 1:05d}.png", np.clip(f.astype(int) + streaks, 0, 255).astype(np.uint8))
        write_rgb(tmp_path / "clean" / f"{t + 1:05d}.png", f)
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "eval", "--rain", str(tmp_path / "rain"),
                          "--clean", str(tmp_path / "clean"), "--profile", "temporal-fast", "--json",
                          "--csv", str(tmp_path / "e.csv")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["video"] is True and res["n"] == 4
    assert res["clean_warp_error"] < res["input_warp_error"]
    assert res["warp_error"] < res["input_warp_error"]
