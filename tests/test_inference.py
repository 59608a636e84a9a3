"""The inference core: shapes, dtypes, identity, shipped weights."""
import os

import numpy as np
import pytest
import torch

from pipeline.errors import InputError, WeightsError
from pipeline.model.ecnet_arch import DerainNet
from pipeline.model.inference import Derainer, fold_batchnorm
from pipeline.model.weights import WEIGHTS_DIR, load_weights, save_weights


@pytest.fixture
def tiny_weights(tmp_path):
    net = DerainNet(width=4)
    for m in net.modules():  # non-trivial BatchNorm statistics, so folding is really tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
    path = tmp_path / "tiny.pt"
    save_weights(net, path, profile="full", scale=1.0, network={"type": "DerainNet", "width": 4})
    return path


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_batch_in_batch_out_uint8_same_shape(tiny_weights, dtype):
    d = Derainer.load(weights=tiny_weights, dtype=dtype)
    frames = np.random.default_rng(0).integers(0, 256, (3, 37, 53, 3), dtype=np.uint8)
    result = d(frames)
    assert result.frames.shape == frames.shape and result.frames.dtype == np.uint8
    assert result.rain_intensity.shape == (3,) and (result.rain_intensity >= 0).all()


def test_folding_batchnorm_changes_nothing(tiny_weights):
    net = load_weights(tiny_weights).net
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        before = net(x).rain
        after = fold_batchnorm(net)(x).rain
    assert torch.allclose(before, after, atol=1e-5)


def test_derained_is_input_minus_rain(tiny_weights):
    loaded = load_weights(tiny_weights)
    d = Derainer.load(weights=tiny_weights, dtype="fp32")
    frames = np.random.default_rng(1).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expect = ((x - loaded.net(x).rain).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert np.abs(d(frames).frames.astype(int) - expect.astype(int)).max() <= 1


def test_identity_returns_frames_unchanged():
    frames = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    result = Derainer.load("identity")(frames)
    assert np.array_equal(result.frames, frames) and not result.rain_intensity.any()


def test_wrong_batch_layout_is_an_error():
    with pytest.raises(InputError, match=r"expected a \(B, H, W, 3\) or yuv420p \(B, H\*3/2, W\) uint8 batch"):
        Derainer.load("identity")(np.zeros((8, 8, 3), np.uint8))


def test_unknown_profile_is_an_error():
    with pytest.raises(WeightsError, match="unknown profile 'turbo'"):
        Derainer.load("turbo")


@pytest.mark.parametrize("profile", ["full", "fast"])
def test_shipped_weights_are_small_and_load_offline(profile):
    path = WEIGHTS_DIR / f"{profile}.pt"
    if not path.exists():
        pytest.skip(f"{path} not shipped")
    assert path.stat().st_size <= 12 * 2**20
    loaded = load_weights(path)
    assert loaded.profile == profile


def test_fast_profile_removes_synthetic_rain():
    """The shipped fast weights really derain: PSNR against the clean image goes up."""
    if not (WEIGHTS_DIR / "fast.pt").exists():
        pytest.skip("fast weights not shipped")
    from pipeline.model.evaluate import psnr
    from pipeline.model.synth import MEDIUM, add_rain

    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:96, 0:128]
    clean = np.stack([x / 128, y / 96, 0.5 + 0 * x], -1).astype(np.float32) * 0.7
    rainy = add_rain(clean, rng, MEDIUM)
    c8, r8 = (clean * 255).round().astype(np.uint8), (rainy * 255).round().astype(np.uint8)
    out = Derainer.load("fast")(r8[None]).frames[0]
    assert psnr(out, c8) > psnr(r8, c8) + 1.0


def test_onnxruntime_and_torch_runtimes_agree(tiny_weights, tmp_path, monkeypatch):
    monkeypatch.setenv("DERAIN_CACHE", str(tmp_path / "cache"))
    frames = np.random.default_rng(2).integers(0, 256, (2, 45, 70, 3), dtype=np.uint8)
    a = Derainer.load(weights=tiny_weights, runtime="torch", dtype="fp32")
    b = Derainer.load(weights=tiny_weights, runtime="onnxruntime", dtype="fp32")
    assert type(b.net).__name__ == "OnnxNet"
    ra, rb = a(frames), b(frames)
    assert np.abs(ra.frames.astype(int) - rb.frames.astype(int)).max() <= 1
    assert np.allclose(ra.rain_intensity, rb.rain_intensity, atol=1e-4)
    assert list((tmp_path / "cache").glob("*.onnx"))  # the export is cached for the next worker


def test_the_export_cache_keeps_the_exports_used_last(tiny_weights, tmp_path, monkeypatch):
    from pipeline.model import onnx_backend

    cache = tmp_path / "cache"
    monkeypatch.setenv("DERAIN_CACHE", str(cache))
    cache.mkdir()
    old = [cache / f"derainnet-{i:016x}.onnx" for i in range(onnx_backend.CACHE_KEEP + 3)]
    for i, p in enumerate(old):
        p.write_bytes(b"x")
        os.utime(p, (1000 + i, 1000 + i))
    os.utime(old[0], None)  # the oldest written, but used just now
    Derainer.load(weights=tiny_weights, runtime="onnxruntime", dtype="fp32")
    left = set(cache.glob("derainnet-*.onnx"))
    assert len(left) == onnx_backend.CACHE_KEEP and old[0] in left and old[1] not in left
    assert len(left - set(old)) == 1  # the new export


def test_a_batch_is_padded_to_the_smallest_size_run_before_that_holds_it():
    """On CUDA every new batch shape costs a kernel search and a graph capture: a partial batch
    takes a size already run (never more than the largest batch seen, so never past max_batch)."""
    from pipeline.model.inference import _pad_batch

    frames = np.arange(3 * 2 * 2 * 3, dtype=np.uint8).reshape(3, 2, 2, 3)
    seen: set[int] = set()
    assert _pad_batch(frames, seen) is frames and seen == {3}  # a first size is run as it is
    padded = _pad_batch(frames[:2], seen)
    assert padded.shape == (3, 2, 2, 3) and np.array_equal(padded[:2], frames[:2]) and np.array_equal(padded[2], frames[1])
    five = np.zeros((5, 2, 2, 3), np.uint8)
    assert len(_pad_batch(five, seen)) == 5 and seen == {3, 5}
    assert len(_pad_batch(five[:4], seen)) == 5 and len(_pad_batch(frames[:1], seen)) == 1  # 3 would be 3x the work
