"""Plugins: feed derained frames to detectors and any other consumer.

Subclass `Plugin`, implement `process(batch) -> list[Result | None]`, and name it in
YAML (`plugins: [{use: "package.module:Class", with: {...}}]`) or register a short name
in the `derain.plugins` entry-point group, as the built-ins are.
"""
from .actors import PluginTimeout
from .base import Plugin, detections_at, upstream
from .chain import PluginChain, PluginStats
from .loader import PluginSpec, RayOptions, load_plugins, resolve
from .registry import known_plugins
from .results import Detections, Result

__all__ = ["Plugin", "Result", "Detections", "PluginChain", "PluginStats", "PluginSpec",
           "RayOptions", "PluginTimeout", "load_plugins", "resolve", "known_plugins", "upstream", "detections_at"]
