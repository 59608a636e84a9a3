import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.model.arch_util import build_network
from pipeline.model.ecnet_arch import MSPAM, RLCN, ChannelAttentionBlock, DerainNet, RainAutoencoder

THESIS_PARAMS = 2.883e6


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def test_parameter_count_is_close_to_the_thesis():
    n = n_params(DerainNet(width=32))
    # docs/MODEL.md explains the 3 % difference (the additive merge blocks and bias terms).
    assert abs(n - THESIS_PARAMS) / THESIS_PARAMS < 0.05, n
    assert n == 2_974_118


@pytest.mark.parametrize("h,w", [(64, 64), (33, 47), (17, 120), (9, 9)])
def test_any_size_works_and_comes_back_cropped(h, w):
    net = DerainNet(width=4).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, h, w))
    assert out.rain.shape == (2, 3, h, w)
    assert out.embedding.shape[1] == 32
    assert len(out.attention) == 3 and out.attention[0].shape[1] == 1


def test_attention_maps_and_embedding_scales():
    out = DerainNet(width=4).eval()(torch.rand(1, 3, 64, 96))
    assert [m.shape[-2:] for m in out.attention] == [(64, 96), (32, 48), (16, 24)]
    assert out.embedding.shape[-2:] == (8, 12)
    assert all(((m >= 0) & (m <= 1)).all() for m in out.attention)


def test_rlcn_is_rectified_and_highlights_bright_streaks():
    x = torch.full((1, 3, 32, 32), 0.3)
    x[..., 10:20, 16] = 0.9
    lcn = RLCN(9)(x)
    assert lcn.min() >= 0 and lcn.max() <= 1
    assert lcn[..., 15, 16].mean() > 0.9 and lcn[..., 15, 5].mean() < 1e-3


def test_blocks_keep_shapes():
    f = torch.rand(2, 16, 20, 20)
    assert ChannelAttentionBlock(16)(f).shape == f.shape
    skip, m = MSPAM(16)(f, torch.rand_like(f))
    assert skip.shape == f.shape and m.shape == (2, 1, 20, 20)


def test_autoencoder_decoder_fits_the_deraining_decoder():
    ae, net = RainAutoencoder(8), DerainNet(8)
    net.decoder.load_state_dict(ae.decoder.state_dict())  # the embedding-consistency initialisation
    assert ae(torch.rand(1, 3, 24, 40)).shape == (1, 3, 24, 40)


def test_registry_builds_by_name_and_rejects_unknown_names():
    assert isinstance(build_network({"type": "DerainNet", "width": 4}), DerainNet)
    with pytest.raises(ConfigError, match="'Nope' is not registered.*DerainNet"):
        build_network({"type": "Nope"})
    with pytest.raises(ConfigError, match="DerainNet"):
        build_network({"type": "DerainNet", "widht": 4})
