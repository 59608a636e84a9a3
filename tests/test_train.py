"""A short real training run: both stages, checkpoints, resume, CSV log, exported weights."""
import csv

import numpy as np
import pytest
import torch
import yaml

from pipeline.errors import ConfigError, WeightsError
from pipeline.model.train import train
from pipeline.model.weights import load_weights


@pytest.fixture
def config(tiny_training):
    return tiny_training


def log_rows(run):
    with open(run / "log.csv") as fh:
        return list(csv.DictReader(fh))


def test_two_stages_train_log_and_export(config):
    path, cfg = config
    out = train(str(path), progress=False)
    rows = log_rows(out.parent)
    assert [r["stage"] for r in rows] == ["autoencoder"] * 2 + ["derain"] * 4
    assert all(float(r["loss"]) == float(r["loss"]) for r in rows)  # no NaN
    # lr x0.2 at 25/50/75 % of the 4 derain steps
    assert [float(r["lr"]) for r in rows[2:]] == pytest.approx([1e-3, 2e-4, 4e-5, 8e-6])
    loaded = load_weights(out)
    assert loaded.profile == "full" and loaded.net.width == 4
    assert all(t.dtype == torch.float16 for t in torch.load(out, weights_only=True)["state_dict"].values()
               if t.is_floating_point())


def test_decoder_starts_from_the_autoencoder_and_the_autoencoder_stays_frozen(config):
    from pipeline.config import load_settings
    from pipeline.model.train import Trainer, TrainSettings

    path, _ = config
    t = Trainer(load_settings(TrainSettings, path), progress=False)
    t.run()
    ae_state = t.ae.state_dict()
    assert not any(p.requires_grad for p in t.ae.parameters())
    # The autoencoder was not updated in stage 2: its checkpointed weights equal the live ones.
    saved = torch.load(t.out / "last.pt", weights_only=True)["ae"]
    assert all(torch.equal(saved[k], ae_state[k]) for k in ae_state)


def test_resume_continues_from_the_last_checkpoint(config, tmp_path):
    path, cfg = config
    train(str(path), progress=False)
    run = tmp_path / "run"
    first = log_rows(run)
    # Ask for more iterations and resume: it continues at step 4, not from scratch.
    cfg["train"]["iters"] = 6
    path.write_text(yaml.safe_dump(cfg))
    train(str(path), resume=True, progress=False)
    rows = log_rows(run)
    assert rows[: len(first)] == first
    assert [int(r["step"]) for r in rows[len(first):]] == [5, 6]
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["stage"] == "derain" and state["step"] == 6 and "optim" in state and "rng" in state
    # the resumed steps follow the new length's schedule (milestones at steps 1, 3, 4 of 6)
    assert [float(r["lr"]) for r in rows[len(first):]] == pytest.approx([8e-6, 8e-6])


def test_a_checkpoint_exports_to_loadable_weights(config, tmp_path, capsys):
    from pipeline.cli import main

    path, _ = config
    train(str(path), progress=False)
    assert main(["export", str(tmp_path / "run" / "last.pt"), "-o", str(tmp_path / "mid.pt")]) == 0
    loaded = load_weights(tmp_path / "mid.pt")
    assert loaded.meta["step"] == 4 and loaded.net.width == 4


def test_resume_without_a_checkpoint_names_it(config):
    path, _ = config
    with pytest.raises(ConfigError, match="last.pt: no checkpoint"):
        train(str(path), resume=True, progress=False)


def test_a_bad_key_in_the_training_config_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: {iter: 5}\nnetwrok: {}\n")
    with pytest.raises(ConfigError) as err:
        train(str(path), progress=False)
    msg = str(err.value)
    assert f"{path}: train.iter: unknown key; did you mean 'iters'?" in msg
    assert "netwrok: unknown key; did you mean 'network'?" in msg


def test_frozen_batchnorm_and_pixel_loss(config):
    from pipeline.config import load_settings
    from pipeline.model.train import Trainer, TrainSettings

    path, _ = config
    s = load_settings(TrainSettings, path, {"train.freeze_bn_from": 0.0, "loss.pixel": 1.0})
    t = Trainer(s, progress=False)
    t.run()
    norm = t.net.enc1.norm1
    # Frozen from the first step: the encoder's statistics never moved from their initial values.
    assert torch.equal(norm.running_mean, torch.zeros_like(norm.running_mean))
    assert norm.weight.grad is not None  # while its affine weights were trained


