"""Settings: every shipped config loads; bad keys and values name file, key and rule."""
import time
from pathlib import Path

import pytest

from pipeline.config import load_settings, short
from pipeline.errors import ConfigError
from pipeline.model.train import TrainSettings
from pipeline.settings import RunSettings, auto_batch
from pipeline.settings import ModelSettings

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
    ("batching: {max_batch: 0}", "batching.max_batch: must be an integer 1 to 256 or 'auto' (got 0)"),
    ("batching: {max_batch: four}", "batching.max_batch: must be int or 'auto' (got 'four')"),
    ("batching: {max_wait_ms: .inf}", "batching.max_wait_ms: must be a finite number (got inf)"),
    ("batching: {max_wait_ms: .nan}", "batching.max_wait_ms: must be a finite number (got nan)"),
    ("batching: {max_wait_ms: -1}", "batching.max_wait_ms: must be 0 to 3600000 (an hour) (got -1.0)"),
    ("batching: {max_wait_ms: soon}", "batching.max_wait_ms: must be a number (got 'soon')"),
    ("live: {max_wait_ms: 5}", "live.max_wait_ms: moved to batching.max_wait_ms"),
    ("live: {read_timeout_s: .inf}", "live.read_timeout_s: must be a finite number (got inf)"),
    ("model: 3", "model: must be a mapping (got 3)"),
    ("encode: {codec: mpeg2}", "encode.codec: must be one of"),
    ("encode: {crf: 99}", "encode.crf: must be in 0..63 (got 99)"),
    ("encode: {threads: -1}", "encode.threads: must be an integer 0 to 64 (0: FFmpeg's own choice, every core) or "
                              "'auto' (got -1)"),
    ("decode: {threads: many}", "decode.threads: must be int or 'auto' (got 'many')"),
    ("model: {profile: turbo}", "model.profile: must be one of full, fast, temporal, temporal-fast, identity"),
    ("modle: {}", "modle: unknown key; did you mean 'model'?"),
    ("- a list", "the top level must be a mapping"),
    ("a: [unclosed", "not valid YAML: line 1, column 13: expected ',' or ']'"),
    ("model: {profile: fast}\nmodel: {profile: full}", "not valid YAML: line 2, column 1: key 'model' given twice"),
    ("model:\n  profile: fast\n  profile: full\n", "line 3, column 3: key 'profile' given twice"),
    ("? [a, b]\n: 1\n", "not valid YAML: line 1, column 3: found unhashable key"),
    ("model: {device: gpu0}", "model.device: must be auto, cpu, cuda or cuda:N (or mps, xpu) (got 'gpu0')"),
    ("model: {dtype: fp8}", "model.dtype: must be one of auto, fp32, fp16, bf16 (got 'fp8')"),
    ("decode: {fps: 0}", "decode.fps: must be 0.01 to 1000 frames a second (got 0.0)"),
    ("decode: {fps: 0.0001}", "decode.fps: must be 0.01 to 1000 frames a second (got 0.0001)"),
    ("decode: {fps: -5}", "decode.fps: must be 0.01 to 1000 frames a second (got -5.0)"),
    ("archive: {output_suffix: mp4}", "archive.output_suffix: must be a dot and letters or digits, as .mp4 (got 'mp4')"),
    ("archive: {output_suffix: .a/b}", "archive.output_suffix: must be a dot and letters or digits, as .mp4 (got '.a/b')"),
    ("archive: {threads_per_worker: -5}", "archive.threads_per_worker: must be >= 0"),
    ("live: {keep_segments: -1}", "live.keep_segments: must be >= 0, 0 keeping all (got -1)"),
    ("live: {duration_s: -3}", "live.duration_s: must be >= 0"),
    ("batching: {max_batch: 100000}", "batching.max_batch: must be an integer 1 to 256 or 'auto' (got 100000)"),
    ("batching: {max_wait_ms: 1e14}", "batching.max_wait_ms: must be 0 to 3600000 (an hour)"),
    ("encode: {threads: 100000}", "encode.threads: must be an integer 0 to 64"),
    ("decode: {threads: 100000}", "decode.threads: must be an integer 0 to 64"),
    ("encode: {bitrate: 100000000000000000000}", "encode.bitrate: must be 1 to 10000000000 bits per second"),
    ("workers: {threads: -1}", "workers.threads: must be 0 to 1024"),
    ("model: {delay_ms: -1}", "model.delay_ms: must be 0 to 60000 (got -1.0)"),
    ("encode: {bitrate: -100}", "encode.bitrate: must be 1 to 10000000000 bits per second (got -100)"),
    ("encode: {keyframe_s: 0}", "encode.keyframe_s: must be > 0 (got 0.0)"),
    ("encode: {pix_fmt: bogus}", "encode.pix_fmt: not a pixel format FFmpeg knows (got 'bogus'"),
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


