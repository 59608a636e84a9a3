"""`derain train` / `derain export` refuse what would fail or lose work later, in one line naming
the file and key: bad pairs, bad values, foreign or crafted checkpoints, outputs written over."""
from __future__ import annotations

import csv
import logging
import os
import shutil

import numpy as np
import pytest
import torch

from pipeline.errors import ConfigError, InputError, OutputError, WeightsError
from pipeline.images import write_rgb
from pipeline.model.train import DataSettings, Trainer, TrainSettings, export_checkpoint, train
from pipeline.model.weights import load_weights


@pytest.fixture
def config(tiny_training):
    return tiny_training[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, shared_data):
    """One short run's last.pt (derain step 4), made once; tests copy it before changing it."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train({"network": {"type": "DerainNet", "width": 4}, "autoencoder": {"iters": 2, "batch": 2},
           "data": {"clean_dirs": [str(shared_data / "clean_corpus" / "Kodak24")], "patch": 32},
           "train": {"iters": 4, "batch": 2}, "threads": 1, "out_dir": str(run)}, progress=False)
    return run / "last.pt"


def images(folder, *sizes, seed=0):
    """Random RGB images a.png, b.png, ... of the given (width, height)s."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, (w, h) in zip("abcdefgh", sizes):
        write_rgb(folder / f"{name}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return str(folder)


def log_steps(run):
    with open(run / "log.csv") as fh:
        return [(r["stage"], int(r["step"])) for r in csv.DictReader(fh)]


# -- 1. paired data ------------------------------------------------------------------------------

def test_a_pair_of_two_sizes_is_refused_before_the_first_step(config, tmp_path):
    rain, clean = images(tmp_path / "rain", (80, 64)), images(tmp_path / "clean", (80, 60))
    with pytest.raises(InputError) as err:
        train(str(config), progress=False, overrides={"data.paired": [[rain, clean]], "data.paired_fraction": 1.0})
    assert str(err.value) == (f"{tmp_path / 'rain' / 'a.png'} is 80x64 but {tmp_path / 'clean' / 'a.png'} is 80x60:"
                              " a training pair's sizes must match")
    assert not (tmp_path / "run" / "log.csv").exists()


def test_pairs_smaller_than_the_patch_are_left_out_with_a_warning_or_refused_if_all_are(config, tmp_path, caplog):
    rain, clean = tmp_path / "rain", tmp_path / "clean"
    images(rain, (20, 20), (48, 40)), images(clean, (20, 20), (48, 40))  # the same seed: the same images
    pairs = {"data.paired": [[str(rain), str(clean)]], "data.paired_fraction": 1.0}
    with caplog.at_level(logging.WARNING, "pipeline.model.train"):
        train(str(config), progress=False, overrides=pairs)
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.model.train"]
    assert said == ["data.paired: 1 of 2 pairs are smaller than data.patch 32 and left out"]
    (rain / "b.png").unlink(), (clean / "b.png").unlink()
    with pytest.raises(InputError, match=f"^{rain} / {clean}: 1 pair\\(s\\) found, all smaller than data.patch 32x32 "
                                         r"\(the largest is 20x20\)$"):
        train(str(config), progress=False, overrides=pairs)


def test_clean_photos_all_smaller_than_the_patch_are_named_as_found(config, tmp_path):
    small = images(tmp_path / "small", (20, 24), (30, 31))
    with pytest.raises(InputError, match=f"^{small}: 2 clean photo\\(s\\) found, all smaller than data.patch 32x32 "
                                         r"\(the largest is 30x31\)$"):
        train(str(config), progress=False, overrides={"data.clean_dirs": [small]})


# -- 2. config values ----------------------------------------------------------------------------

@pytest.mark.parametrize("key,value,expected", [
    ("checkpoint_every", 0, "checkpoint_every: must be >= 1 (got 0)"),
    ("threads", -1, "threads: must be >= 0"),
    ("val_every", -1, "val_every: must be >= 0"),
    ("data.workers", -2, "data.workers: must be >= 0"),
    ("train.lr", -1, "train.lr: must be > 0 (got -1.0)"),
    ("autoencoder.gamma", 0, "autoencoder.gamma: must be > 0"),
    ("train.clip", 0, "train.clip: must be > 0"),
    ("train.seconds", -5, "train.seconds: must be >= 0"),
    ("data.rain_mix", {}, "data.rain_mix: empty"),
    ("data.rain_mix", {"light": -1}, "data.rain_mix: weights must be numbers >= 0 (got {'light': -1})"),
    ("data.rain_mix", {"light": "x"}, "data.rain_mix: weights must be numbers >= 0"),
    ("data.rain_mix", {"light": 0}, "data.rain_mix: the weights sum to 0"),
    ("data.paired", [["rain"]], "data.paired[0]: must be two folders, [rain_dir, clean_dir] (got ['rain'])"),
    ("data.paired_fraction", 5, "data.paired_fraction: a fraction, must be in [0, 1] (got 5.0)"),
    ("data.paired_fraction", -3, "data.paired_fraction: a fraction, must be in [0, 1] (got -3.0)"),
    ("data.jpeg", 2, "data.jpeg: a fraction, must be in [0, 1]"),
    ("data.jpeg_quality", [200, 300], "data.jpeg_quality: must be [low, high] with 0 <= low <= high <= 100"),
    ("data.jpeg_quality", [90, 60], "data.jpeg_quality: must be [low, high]"),
    ("data.jpeg_quality", [90], "data.jpeg_quality: must be [low, high]"),
])
def test_a_value_that_would_end_in_a_traceback_is_one_line_naming_file_and_key(config, key, value, expected):
    with pytest.raises(ConfigError) as err:
        train(str(config), progress=False, overrides={key: value})
    assert str(err.value).startswith(f"{config}: {expected}") and "\n" not in str(err.value)


def test_outputs_that_cannot_be_written_are_refused_before_training(config, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    (tmp_path / "folder").mkdir()
    for overrides, expected in [
        ({"out_dir": str(a_file)}, f"out_dir: {a_file} is a file, so {a_file / 'last.pt'} cannot be written"),
        ({"export": str(a_file / "w.pt")}, f"export: {a_file} is a file, so {a_file / 'w.pt'} cannot be written"),
        ({"export": str(tmp_path / "folder")}, f"export: {tmp_path / 'folder'} is a folder; give the weights file's"),
        ({"export": str(tmp_path / "run" / "last.pt")}, "is where the run keeps its last.pt; give another file"),
    ]:
        with pytest.raises(ConfigError) as err:
            train(str(config), progress=False, overrides=overrides)
        assert str(err.value).startswith(f"{config}: ") and expected in str(err.value), str(err.value)
        assert "\n" not in str(err.value) and not (tmp_path / "run" / "log.csv").exists()


def test_the_trainer_tries_writing_its_outputs_before_loading_anything(tmp_path):
    """What the settings' checks cannot know (permissions, names the file system refuses) is found
    by writing, before the data is read: the run would otherwise end unable to export."""
    export = tmp_path / ("x" * 300 + ".pt")
    settings = TrainSettings(out_dir=str(tmp_path / "run"), export=str(export),
                             data=DataSettings(clean_dirs=[str(tmp_path / "nowhere")]))
    with pytest.raises(ConfigError, match=f"^cfg.yaml: export: cannot write {export} \\(File name too long\\)$"):
        Trainer(settings, progress=False, source="cfg.yaml")


# -- 3, 4. resume and export read checkpoints safely ---------------------------------------------

def test_resume_with_another_network_names_both(config, tmp_path, checkpoint):
    (tmp_path / "run").mkdir()
    last = tmp_path / "run" / "last.pt"
    shutil.copy(checkpoint, last)
    with pytest.raises(WeightsError) as err:
        train(str(config), resume=True, progress=False, overrides={"network.width": 8})
    assert str(err.value) == (f"{last}: made for network DerainNet width 4, the config asks DerainNet width 8;"
                              " resume with the network it was made with")
    with pytest.raises(WeightsError, match="made for network DerainNet width 4, the config asks TemporalDerainNet"):
        train(str(config), resume=True, progress=False,
              overrides={"network": {"type": "TemporalDerainNet", "width": 4, "frames": 3}, "data.frames": 3})


@pytest.mark.parametrize("content,expected", [
    (b"garbage\n", "not a training checkpoint (a run's last.pt; UnpicklingError)"),
    ("half", "not a training checkpoint (a run's last.pt; RuntimeError)"),
    ("weights", "exported weights, not a training checkpoint"),
])
def test_a_corrupt_or_foreign_last_pt_is_one_line(config, tmp_path, checkpoint, content, expected):
    (tmp_path / "run").mkdir()
    last = tmp_path / "run" / "last.pt"
    if content == "half":
        last.write_bytes(checkpoint.read_bytes()[:1000])
    elif content == "weights":  # what `derain export -o run/last.pt` used to leave there
        export_checkpoint(checkpoint, tmp_path / "w.pt")
        shutil.copy(tmp_path / "w.pt", last)
    else:
        last.write_bytes(content)
    with pytest.raises(WeightsError) as err:
        train(str(config), resume=True, progress=False)
    assert str(err.value).startswith(f"{last}: {expected}") and "\n" not in str(err.value)


class _Payload:
    """Unpickling this calls os.makedirs(path): code a crafted checkpoint would run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.makedirs, (self.path,)


def test_a_crafted_checkpoint_runs_no_code_in_export_or_resume(config, tmp_path, checkpoint):
    state = torch.load(checkpoint, weights_only=True)
    ran = tmp_path / "the-payload-ran"
    state["settings"]["note"] = _Payload(str(ran))
    (tmp_path / "run").mkdir()
    crafted = tmp_path / "run" / "last.pt"
    torch.save(state, crafted)
    with pytest.raises(WeightsError, match="not a training checkpoint .*UnpicklingError"):
        export_checkpoint(crafted, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match="not a training checkpoint .*UnpicklingError"):
        train(str(config), resume=True, progress=False)
    assert not ran.exists()


def test_a_trainers_checkpoint_loads_weights_only_and_resumes_and_exports(config, tmp_path, checkpoint):
    state = torch.load(checkpoint, weights_only=True)  # nothing but tensors, numbers, strings, containers
    assert state["stage"] == "derain" and state["step"] == 4
    (tmp_path / "run").mkdir()
    shutil.copy(checkpoint, tmp_path / "run" / "last.pt")
    train(str(config), resume=True, progress=False, overrides={"train.iters": 5})
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 5
    assert load_weights(export_checkpoint(tmp_path / "run" / "last.pt", tmp_path / "w.pt")).meta["step"] == 5


# -- 5. export never writes over what it should not ----------------------------------------------

def test_export_refuses_its_own_checkpoint_a_folder_and_an_existing_file(tmp_path, checkpoint):
    last = tmp_path / "last.pt"
    shutil.copy(checkpoint, last)
    before = last.read_bytes()
    with pytest.raises(OutputError, match="is the checkpoint being exported"):
        export_checkpoint(last, last)
    with pytest.raises(OutputError, match="is the checkpoint being exported"):
        export_checkpoint(last, tmp_path / "." / "last.pt", overwrite=True)
    assert last.read_bytes() == before
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputError, match=f"^{tmp_path / 'out'} is a folder; give the weights file's name"):
        export_checkpoint(last, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "out"]  # no out.tmp
    taken = tmp_path / "w.pt"
    taken.write_bytes(b"someone's file")
    with pytest.raises(OutputError, match=f"^{taken}: exists; pass --overwrite to replace it$"):
        export_checkpoint(last, taken)
    assert taken.read_bytes() == b"someone's file"
    assert load_weights(export_checkpoint(last, taken, overwrite=True)).meta["step"] == 4


# -- 6. an interrupted run's log goes on without repeating steps ---------------------------------

def test_resume_after_an_interrupt_logs_each_step_once(config, tmp_path, monkeypatch):
    batch = Trainer._batch

    def interrupted(self, n):
        if self.stage == "derain" and self.step == 3:  # step 3 logged, the checkpoint is step 2's
            raise KeyboardInterrupt
        return batch(self, n)

    monkeypatch.setattr(Trainer, "_batch", interrupted)
    from pipeline.model import train as module  # one batch of the validation set: quick

    full = module.validation_batches
    monkeypatch.setattr(module, "validation_batches", lambda dirs, frames: full(dirs, frames, patch=32, count=4, batch=4))
    with pytest.raises(KeyboardInterrupt):
        train(str(config), progress=False, overrides={"val_every": 1})
    run = tmp_path / "run"
    assert log_steps(run)[-1] == ("derain", 3)
    assert [r.split(",")[0] for r in (run / "val.csv").read_text().split()] == ["1", "2", "3"]
    monkeypatch.setattr(Trainer, "_batch", batch)
    train(str(config), resume=True, progress=False, overrides={"val_every": 1})
    assert log_steps(run) == [("autoencoder", 1), ("autoencoder", 2)] + [("derain", i) for i in range(1, 5)]
    assert [r.split(",")[0] for r in (run / "val.csv").read_text().split()] == ["1", "2", "3", "4"]


def test_a_fresh_run_into_a_folder_holding_a_run_is_refused(config, tmp_path):
    """Without --resume a new run wrote over the last one's checkpoint and logged its steps again
    from 1 into the same log.csv."""
    train(str(config), progress=False)
    out_dir = next(p.parent for p in tmp_path.rglob("last.pt"))
    kept = (out_dir / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match=f"out_dir: {out_dir} holds a run's last.pt; pass --resume"):
        train(str(config), progress=False)
    assert (out_dir / "last.pt").read_bytes() == kept


def test_a_resumed_run_keeps_a_better_best_written_after_its_checkpoint(config, tmp_path, checkpoint):
    """The best score went back to the checkpoint's on resume, so best weights written after the
    checkpoint (then the run was stopped) could be replaced by worse ones."""
    (tmp_path / "run").mkdir()
    shutil.copy(checkpoint, tmp_path / "run" / "last.pt")
    export_checkpoint(checkpoint, tmp_path / "w.pt")
    blob = torch.load(tmp_path / "w.pt", weights_only=True)
    best = tmp_path / "run" / f"{blob['profile']}-best.pt"
    blob["meta"]["val_psnr"] = 99.0  # better than these few steps will reach
    torch.save(blob, best)
    train(str(config), resume=True, progress=False, overrides={"train.iters": 6, "val_every": 1})
    assert (tmp_path / "run" / "val.csv").exists()  # it did validate
    assert torch.load(best, weights_only=True)["meta"]["val_psnr"] == 99.0


def test_clips_from_a_paired_set_are_refused(config, tmp_path):
    """data.frames > 1 makes its clips from clean photos only: given pairs alone it failed at the
    first step; given both, the pairs sat unused."""
    rain, clean = tmp_path / "rain", tmp_path / "clean"
    images(rain, (48, 40)), images(clean, (48, 40))
    with pytest.raises(ConfigError, match="data.frames: 3 rains clips made from clean photos; a paired set has "
                                          "single images, drop data.paired"):
        train(str(config), progress=False, overrides={"data.paired": [[str(rain), str(clean)]], "data.frames": 3})
