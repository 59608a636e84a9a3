"""A run's settings as a user gives them (a config file or mapping, and flags), checked against
what they name before any work: the file's plugins, so their errors name the file, and the
weights file's profile."""
from __future__ import annotations

import logging
import os

from .config import load_settings
from .settings import ModelSettings, RunSettings

log = logging.getLogger(__name__)


def load_run_settings(config: str | os.PathLike | dict | None = None, flags: dict | None = None) -> RunSettings:
    """A run's settings from a file (or mapping) and dotted-key flags. A file's plugins are
    checked here, so their errors name the file; the chain that loads them later has only the list."""
    settings = load_settings(RunSettings, config, flags)
    if settings.plugins and isinstance(config, (str, os.PathLike)):
        from plugins.loader import load_plugins  # here: plugins import the pipeline

        load_plugins(settings.plugins, f"{config}: plugins")
    if settings.model.weights:
        _say_whose_weights(settings.model)
    return settings


def _say_whose_weights(model: ModelSettings) -> None:
    """A weights file sets the network and its scale, whatever model.profile says: said where
    they differ (--profile identity --weights full.pt ran the full network, in silence)."""
    from .model.weights import weights_profile

    made_for = weights_profile(model.weights)
    if made_for is not None and made_for != model.profile:
        log.warning("%s: weights of the %s profile: they set the network and its scale (model.profile %s is not "
                    "used)", model.weights, made_for, model.profile)