def test_a_flag_into_a_section_left_empty_or_not_a_mapping(tmp_path):
    """`model:` with nothing under it is no section; `model: fast` is refused as a file alone is."""
    s = load_settings(RunSettings, write(tmp_path, "model:\n"), {"model.profile": "identity"})
    assert s.model.profile == "identity"
    path = write(tmp_path, "model: fast\n")
    with pytest.raises(ConfigError, match=f"{path}: model: must be a mapping \\(got 'fast'\\)"):
        load_settings(RunSettings, path, {"model.profile": "identity"})


@pytest.mark.parametrize("text,fps", [("24", 24.0), ("29.97", 29.97), (" 30000/1001 ", 30000 / 1001), ("1e2", 100.0)])
def test_a_rate_from_a_flag_is_a_number_or_a_ratio(text, fps):
    """Flags arrive as text: --fps 24 as much as --fps 30000/1001."""
    assert load_settings(RunSettings, None, {"decode.fps": text}).decode.fps == pytest.approx(fps)


@pytest.mark.parametrize("text", ["24fps", "1e999", "30/0", ""])
def test_a_rate_that_is_no_number_is_named(text):
    with pytest.raises(ConfigError, match="decode.fps: must be"):
        load_settings(RunSettings, None, {"decode.fps": text})


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_settings(RunSettings, tmp_path / "nope.yaml")


def test_a_folder_given_as_config_is_named_as_one(tmp_path):
    with pytest.raises(ConfigError, match=f"{tmp_path}: is a folder, not a config file"):
        load_settings(RunSettings, tmp_path)


def test_yaml_anchors_and_merge_keys_still_load(tmp_path):
    path = write(tmp_path, "base: &b {profile: fast}\nmodel:\n  <<: *b\n  device: cpu\n")
    with pytest.raises(ConfigError, match="base: unknown key"):  # the merge itself is not a duplicate
        load_settings(RunSettings, path)


def test_an_unusable_device_is_one_line_before_any_work():
    from pipeline.model.inference import pick_device

    with pytest.raises(ConfigError, match="model.device: 'tpu' is not a device"):
        pick_device("tpu")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="model.device: cuda asked for, but torch .* sees no CUDA GPU here"):
            pick_device("cuda")


def test_a_binary_config_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "photo.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(ConfigError) as err:
        load_settings(RunSettings, path)
    assert str(err.value) == f"{path}: not a YAML text file (byte 0 is not UTF-8)"


