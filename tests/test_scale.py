"""Reduced-resolution inference: the rain layer's way back to full size."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.errors import WeightsError
from pipeline.model.ecnet_arch import DerainNet
from pipeline.model.inference import Derainer
from pipeline.model.scale import guided_upsample, predict
from pipeline.model.weights import load_weights, save_weights


def test_guided_upsampling_recovers_a_layer_that_is_linear_in_the_guide():
    """R = 0.4 O - 0.1 at low resolution comes back as 0.4 O - 0.1 at full resolution, with the
    full-size image's sharp detail, where bilinear upsampling blurs it."""
    big = torch.rand(1, 3, 64, 96)
    small = F.interpolate(big, scale_factor=0.5, mode="bilinear", align_corners=False, antialias=True)
    guided = guided_upsample(0.4 * small - 0.1, small, big, eps=1e-6)
    bilinear = F.interpolate(0.4 * small - 0.1, size=(64, 96), mode="bilinear", align_corners=False)
    truth = 0.4 * big - 0.1
    assert guided.shape == big.shape
    assert (guided - truth).abs().mean() < 0.2 * (bilinear - truth).abs().mean()


@pytest.mark.parametrize("upsample", ["bilinear", "guided"])
def test_predict_returns_full_size_rain_for_odd_sizes(upsample):
    net = DerainNet(width=4).eval()
    with torch.no_grad():
        out = predict(net, torch.rand(2, 3, 45, 70), 0.5, upsample)
    assert out.rain.shape == (2, 3, 45, 70)


def test_weights_carry_their_upsampling_to_the_derainer(tmp_path):
    path = tmp_path / "fast.pt"
    save_weights(DerainNet(width=4), path, profile="fast", scale=0.5,
                 network={"type": "DerainNet", "width": 4}, upsample="guided")
    assert load_weights(path).upsample == "guided"
    d = Derainer.load(weights=path, dtype="bf16", runtime="torch")
    assert d.upsample == "guided"
    frames = np.random.default_rng(0).integers(0, 256, (2, 33, 47, 3), dtype=np.uint8)
    assert d(frames).frames.shape == frames.shape


def test_an_unknown_upsampling_names_the_file(tmp_path):
    path = tmp_path / "odd.pt"
    save_weights(DerainNet(width=4), path, profile="fast", scale=0.5,
                 network={"type": "DerainNet", "width": 4}, upsample="lanczos")
    with pytest.raises(WeightsError, match=r"odd\.pt: unknown upsample 'lanczos'"):
        load_weights(path)
