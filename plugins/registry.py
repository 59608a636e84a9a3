"""Short plugin names -> "module:Class": the built-ins plus the `derain.plugins` entry points.

Built-ins are listed here *and* declared as entry points in pyproject.toml, like llm's
DEFAULT_PLUGINS: an installed package finds them through the entry-point group, a bare
checkout still finds them here, and both paths resolve the same way as a third party's.
"""
from __future__ import annotations

from importlib.metadata import entry_points

GROUP = "derain.plugins"

BUILTINS = {
    "noop": "plugins.noop:NoOp",
    "hog": "plugins.hog:HOGPeople",
    "haar": "plugins.haar:HaarCascade",
    "onnx": "plugins.onnx_detector:ONNXDetector",
    "jsonl": "plugins.jsonl:JSONLWriter",
    "overlay": "plugins.overlay:Overlay",
    "snapshot": "plugins.snapshot:Snapshot",
}


def known_plugins() -> dict[str, str]:
    """Every registered short name and the `module:Class` it stands for."""
    names = dict(BUILTINS)
    names.update({ep.name: ep.value for ep in entry_points(group=GROUP)})
    return names
