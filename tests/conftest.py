"""Shared fixtures: a tiny PyAV-made clip, one local Ray per session, the shared data path."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/media.py, tests/probe.py

from media import make_video  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory):
    """The tests' ONNX exports (random weights, checkpoints) in a cache of their own, not the
    user's ~/.cache/derain (children and Ray workers inherit it)."""
    if "DERAIN_CACHE" not in os.environ:
        os.environ["DERAIN_CACHE"] = str(tmp_path_factory.mktemp("derain-cache"))
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray runtime for the whole session (start-up costs ~4 s and ~700 MB)."""
    import ray

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=512 * 2**20,
             log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def clip(tmp_path) -> Path:
    """24 frames of 96x64 H.264 with AAC audio and a variable frame rate."""
    return make_video(tmp_path / "clip.mp4", audio=True, vfr=True)


@pytest.fixture
def tiny_training(tmp_path, shared_data) -> tuple[Path, dict]:
    """A training config of a few steps of a width-4 network on Kodak24 (its file and its dict)."""
    import yaml

    cfg = {
        "network": {"type": "DerainNet", "width": 4},
        "data": {"clean_dirs": [str(shared_data / "clean_corpus" / "Kodak24")], "patch": 32},
        "autoencoder": {"iters": 2, "batch": 2},
        "train": {"iters": 4, "batch": 2},
        "checkpoint_every": 2,
        "threads": 1,
        "out_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg
