"""`derain export --onnx`: a profile's network as one standalone ONNX graph, for runtimes
other than this pipeline (ONNX Runtime, TensorRT, OpenVINO, ffmpeg's dnn_processing filter).

The graph takes what those runtimes hand a model, planar float RGB in [0, 1], `rainy`
(N, 3, H, W) (a temporal profile: the window (N, 3T, H, W), target frame first), and returns
the derained frame `derained` (N, 3, H, W) in [0, 1]: the rain layer is subtracted inside,
and the fast profiles' half-scale pass with its guided upsampling is inside too. Batch,
height and width are dynamic; height and width must be multiples of 8 at the network's
scale (the encoder pools three times): 8 for full and temporal, 16 for the half-scale fast
profiles. The pipeline pads other sizes itself; a graph leaves that to its caller (the
padding's amount depends on the size, which this exporter would freeze into the graph).
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import OutputError, WeightsError
from .ecnet_arch import MULTIPLE
from .inference import fold_batchnorm
from .scale import predict
from .weights import PROFILES, default_weights, load_weights

log = logging.getLogger(__name__)

OPSET = 18  # Resize with antialias (the fast profile's half-scale input)


class _Unpadded(nn.Module):
    """The network without its size-specific pad and crop (those cannot be exported dynamic)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        return type(self.net).forward.unpadded(self.net, x)


class DerainedImage(nn.Module):
    """rainy -> derained, both float RGB in [0, 1], as the pipeline computes it."""

    def __init__(self, net: nn.Module, scale: float = 1.0, upsample: str = "bilinear"):
        super().__init__()
        self.net, self.scale, self.upsample = _Unpadded(net), scale, upsample

    def forward(self, rainy: torch.Tensor) -> torch.Tensor:
        rain = predict(self.net, rainy, self.scale, self.upsample).rain
        return (rainy[:, :3] - rain).clamp(0, 1)


def export_onnx(path: str | Path, profile: str = "full", weights: str | Path | None = None,
                opset: int = OPSET, overwrite: bool = False) -> dict:
    """Write the ONNX file (an existing one only with `overwrite`); returns what a caller needs
    to feed it (names, channels, multiple)."""
    if Path(path).is_dir():
        raise OutputError(f"{path}: is a folder; give the ONNX file's path")
    if Path(path).exists() and not overwrite:
        raise OutputError(f"{path}: exists; pass --overwrite to replace it")
    if weights is None and profile not in PROFILES:
        raise WeightsError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    loaded = load_weights(weights or default_weights(profile))
    if weights and loaded.profile != profile:  # as a run says it: the file sets the network
        log.warning("%s: weights of the %s profile: they set the network and its scale (--profile %s is not "
                    "used)", weights, loaded.profile, profile)
    model = DerainedImage(fold_batchnorm(loaded.net), loaded.scale, loaded.upsample).eval()
    channels = 3 * getattr(loaded.net, "frames", 1)
    axes = {0: "batch", 2: "height", 3: "width"}
    path = Path(path)
    multiple = round(MULTIPLE / loaded.scale)
    example = torch.rand(1, channels, 8 * multiple, 12 * multiple)
    tmp = path.with_name(f".{path.name}.partial")  # renamed when whole: a failed export leaves no file
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on constant folding are not ours to fix
            torch.onnx.export(model, example, str(tmp), dynamo=False, opset_version=opset,
                              input_names=["rainy"], output_names=["derained"],
                              dynamic_axes={"rainy": axes, "derained": axes})
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write the ONNX file ({exc.strerror or exc})") from None
    return {"path": str(path), "profile": loaded.profile, "input": "rainy", "output": "derained",
            "input_channels": channels, "size_multiple": multiple, "scale": loaded.scale, "opset": opset}