def test_worker_processes_make_the_same_batches_as_the_training_process(shared_data):
    from pipeline.model.prefetch import BatchStream

    args = ([str(shared_data / "clean_corpus" / "Kodak24")], [], 32, {"heavy": 1.0}, 0.5)
    inline, pool = BatchStream(args, seed=3), BatchStream(args, seed=3, workers=2)
    try:
        for stage, step in [(0, 0), (0, 1), (1, 0), (1, 7)]:  # (1, 7): a jump, as after --resume
            a, b = inline.next(stage, step, 2), pool.next(stage, step, 2)
            assert all(np.array_equal(x, y) for x, y in zip(a, b))
        assert not np.array_equal(inline.next(1, 8, 2)[0], inline.next(1, 9, 2)[0])
    finally:
        pool.close()


def test_max_seconds_stops_with_a_checkpoint_and_resume_finishes(config, tmp_path, capsys):
    from pipeline.cli import main

    path, _ = config
    run = tmp_path / "run"
    # Stop after the first step; the override proves --set reaches the settings.
    assert main(["train", "--config", str(path), "--max-seconds", "0", "--set", "train.iters=5"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 1
    assert load_weights(run / "full.pt").meta["iters"] == 1  # the weights so far are exported too
    assert main(["train", "--config", str(path), "--resume", "--set", "train.iters=5"]) == 0
    rows = log_rows(run)
    assert [(r["stage"], int(r["step"])) for r in rows] == [("autoencoder", 1), ("autoencoder", 2)] + [
        ("derain", i) for i in range(1, 6)]


def test_a_time_budget_sets_the_schedule_by_seconds_trained(config):
    from pipeline.config import load_settings
    from pipeline.model.train import Trainer, TrainSettings

    path, _ = config
    s = load_settings(TrainSettings, path, {"train.seconds": 1.5, "train.iters": 0})
    t = Trainer(s, progress=False)
    t.run()
    rows = [r for r in log_rows(t.out) if r["stage"] == "derain"]
    assert t.elapsed >= 1.5 and len(rows) == t.step >= 2
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] == pytest.approx(1e-3) and lrs == sorted(lrs, reverse=True) and lrs[-1] < 1e-3


def test_a_bad_set_override_names_it(config):
    from pipeline.cli import main

    path, _ = config
    assert main(["train", "--config", str(path), "--set", "train.iters"]) == 1


def test_fine_tuning_starts_from_the_given_weights_and_keeps_their_decoder(config, tmp_path):
    from pipeline.config import load_settings
    from pipeline.model.train import Trainer, TrainSettings

    path, _ = config
    first = train(str(path), progress=False)
    s = load_settings(TrainSettings, path, {"init": str(first), "autoencoder.iters": 0, "train.iters": 0, "loss.embed": 0,
                                            "out_dir": str(tmp_path / "ft")})
    t = Trainer(s, progress=False)
    t.run()
    start = load_weights(first).net.state_dict()
    # No step taken: every weight, the decoder's included, is the init's, not the fresh autoencoder's.
    assert all(torch.equal(v.float(), start[k].float()) for k, v in t.net.state_dict().items())


def test_jpeg_augmentation_compresses_the_rainy_patch_only(shared_data):
    from pipeline.model.data import PatchSampler

    args = ([str(shared_data / "clean_corpus" / "Kodak24")], [], 64, {"medium": 1.0}, 0.5)
    plain, jpeg = PatchSampler.from_dirs(*args), PatchSampler.from_dirs(*args, jpeg=1.0, jpeg_quality=(30, 30))
    (r0, c0), (r1, c1) = plain.sample(np.random.default_rng(5)), jpeg.sample(np.random.default_rng(5))
    assert np.array_equal(c0, c1)  # the target stays clean
    assert 0 < np.abs(r0 - r1).mean() < 0.05  # same rain, changed by the codec, not replaced


def test_an_unknown_rain_style_or_upsampling_names_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: {rain_mix: {sleet: 1.0}, patch: 30}\n")
    with pytest.raises(ConfigError) as err:
        train(str(path), progress=False)
    assert (f"{path}: data.rain_mix: unknown style(s) sleet; known: light, faint, drizzle, medium, heavy, dense, video"
            in str(err.value))
    assert f"{path}: data.patch: must be a multiple of 8" in str(err.value)
    path.write_text("scale: 0.5\nupsample: nearest\n")
    with pytest.raises(ConfigError, match=r"upsample: must be one of bilinear, guided \(got 'nearest'\)"):
        train(str(path), progress=False)


def test_guided_upsampling_trains_and_is_exported(config, tmp_path):
    path, _ = config
    out = train(str(path), progress=False, overrides={"scale": 0.5, "upsample": "guided", "profile": "fast",
                                                     "data.rain_mix": {"video": 1.0}})
    loaded = load_weights(out)
    assert (loaded.profile, loaded.scale, loaded.upsample) == ("fast", 0.5, "guided")


def test_a_fine_tune_scores_its_starting_weights_first(config, tmp_path):
    """Step 0 of a fine-tune is its init on the validation set, so the best it exports is at
    least as good as where it started (a run that only got worse exports the start itself)."""
    path, _ = config
    first = train(str(path), progress=False)
    out = tmp_path / "ft"
    train(str(path), progress=False, overrides={"init": str(first), "autoencoder.iters": 0, "train.iters": 2,
                                                "loss.embed": 0, "val_every": 1, "out_dir": str(out)})
    rows = [line.split(",") for line in (out / "val.csv").read_text().split()]
    assert [int(r[0]) for r in rows] == [0, 1, 2]
    best = torch.load(out / "full-best.pt", map_location="cpu", weights_only=True)
    assert best["meta"]["val_psnr"] == pytest.approx(max(float(r[2]) for r in rows), abs=1e-4)


def test_a_fresh_validation_draw_has_other_crops_of_the_same_photos(shared_data):
    """draw 0 is what the trainer scores (fixed); another draw differs, so a checkpoint chosen as
    the best on draw 0 can be confirmed on crops it was not picked on (scripts/select-weights.py)."""
    from pipeline.model.valset import validation_batches

    clean = [str(shared_data / "clean_corpus")]
    first, again = validation_batches(clean, count=16), validation_batches(clean, count=16, draw=0)
    fresh = validation_batches(clean, count=16, draw=1)
    assert np.array_equal(first[0][0], again[0][0])
    assert first[0][0].shape == fresh[0][0].shape and not np.array_equal(first[0][1], fresh[0][1])


def test_the_consistency_loss_compares_a_clips_two_rain_draws(config, tmp_path):
    """data.twins with loss.consistency: each step logs how far apart the derained twins are (and
    trains on it); either key without what it needs is refused, naming it."""
    path, _ = config
    temporal = {"network": {"type": "TemporalDerainNet", "width": 4, "frames": 3}, "data.frames": 3,
                "autoencoder.iters": 0, "train.iters": 2, "loss.embed": 0}
    out = train(str(path), progress=False, overrides={**temporal, "data.twins": True, "loss.consistency": 2.0})
    rows = log_rows(out.parent)
    assert len(rows) == 2 and all(0 < float(r["consist"]) < 1 for r in rows)
    # A single-frame network's twins are one crop rained twice.
    out = train(str(path), progress=False, overrides={"autoencoder.iters": 0, "train.iters": 2, "loss.embed": 0,
                                                     "data.twins": True, "loss.consistency": 2.0,
                                                     "out_dir": str(tmp_path / "single")})
    assert len(rows := log_rows(out.parent)) == 2 and all(0 < float(r["consist"]) < 1 for r in rows)
    with pytest.raises(ConfigError, match="loss.consistency: compares a clip's two rain draws; set data.twins: true"):
        train(str(path), progress=False, overrides={**temporal, "loss.consistency": 1.0})
    with pytest.raises(ConfigError, match="data.twins: rains clean photos twice; a paired set"):
        train(str(path), progress=False, overrides={"data.twins": True, "data.paired": [["a", "b"]]})


def test_the_embedding_loss_needs_an_autoencoder(config, tmp_path):
    """A fine-tune that skips the autoencoder stage and names none would pull the encoder toward
    an untrained network's code; refused, naming both ways out. A named one that is not there
    (runs/ is not kept with the repository) is one line naming it."""
    path, _ = config
    with pytest.raises(ConfigError, match="loss.embed: no autoencoder to embed with .* or set loss.embed: 0"):
        train(str(path), progress=False, overrides={"autoencoder.iters": 0})
    missing = tmp_path / "autoencoder.pt"
    with pytest.raises(WeightsError, match=f"{missing}: init_autoencoder file not found"):
        train(str(path), progress=False, overrides={"autoencoder.iters": 0, "init_autoencoder": str(missing)})