def test_yaml_syntax_errors_are_one_line(tmp_path):
    path = write(tmp_path, "model:\n  profile: fast\n bad: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        load_settings(RunSettings, path)
    assert len(str(err.value).splitlines()) == 1 and "line 3" in str(err.value)


def alias_bomb(levels: int = 8, width: int = 9) -> str:
    """A few hundred bytes of YAML whose last alias stands for width**levels strings."""
    lines = ["a0: &a0 [" + ", ".join(["x"] * width) + "]"]
    for n in range(1, levels):
        lines.append(f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("use", ["batching: {max_batch: *a7}", "batching: {max_wait_ms: *a7}",
                                 "encode: {preset: *a7}", "model: *a7", "live: {cameras: *a7}", "plugins: *a7",
                                 "encode: {codec: *a7}"])
def test_an_alias_bomb_gives_short_errors_quickly(tmp_path, use):
    path = write(tmp_path, alias_bomb() + use + "\n")
    assert path.stat().st_size < 600  # 9**8 = 43 million strings once expanded
    start = time.monotonic()
    with pytest.raises(ConfigError) as err:
        load_settings(RunSettings, path)
    assert time.monotonic() - start < 2.0
    lines = [line for line in str(err.value).splitlines() if "unknown key" not in line]
    assert lines and all(len(line) < 300 for line in lines) and len(lines) <= 7
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_short_keeps_values_small_and_on_one_line():
    assert short("four") == "'four'" and short(99) == "99"
    assert len(short("x" * 10_000)) <= 80 and len(short(list(range(10**6)))) <= 80
    assert "\n" not in short({"a": "b\nc" * 100})


def test_max_batch_auto_follows_the_device_and_the_input(tmp_path):
    def batch(path=None, live=False, **flags):
        s = load_settings(RunSettings, path, flags)
        return s.batching.for_input(s.model, live).max_batch

    assert batch() == auto_batch(ModelSettings())
    assert batch(**{"model.device": "cpu"}) == 1
    assert batch(**{"model.device": "cpu", "model.profile": "fast"}) == 2
    assert batch(**{"model.device": "cuda:1"}) == 8
    assert batch(live=True, **{"model.device": "cuda:1"}) == 1  # a camera: each frame as soon as the model is free
    path = write(tmp_path, "model: {device: cuda}\nbatching: {max_batch: 3}\n")
    assert batch(path) == 3 and batch(path, live=True) == 3  # explicit values are kept
    assert batch(path, **{"batching.max_batch": 5}) == 5
    path = write(tmp_path, "model: {device: cpu}\nbatching: {max_batch: auto}\n")
    assert batch(path) == 1


def test_batching_defaults_by_input():
    s = RunSettings()
    files, live = s.batching.for_input(s.model, False), s.batching.for_input(s.model, True)
    assert (files.max_wait_ms, files.queue_size, files.policy) == (1000.0, 16, "block")
    assert (live.max_wait_ms, live.queue_size, live.policy) == (20.0, 4, "drop-oldest")
    given = load_settings(RunSettings, None, {"batching.queue_size": 9, "batching.policy": "drop-newest"}).batching
    assert given.for_input(s.model, True).queue_size == 9 and given.for_input(s.model, False).policy == "drop-newest"



def test_auto_batch_on_cuda_is_one_frame_for_1080p_and_up():
    """Measured on an H100 (docs/BENCHMARKS.md): 1080p runs faster at batch 1 than 8."""
    cuda = ModelSettings(device="cuda")
    assert auto_batch(cuda) == 8 and auto_batch(cuda, 640 * 360) == 8 and auto_batch(cuda, 1280 * 720) == 8
    assert auto_batch(cuda, 1920 * 1080) == 1 and auto_batch(cuda, 3840 * 2160) == 1
    assert auto_batch(ModelSettings(device="cpu"), 1920 * 1080) == 1
    assert RunSettings().batching.for_input(cuda, live=False, pixels=1920 * 1080).max_batch == 1


def test_a_home_folder_in_a_config_file_is_expanded(tmp_path, monkeypatch):
    """A shell expands ~ in a flag but never in a file: `record: ~/recs` made a folder named ~."""
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("live: {record: ~/recs, cameras: [{url: rtsp://cam/1, snapshot: ~/snaps}]}\n"
                   "model: {weights: ~/w.pt}\n")
    s = load_settings(RunSettings, cfg)
    assert (s.live.record, s.live.cameras[0].snapshot, s.model.weights) == \
        (f"{tmp_path}/recs", f"{tmp_path}/snaps", f"{tmp_path}/w.pt")
    assert s.live.cameras[0].url == "rtsp://cam/1"


def test_a_config_from_a_pipe_is_read_and_an_endless_one_refused(tmp_path):
    """--config <(...) and /dev/stdin were 'config file not found' (not a regular file)."""
    import os
    import threading

    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text("model: {profile: fast}\n"), daemon=True)
    writer.start()
    assert load_settings(RunSettings, fifo).model.profile == "fast"
    writer.join(5)
    with pytest.raises(ConfigError, match="/dev/zero: over 4 MiB: not a config file"):
        load_settings(RunSettings, "/dev/zero")
