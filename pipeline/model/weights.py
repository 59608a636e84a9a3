"""The shipped weights: one small file per profile, fp16, loadable offline.

A weights file is a `torch.save` dict: {"format": 1, "profile", "scale", "upsample",
"network": spec, "state_dict": fp16 tensors, "meta": {...}} ("upsample" is absent from
files made before it existed: bilinear). Loading checks every part and names the
file in any error.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError
from .arch_util import ARCH_REGISTRY, build_network
from .scale import UPSAMPLERS

WEIGHTS_DIR = Path(__file__).with_name("weights")
PROFILES = ("full", "fast", "temporal", "temporal-fast")


@dataclass(frozen=True)
class LoadedWeights:
    net: nn.Module
    profile: str
    scale: float
    meta: dict
    upsample: str = "bilinear"  # how a rain layer predicted at scale < 1 reaches full size


def default_weights(profile: str) -> Path:
    if profile not in PROFILES:
        raise WeightsError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    return WEIGHTS_DIR / f"{profile}.pt"


def network_frames(weights: str | Path | None, profile: str = "full") -> int:
    """Frames the network of a weights file (or of a profile's shipped one) sees at once."""
    path = Path(weights) if weights else default_weights(profile)
    try:
        spec = dict(torch.load(path, map_location="cpu", weights_only=True)["network"])
    except Exception:  # load_weights names the problem when the worker loads it
        return 1
    cls = ARCH_REGISTRY.get(spec.get("type"))
    default = inspect.signature(cls).parameters.get("frames") if cls else None
    return int(spec.get("frames", default.default if default is not None else 1))


def weights_profile(path: str | Path) -> str | None:
    """The profile a weights file was made for, read without building its network (None where it
    cannot be read here: the worker that loads it names the problem)."""
    try:
        return str(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["profile"])
    except Exception:  # noqa: BLE001 - see load_weights
        return None


def save_weights(net: nn.Module, path: str | Path, profile: str, scale: float, network: dict,
                 meta: dict | None = None, upsample: str = "bilinear") -> None:
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in net.state_dict().items()}
    blob = {"format": 1, "profile": profile, "scale": float(scale), "upsample": upsample, "network": dict(network),
            "state_dict": state, "meta": dict(meta or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_whole(blob, path)


def save_whole(obj, path: Path) -> None:
    """torch.save into place atomically: a crash mid-save keeps the file that was there, and a
    full disk, a folder at `path` or Ctrl-C leaves no half-written .tmp behind."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        torch.save(obj, tmp)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def load_weights(path: str | Path) -> LoadedWeights:
    """Build the network a weights file describes, in fp32 on the CPU, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt zip/pickle
        if str(exc).startswith("Weights only load failed"):  # torch's paragraphs of advice say only this
            raise WeightsError(f"{path}: not a weights file (no PyTorch data derain reads safely)") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise WeightsError(f"{path}: not a readable weights file ({type(exc).__name__}: {first[:200]})") from None
    if not isinstance(blob, dict) or blob.get("format") != 1 or "state_dict" not in blob:
        raise WeightsError(f"{path}: not a derain weights file (missing format/state_dict)")
    net = build_network(blob["network"])
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    except RuntimeError as exc:
        raise WeightsError(f"{path}: weights do not fit network {blob['network']}: {exc}") from None
    upsample = blob.get("upsample", "bilinear")
    if upsample not in UPSAMPLERS:
        raise WeightsError(f"{path}: unknown upsample {upsample!r}; known: {', '.join(UPSAMPLERS)}")
    return LoadedWeights(net.eval(), blob.get("profile", "full"), float(blob.get("scale", 1.0)),
                         blob.get("meta", {}), upsample)
