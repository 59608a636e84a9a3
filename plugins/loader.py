"""YAML plugin entries -> checked, constructed plugins, before any frame is read.

An entry is `{use: NAME or "module:Class", with: {kwargs}, name:, on_error: skip|stop,
timeout_s: SECONDS, ray: {replicas:, num_cpus:, num_gpus:}}`. Every problem (unknown name,
import failure, a class that is not a `Plugin`, a `with:` key its constructor does not
take) is reported at once, each naming the entry, the plugin, the module and the key.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.config import short
from pipeline.errors import PluginError

from .base import Plugin
from .registry import known_plugins

ENTRY_KEYS = ("use", "with", "name", "on_error", "timeout_s", "ray")
RAY_KEYS = {"replicas": int, "num_cpus": (int, float), "num_gpus": (int, float)}


@dataclass(frozen=True)
class RayOptions:
    """Run the plugin as its own Ray actor pool (so detection overlaps deraining)."""

    replicas: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0


def actor_cpus(configs) -> float:
    """The CPUs the configured plugins' Ray actors ask for in all (`ray:` as the loader reads it),
    from the config alone, so the model workers, placed first, leave them free."""
    total = 0.0
    for entry in configs or ():
        if not isinstance(entry, dict):
            continue  # a Plugin instance (Python API) runs inline
        try:
            ray = _ray_options(str(entry.get("use")), "", entry.get("ray"))
        except PluginError:
            continue  # said where the plugins are loaded
        if ray is not None:
            total += ray.num_cpus * ray.replicas
    return total


@dataclass(frozen=True)
class PluginSpec:
    """One configured plugin, constructed but not set up yet.

    Attributes:
        plugin: the instance (its `name` set to the configured name).
        module: where its class lives ("module:Class"), for error messages.
        on_error: "skip" drops this plugin's work for a failing batch, "stop" ends the run.
        ray: actor-pool options, or None to run inline in the frame loop.
        timeout_s: the time limit of one `process` call (None: no limit); a call past it
            counts as failed under `on_error` (the class's `timeout_s` by default, 10 s).
    """

    plugin: Plugin
    module: str
    on_error: Literal["skip", "stop"] = "skip"
    ray: RayOptions | None = None
    timeout_s: float | None = Plugin.timeout_s

    @property
    def name(self) -> str:
        return self.plugin.name


def load_plugins(entries: list[dict | Plugin], source: str = "plugins") -> list[PluginSpec]:
    """Check and construct every entry; raise one PluginError listing all problems.

    Args:
        entries: YAML mappings (see module doc) or ready `Plugin` instances (Python API).
        source: a prefix for messages, e.g. the config file name.

    Raises:
        PluginError: naming the entry index, the plugin, its module and the bad key.
    """
    specs, problems = [], []
    for i, entry in enumerate(entries):
        try:
            specs.append(_spec(entry))
        except PluginError as exc:
            problems.append(f"{source}[{i}]: {exc}")
    names = [s.name for s in specs]
    problems += [f"{source}: plugin name {n!r} is used twice; give one a `name:`"
                 for n in sorted({n for n in names if names.count(n) > 1})]
    if problems:
        raise PluginError("\n".join(problems))
    return specs


def resolve(use: str) -> type[Plugin]:
    """The Plugin class for a short name or "package.module:Class"."""
    target = use if ":" in use else known_plugins().get(use)
    if target is None:
        raise PluginError(f"{use}: unknown plugin; known: {', '.join(sorted(known_plugins()))}")
    module_name, _, attr = target.partition(":")
    try:
        module = _import(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's, say so
        raise PluginError(f"{use}: cannot import module {module_name!r}: {exc!r}") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise PluginError(f"{use}: module {module_name!r} has no attribute {attr!r}")
    if not (inspect.isclass(cls) and issubclass(cls, Plugin)):
        raise PluginError(f"{use}: {target} is not a subclass of plugins.Plugin")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise PluginError(f"{use}: {target} does not implement the Plugin interface (missing: {missing})")
    return cls


def _import(name: str):
    """The module `name`; one in the working folder too, as `python -m` and uvicorn find it (the
    installed `derain` command does not put that folder on sys.path, so myplugins.py beside the
    config was not found)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        here = os.getcwd()
        if exc.name != name.partition(".")[0] or here in sys.path or "" in sys.path:
            raise
        sys.path.append(here)  # after the installed packages: a local file never shadows one
        return importlib.import_module(name)


def _spec(entry: dict | Plugin) -> PluginSpec:
    if isinstance(entry, Plugin):
        entry.name = entry.name or type(entry).__name__.lower()
        return PluginSpec(entry, f"{type(entry).__module__}:{type(entry).__qualname__}",
                          timeout_s=_timeout(type(entry).__name__, "", entry.timeout_s))
    if not isinstance(entry, dict) or not isinstance(entry.get("use"), str):
        raise PluginError(f"must be a mapping with a string `use:` (got {short(entry)})")
    use = entry["use"]
    _check_keys(use, "", entry, ENTRY_KEYS)
    cls = resolve(use)
    module = f"{cls.__module__}:{cls.__qualname__}"
    kwargs = entry.get("with") or {}
    if not isinstance(kwargs, dict):
        raise PluginError(f"{use} ({module}): with: must be a mapping (got {short(kwargs)})")
    _check_kwargs(use, module, cls, kwargs)
    try:
        plugin = cls(**kwargs)
    except (TypeError, ValueError, OSError) as exc:
        raise PluginError(f"{use} ({module}): with: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the plugin's own constructor failed: named, in one line
        raise PluginError(f"{use} ({module}): its constructor failed: {type(exc).__name__}: {exc}") from None
    plugin.name = str(entry.get("name") or (use if ":" not in use else cls.__name__.lower()))
    on_error = entry.get("on_error", "skip")
    if on_error not in ("skip", "stop"):
        raise PluginError(f"{use} ({module}): on_error: must be 'skip' or 'stop' (got {short(on_error)})")
    timeout_s = _timeout(use, module, entry.get("timeout_s", plugin.timeout_s))
    return PluginSpec(plugin, module, on_error, _ray_options(use, module, entry.get("ray")), timeout_s)


def _timeout(use: str, module: str, value: Any) -> float | None:
    """A time limit in seconds: a number > 0, or 0/None for none."""
    if value is None or (not isinstance(value, bool) and isinstance(value, (int, float)) and value == 0):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        where = f" ({module})" if module else ""
        raise PluginError(f"{use}{where}: timeout_s: must be a number of seconds > 0, or 0 for no limit "
                          f"(got {short(value)})")
    return float(value)


def _check_keys(use: str, module: str, given: dict, valid) -> None:
    for key in given:
        if key not in valid:
            close = difflib.get_close_matches(str(key), list(valid), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
            where = f" ({module})" if module else ""
            raise PluginError(f"{use}{where}: {key}: unknown key; {hint}")


def _check_kwargs(use: str, module: str, cls: type, kwargs: dict[str, Any]) -> None:
    params = inspect.signature(cls).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items() if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in kwargs:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid) or '(none)'}"
            raise PluginError(f"{use} ({module}): with.{key}: unknown key; {hint}")
    missing = [n for n, p in params.items() if n != "self" and p.default is p.empty
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in kwargs]
    if missing:
        raise PluginError(f"{use} ({module}): with.{missing[0]}: required key missing")


def _ray_options(use: str, module: str, ray: Any) -> RayOptions | None:
    if ray is None or ray is False:
        return None
    if ray is True:
        return RayOptions()
    if not isinstance(ray, dict):
        raise PluginError(f"{use} ({module}): ray: must be a mapping or true (got {short(ray)})")
    for key, value in ray.items():
        if key not in RAY_KEYS:
            _check_keys(use, module, {f"ray.{key}": value}, [f"ray.{k}" for k in RAY_KEYS])
        if isinstance(value, bool) or not isinstance(value, RAY_KEYS[key]) or value < (1 if key == "replicas" else 0):
            rule = "an integer >= 1" if key == "replicas" else "a number >= 0"
            raise PluginError(f"{use} ({module}): ray.{key}: must be {rule} (got {short(value)})")
    return RayOptions(**{k: (int(v) if k == "replicas" else float(v)) for k, v in ray.items()})
