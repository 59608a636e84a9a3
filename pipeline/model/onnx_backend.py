"""The network exported to ONNX and run by onnxruntime: the faster CPU backend here.

Measured on the 2-core EPYC machines (docs/BENCHMARKS.md), onnxruntime's convolutions
run the thesis network about 1.5x faster than PyTorch eager with channels_last. The
export covers the network only, for inputs whose sides divide by 8; padding, cropping
and the fast profile's rescaling stay in torch around it. Exports are cached on disk
by the weights' content, so a worker pays the export once; the CACHE_KEEP used last are
kept (every fine-tune's checkpoint is new weights: an unbounded cache grows with each).
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .arch_util import pad_to_multiple
from .ecnet_arch import MULTIPLE, DerainNet, DerainOutput

log = logging.getLogger(__name__)
CACHE_KEEP = 8  # exports kept in the cache, the most recently used


def available() -> bool:
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _RainOnly(nn.Module):
    def __init__(self, net: DerainNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return DerainNet.forward.unpadded(self.net, x).rain


def cache_dir() -> Path:
    return Path(os.environ.get("DERAIN_CACHE", Path.home() / ".cache" / "derain"))


def export(net: DerainNet) -> bytes:
    """ONNX bytes of the network with dynamic batch, height and width, cached by weights."""
    digest = hashlib.sha256()
    for k, v in net.state_dict().items():
        digest.update(k.encode())
        digest.update(v.detach().cpu().numpy().tobytes())
    digest.update(torch.__version__.encode())
    path = cache_dir() / f"derainnet-{digest.hexdigest()[:16]}.onnx"
    if path.is_file():
        try:
            os.utime(path)  # used now: the last to go
        except OSError:
            pass
        return path.read_bytes()
    buf = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on constant folding are not ours to fix
        torch.onnx.export(_RainOnly(net).eval(), torch.rand(1, 3 * net.frames, 64, 64), buf, dynamo=False, opset_version=17,
                          input_names=["rainy"], output_names=["rain"],
                          dynamic_axes={"rainy": axes, "rain": axes})
    data = buf.getvalue()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        _prune(path.parent)
    except OSError as exc:  # a read-only home only costs the export next time
        log.debug("cannot cache %s: %s", path, exc)
    return data


def _prune(folder: Path, keep: int = CACHE_KEEP) -> None:
    """Remove all but the `keep` exports used last (another process may be removing them too)."""
    def used(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:
            return 0.0

    for old in sorted(folder.glob("derainnet-*.onnx"), key=used, reverse=True)[keep:]:
        old.unlink(missing_ok=True)


class OnnxNet:
    """Callable like the network (returns a DerainOutput with only `rain` set)."""

    def __init__(self, net: DerainNet, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(export(net), opts, providers=["CPUExecutionProvider"])
        self.frames = net.frames

    def __call__(self, x: torch.Tensor) -> DerainOutput:
        x, h, w = pad_to_multiple(x, MULTIPLE)
        (rain,) = self.session.run(None, {"rainy": x.float().contiguous().numpy()})
        return DerainOutput(torch.from_numpy(rain)[..., :h, :w], None, ())
