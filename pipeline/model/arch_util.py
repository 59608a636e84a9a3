"""Layers shared by the network files, and the registry YAML `type:` keys look up."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

ARCH_REGISTRY: dict[str, type[nn.Module]] = {}


def register_arch(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: make a network buildable by its class name from YAML."""
    ARCH_REGISTRY[cls.__name__] = cls
    return cls


def build_network(spec: dict) -> nn.Module:
    """Build a registered network from a mapping such as `{"type": "DerainNet", "width": 32}`."""
    spec = dict(spec)
    name = spec.pop("type", None)
    if name not in ARCH_REGISTRY:
        raise ConfigError(f"network type {name!r} is not registered; known: {sorted(ARCH_REGISTRY)}")
    try:
        return ARCH_REGISTRY[name](**spec)
    except TypeError as exc:
        raise ConfigError(f"network {name}: {exc}") from None


def conv3x3(cin: int, cout: int, dilation: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=bias)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Reflect-pad the bottom/right so H and W divide by `multiple`; returns the original H, W."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        # Reflect needs the pad smaller than the side; tiny inputs fall back to replicate.
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w


def with_padding(multiple: int) -> Callable:
    """Decorate a forward(x) so any H, W works: pad (reflect) to `multiple`, crop outputs back."""

    def wrap(forward: Callable) -> Callable:
        def padded(self, x: torch.Tensor, *args, **kwargs):
            x, h, w = pad_to_multiple(x, multiple)
            out = forward(self, x, *args, **kwargs)
            if isinstance(out, torch.Tensor):
                return out[..., :h, :w]
            return type(out)(**{k: _crop(v, h, w, x.shape[-2]) for k, v in out._asdict().items()})

        padded.__doc__ = forward.__doc__
        padded.unpadded = forward  # for exporters: the graph without the size-specific pad/crop
        return padded

    return wrap


def _crop(value, h: int, w: int, padded_h: int):
    """Crop full-resolution tensors back to H, W; leave coarser ones (embeddings, maps) alone."""
    if isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[-2] == padded_h:
        return value[..., :h, :w]
    return value
