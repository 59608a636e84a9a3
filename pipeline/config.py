"""YAML -> typed, validated settings.

Settings are frozen dataclasses. `load_settings` reads a YAML file, checks every
key against the dataclass fields (recursively), checks each value's type, and
reports all problems at once, each as `FILE: dotted.key: rule (got value)` with
the closest valid key for a misspelling; the value is shortened (`short`), so a huge
or self-referencing value (a YAML alias bomb) still makes a one-line message. Validation happens here, at load,
never in the hot path. Command-line flags come in as dotted keys (`load_settings(..., flags)`).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import re
import reprlib
import types
import typing
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")

SHORT_CHARS = 80  # longest value printed in an error message
MAX_ITEM_ERRORS = 5  # wrong items reported per list before the rest are left unchecked

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother, _repr.maxlong = 3, 60, 60, 40
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 4


def short(value: Any, limit: int = SHORT_CHARS) -> str:
    """`repr(value)` for error messages: at most `limit` characters, found without walking all of it.

    reprlib stops at a few items per level and a few levels, so a value of billions of
    elements (YAML aliases nested eight deep) costs microseconds, not gigabytes.
    """
    try:
        text = _repr.repr(value)
    except Exception:  # noqa: BLE001 - a value whose repr fails still gets named
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split())  # one line
    return text if len(text) <= limit else text[: limit - 3] + "..."


MAX_CONFIG_BYTES = 4 * 2**20


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a config file")
    if not path.exists():  # a pipe is a config file too: --config <(...), /dev/stdin
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)  # /dev/zero must not fill the memory
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: over {MAX_CONFIG_BYTES // 2**20} MiB: not a config file")
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a YAML text file (byte {exc.start} is not UTF-8)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_one_line(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: YAML
    forbids it, and PyYAML's silent last-one-wins hides which of two settings a run used."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden, as YAML means
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):  # (a list as a key is refused by the base loader, as before)
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _one_line(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line problem text (with a source excerpt) as one line: where, what."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if problem is None:
        text = " ".join(str(exc).split())
    else:
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        context = getattr(exc, "context", None)
        text = where + problem + (f" ({context})" if context else "")
    return text if len(text) <= 200 else text[:197] + "..."


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
        for depth, key in enumerate(parents):
            if node.get(key) is None:  # absent, or a section left empty in the file ("model:")
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):  # the file's "model: fast": said as from_dict says it
                where = ".".join(parents[:depth + 1])
                raise ConfigError(f"{path or '<flags>'}: {where}: must be a mapping (got {short(node)})")
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
        errors.append(f"{prefix.rstrip('.') or '<top>'}: must be a mapping (got {short(data)})")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            name = str(key) if len(str(key)) <= SHORT_CHARS else short(str(key))
            moved = getattr(cls, "MOVED", {}).get(key)
            if moved:
                errors.append(f"{prefix}{name}: moved to {moved}")
                continue
            close = difflib.get_close_matches(str(key)[:100], list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(fields)}"
            errors.append(f"{prefix}{name}: unknown key{hint}")
    kwargs = {}
    before = len(errors)
    for name, field in fields.items():
        if name not in data:
            continue
        kwargs[name] = _convert(hints[name], data[name], f"{prefix}{name}", errors)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        errors.append(f"{prefix.rstrip('.') or '<top>'}: {exc}")
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
        if len(inner) == 1:
            return _convert(inner[0], value, key, errors)
        for option in inner:  # the first alternative that takes the value as it is
            scratch: list[str] = []
            converted = _convert(option, value, key, scratch)
            if not scratch:
                return converted
        errors.append(f"{key}: must be {' or '.join(map(_describe, inner))} (got {short(value)})")
        return value
    if origin is typing.Literal:
        if value not in args:
            errors.append(f"{key}: must be one of {', '.join(map(repr, args))} (got {short(value)})")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            errors.append(f"{key}: must be a list (got {short(value)})")
            return value
        item = args[0] if args else Any
        before, items = len(errors), []
        for i, v in enumerate(value):
            items.append(_convert(item, v, f"{key}[{i}]", errors))
            if len(errors) - before >= MAX_ITEM_ERRORS and i + 1 < len(value):
                errors.append(f"{key}: items {i + 1}.. not checked (too many wrong items)")
                break
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            errors.append(f"{key}: must be a mapping (got {short(value)})")
        return value
    if tp is float and isinstance(value, str) and (ratio := _RATIO.fullmatch(value)):
        # a number from a flag (--fps 24), or a frame rate as FFmpeg and cameras give it
        # (30000/1001): exact where 29.97 is not
        if ratio[2] is None:
            value = float(ratio[1])
        elif float(ratio[2]):
            value = float(Fraction(ratio[1]) / Fraction(ratio[2]))
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            errors.append(f"{key}: must be a finite number (got {value})")
        return float(value)
    if tp is float:
        errors.append(f"{key}: must be a number (got {short(value)})")
        return value
    if tp in (int, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        errors.append(f"{key}: must be {tp.__name__} (got {short(value)})")
    if tp is str and isinstance(value, str) and (value == "~" or value.startswith("~/")):
        return os.path.expanduser(value)  # a shell expands it in a flag, never in a file: ./~/ was made
    return value


_RATIO = re.compile(r"\s*(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*(?:/\s*(\d+(?:\.\d+)?)\s*)?")


def _describe(tp: Any) -> str:
    """A type as an error message says it: int, 'auto', a mapping, ..."""
    if typing.get_origin(tp) is typing.Literal:
        return " or ".join(map(repr, typing.get_args(tp)))
    if dataclasses.is_dataclass(tp) or tp is dict or typing.get_origin(tp) is dict:
        return "a mapping"
    if typing.get_origin(tp) in (list, tuple):
        return "a list"
    return "a number" if tp is float else getattr(tp, "__name__", str(tp))
