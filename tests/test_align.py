"""Aligned temporal windows and the deflicker filter: the flow's direction, its use, no ghosts."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from pipeline.colour import i420_from_rgb
from pipeline.model.align import align_windows, flow, window_flows
from pipeline.model.deflicker import Deflicker
from pipeline.model.inference import Derainer, pick_align, windows


def scene(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A textured RGB picture wider than the frames cut from it."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.random((h, w + 40, 3)).astype(np.float32), (0, 0), 2.5)
    big = (big - big.min()) / (big.max() - big.min())
    return np.round(big * 255).astype(np.uint8)


def panned(picture: np.ndarray, shifts: list[int], w: int = 128) -> np.ndarray:
    """Frames of a camera panning right: frame i starts shifts[i] pixels into the picture."""
    return np.stack([picture[:, s:s + w] for s in shifts])


def test_the_flow_points_from_the_target_to_the_neighbour():
    frames = panned(scene(), [10, 14])  # the scene moves 4 px left from frame 0 to 1
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    fw = flow(gray[0], gray[1], cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM))
    inner = fw[16:-16, 16:-16]
    assert np.median(inner[..., 0]) == pytest.approx(-4, abs=0.3)  # a(x) = b(x - 4)
    assert np.median(np.abs(inner[..., 1])) < 0.3


def test_large_frames_get_their_flow_at_a_reduced_size_and_full_scale():
    picture = cv2.resize(scene(), (1400, 800), interpolation=cv2.INTER_CUBIC)
    a, b = picture[:, 20:1300], picture[:, 32:1312]  # 1280x800: over FLOW_PIXELS, shrunk 2x
    fw = flow(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY),
              cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM))
    assert fw.shape == (800, 1280, 2)
    assert np.median(fw[100:-100, 100:-100, 0]) == pytest.approx(-12, abs=0.6)


@pytest.mark.parametrize("planes", [False, True])
def test_aligned_neighbours_line_up_with_their_target(planes):
    frames = panned(scene(), [6, 10, 14])  # frame 1 is the target of a centred window
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    win = windows(x, slice(1, 2), (-1, 1))
    batch = np.stack([i420_from_rgb(torch.from_numpy(f)[None].permute(0, 3, 1, 2).float() / 255, "bt601")[0].numpy()
                      for f in frames]) if planes else frames
    flows = torch.from_numpy(window_flows(batch, slice(1, 2), (-1, 1), "medium"))
    aligned = align_windows(win, flows)
    target = win[:, :3, 8:-8, 8:-8]
    for k in (1, 2):
        before = (win[:, 3 * k:3 * k + 3, 8:-8, 8:-8] - target).abs().mean()
        after = (aligned[:, 3 * k:3 * k + 3, 8:-8, 8:-8] - target).abs().mean()
        assert after < before / 4, (k, float(before), float(after))
    torch.testing.assert_close(aligned[:, :3], win[:, :3])  # the target itself untouched


def test_a_neighbour_that_is_the_target_gets_no_flow():
    frames = panned(scene(), [6, 10])
    flows = window_flows(frames, slice(0, 2), (-1, 1), "fast")  # the first frame has no past
    assert flows.shape == (2, 2, 96, 128, 2)
    assert not flows[0, 0].any() and flows[0, 1].any()
    assert not flows[1, 1].any() and flows[1, 0].any()


def test_align_settings():
    assert pick_align("auto", 3) == "fast" and pick_align("medium", 3) == "medium"
    assert pick_align("auto", 1) is None and pick_align("none", 3) is None
    with pytest.raises(Exception, match="unknown align 'slow'"):
        pick_align("slow", 3)


def noisy_pan(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A panning clean clip and the same with fresh noise in every frame (what a derainer leaves)."""
    clean = panned(scene(), [2 * i for i in range(n)]).astype(np.float32)
    rng = np.random.default_rng(seed)
    noisy = np.clip(clean + rng.normal(0, 4, clean.shape), 0, 255).round().astype(np.uint8)
    return noisy, clean


def test_deflicker_averages_what_changes_from_frame_to_frame():
    noisy, clean = noisy_pan(8)
    steady = Deflicker().frames(noisy)
    err = lambda frames: float(np.abs(frames[4:, 8:-8, 8:-8].astype(np.float32) - clean[4:, 8:-8, 8:-8]).mean())
    assert err(steady) < 0.85 * err(noisy)
    np.testing.assert_array_equal(steady[0], noisy[0])  # nothing to carry yet


def test_deflicker_leaves_no_ghost_of_another_scene():
    noisy, _ = noisy_pan(4)
    other = np.ascontiguousarray(scene(seed=7)[:, :128])
    d = Deflicker()
    d.frames(noisy)
    cut = d.frame(other)  # a scene cut: nothing of the last scene may show
    np.testing.assert_array_equal(cut, other)
    noise = np.random.default_rng(3).normal(0, 4, other.shape)
    moved = np.clip(np.roll(other, 3, axis=1) + noise, 0, 255).astype(np.uint8)  # the new scene goes on
    assert (d.frame(moved) != moved).mean() > 0.5


def test_deflicker_starts_afresh_at_a_size_change():
    noisy, _ = noisy_pan(3)
    d = Deflicker()
    d.frames(noisy)
    small = np.ascontiguousarray(noisy[0, :64, :64])
    np.testing.assert_array_equal(d.frame(small), small)


def test_sequence_deflickers_as_the_pipeline_does():
    noisy, _ = noisy_pan(6)
    d = Derainer.load("identity", deflicker=True)
    out = np.concatenate([r.frames for r in d.sequence(list(noisy), chunk=4)])
    np.testing.assert_array_equal(out, Deflicker().frames(noisy))


# (22, 160) and (10, 64): short wide frames on which DIS crashed the process (SIGSEGV)
@pytest.mark.parametrize("size", [(2, 2), (6, 8), (11, 5), (22, 160), (10, 64), (2, 64)])
def test_frames_too_small_for_optical_flow_still_derain_and_deflicker(size):
    frames = (np.random.default_rng(0).random((3, *size, 3)) * 255).astype(np.uint8)
    d = Derainer.load("temporal-fast", device="cpu", dtype="fp32", runtime="torch")
    assert d(frames, (1, 1)).frames.shape == (1, *size, 3)
    steady = Deflicker().frames(frames)
    np.testing.assert_array_equal(steady[0], frames[0])
    assert steady.shape == frames.shape
