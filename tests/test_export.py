"""`derain export --onnx`: the standalone graph runs in onnxruntime and derains as the pipeline does."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline.model.align import align_windows, window_flows
from pipeline.model.inference import Derainer, window_offsets, windows

ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("profile", ["full", "fast", "temporal-fast"])
def test_exported_graph_matches_the_pipeline_at_two_sizes(tmp_path, profile):
    out = tmp_path / f"{profile}.onnx"
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", "export", "--onnx", str(out), "--profile", profile,
                          "--json"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout.strip().splitlines()[-1])
    assert info["input"] == "rainy" and info["output"] == "derained" and out.stat().st_size > 10_000
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    derainer = Derainer.load(profile, device="cpu", dtype="fp32", runtime="torch")
    m = info["size_multiple"]
    rng = np.random.default_rng(1)
    for batch, h, w in ((1, 3 * m, 4 * m), (2, 5 * m, 3 * m)):  # batch, height and width all change
        frames = (rng.random((batch, h, w, 3)) * 255).astype(np.uint8)
        want = derainer(frames).frames.astype(int)
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255)
        if info["input_channels"] > 3:  # a temporal profile takes each frame's window, aligned
            offsets = window_offsets(info["input_channels"] // 3, causal=False)
            flows = window_flows(frames, slice(0, batch), offsets, derainer.align)
            x = align_windows(windows(x, slice(0, batch), offsets), torch.from_numpy(flows))
        (got,) = session.run(None, {"rainy": x.numpy()})
        got = np.round(np.clip(got, 0, 1) * 255).astype(int).transpose(0, 2, 3, 1)
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1  # float rounding only
        assert np.abs(got - frames.astype(int)).mean() > 0.1  # and it did derain something


def test_export_refuses_an_unknown_profile(tmp_path):
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", "export", "--onnx", str(tmp_path / "x.onnx"),
                          "--profile", "nope"], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "nope" in run.stderr and not (tmp_path / "x.onnx").exists()


def test_export_makes_a_missing_folder_and_refuses_a_file_that_is_no_checkpoint(tmp_path, capsys):
    from pipeline.cli import main

    assert main(["export", "--onnx", str(tmp_path / "new" / "x.onnx"), "--profile", "fast"]) == 0
    assert (tmp_path / "new" / "x.onnx").stat().st_size > 10000 and not list((tmp_path / "new").glob(".*"))
    not_one = tmp_path / "clip.mp4"
    not_one.write_bytes(b"\x00\x00\x00\x18ftypmp42 not a checkpoint")
    capsys.readouterr()
    assert main(["export", str(not_one), "-o", str(tmp_path / "w.pt")]) != 0
    err = capsys.readouterr().err
    assert f"{not_one}: not a training checkpoint" in err and "Traceback" not in err
    assert not (tmp_path / "w.pt").exists()


def test_an_existing_onnx_file_is_replaced_only_with_overwrite(tmp_path, capsys):
    """`export --onnx` replaced any file it was pointed at."""
    from pipeline.cli import main

    taken = tmp_path / "x.onnx"
    taken.write_text("mine")
    assert main(["export", "--onnx", str(taken), "--profile", "fast"]) == 1
    assert f"{taken}: exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert taken.read_text() == "mine"
    assert main(["export", "--onnx", str(taken), "--profile", "fast", "--overwrite"]) == 0
    assert taken.stat().st_size > 10000
