"""YAML -> typed, validated settings.

Settings are frozen dataclasses. `load_settings` reads a YAML file, checks every
key against the dataclass fields (recursively), checks each value's type, and
reports all problems at once, each as `FILE: dotted.key: rule (got value)` with
the closest valid key for a misspelling. Validation happens here, at load,
never in the hot path. Command-line flags override with `override()`.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def load_settings(cls: type[T], path: str | Path | dict | None = None, overrides: dict | None = None) -> T:
    """Build `cls` from a YAML file or a mapping (optional) and dotted-key overrides such as {"workers.count": 2}."""
    if isinstance(path, dict):
        data, path = copy.deepcopy(path), None
    else:
        data = load_yaml(path) if path else {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return from_dict(cls, data, source=str(path) if path else "<flags>")


def from_dict(cls: type[T], data: dict, source: str = "<dict>") -> T:
    errors: list[str] = []
    value = _build(cls, data, "", errors)
    if errors:
        raise ConfigError("\n".join(f"{source}: {e}" for e in errors))
    return value


def _build(cls: type, data: Any, prefix: str, errors: list[str]) -> Any:
    if not isinstance(data, dict):
        errors.append(f"{prefix or '<top>'}: must be a mapping (got {data!r})")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(fields)}"
            errors.append(f"{prefix}{key}: unknown key{hint}")
    kwargs = {}
    before = len(errors)
    for name, field in fields.items():
        if name not in data:
            continue
        kwargs[name] = _convert(hints[name], data[name], f"{prefix}{name}", errors)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        errors.append(f"{prefix or '<top>'}: {exc}")
        return None
    if len(errors) > before:  # values of the wrong type: range checks would only add noise
        return obj
    for problem in getattr(obj, "problems", lambda: [])():
        errors.append(f"{prefix}{problem}")
    return obj


def _convert(tp: Any, value: Any, key: str, errors: list[str]) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", errors)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, key, errors) if len(inner) == 1 else value
    if origin is typing.Literal:
        if value not in args:
            errors.append(f"{key}: must be one of {', '.join(map(repr, args))} (got {value!r})")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            errors.append(f"{key}: must be a list (got {value!r})")
            return value
        item = args[0] if args else Any
        items = [_convert(item, v, f"{key}[{i}]", errors) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            errors.append(f"{key}: must be a mapping (got {value!r})")
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        errors.append(f"{key}: must be {tp.__name__} (got {value!r})")
    return value


def override(settings: T, **changes: Any) -> T:
    """Return a copy with the non-None `changes` applied (command-line flags win over the file)."""
    return dataclasses.replace(settings, **{k: v for k, v in changes.items() if v is not None})
