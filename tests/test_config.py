"""Settings: every shipped config loads; bad keys and values name file, key and rule."""
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.errors import ConfigError
from pipeline.model.train import TrainSettings
from pipeline.settings import RunSettings

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cls = TrainSettings if path.name.startswith(("train", "finetune")) else RunSettings
    assert load_settings(cls, path) is not None


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,expected", [
    ("batching: {max_bach: 4}", "batching.max_bach: unknown key; did you mean 'max_batch'?"),
    ("batching: {max_batch: 0}", "batching.max_batch: must be an integer >= 1 (got 0)"),
    ("batching: {max_batch: four}", "batching.max_batch: must be int (got 'four')"),
    ("encode: {codec: mpeg2}", "encode.codec: must be one of"),
    ("encode: {crf: 99}", "encode.crf: must be in 0..63 (got 99)"),
    ("model: {profile: turbo}", "model.profile: must be one of full, fast, identity"),
    ("modle: {}", "modle: unknown key; did you mean 'model'?"),
    ("- a list", "the top level must be a mapping"),
    ("a: [unclosed", "not valid YAML"),
])
def test_bad_settings_name_the_file_key_and_rule(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(RunSettings, path)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_all_problems_are_reported_at_once(tmp_path):
    path = write(tmp_path, "batching: {max_batch: 0, queue_size: 0}\nencode: {preest: fast}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(RunSettings, path)
    assert len(str(err.value).splitlines()) == 3


def test_flags_override_the_file(tmp_path):
    path = write(tmp_path, "batching: {max_batch: 2}\nmodel: {profile: fast}\n")
    s = load_settings(RunSettings, path, {"batching.max_batch": 8, "model.profile": None})
    assert s.batching.max_batch == 8 and s.model.profile == "fast"


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_settings(RunSettings, tmp_path / "nope.yaml")
