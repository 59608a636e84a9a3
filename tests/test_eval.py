"""`derain eval` on the real rain sets, and its errors."""
import json
import shutil

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.images import pair_files, write_rgb
from pipeline.model.evaluate import psnr, ssim_y, y_channel


def run_cli(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_y_channel_psnr_ssim_conventions():
    rgb = np.zeros((16, 16, 3), np.uint8)
    assert y_channel(rgb)[0, 0] == 16 and y_channel(rgb + 255)[0, 0] == 235
    a = np.random.default_rng(0).integers(0, 255, (32, 32)).astype(np.float64)
    assert psnr(a, a + 1) == pytest.approx(48.13, abs=0.01)
    assert ssim_y(a, a) == pytest.approx(1.0)
    assert ssim_y(a, a[::-1]) < 0.2


def test_pairs_rain_and_norain_names(shared_data):
    pairs = pair_files(shared_data / "rain12" / "rain", shared_data / "rain12" / "norain")
    assert len(pairs) == 12 and pairs[0][0].name == "rain-001.png" and pairs[0][1].name == "norain-001.png"


def test_identity_on_rain12_reproduces_the_input_figures(shared_data, capsys, tmp_path):
    csv_path = tmp_path / "per-image.csv"
    code, out, _ = run_cli(capsys, "eval", "--rain", str(shared_data / "rain12" / "rain"), "--clean",
                           str(shared_data / "rain12" / "norain"), "--profile", "identity", "--json",
                           "--csv", str(csv_path))
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["n"] == 12
    assert result["input_psnr"] == pytest.approx(30.14, abs=0.02)  # the published input figure
    assert result["psnr"] == result["input_psnr"] and result["ssim"] == result["input_ssim"]
    assert len(csv_path.read_text().splitlines()) == 13


def test_equal_names_pair_video_frames(shared_data, capsys, tmp_path):
    rain, clean = tmp_path / "rain", tmp_path / "clean"
    rain.mkdir(), clean.mkdir()
    for name in ("00001.jpg", "00002.jpg"):
        shutil.copy(shared_data / "ntu_synthetic_video" / "a1_Rain" / name, rain)
        shutil.copy(shared_data / "ntu_synthetic_video" / "a1_GT" / name, clean)
    code, out, _ = run_cli(capsys, "eval", "--rain", str(rain), "--clean", str(clean), "--profile", "identity",
                           "--json", "--csv", str(tmp_path / "e.csv"))
    assert code == 0 and json.loads(out.splitlines()[-1])["n"] == 2


@pytest.fixture
def pair_dirs(tmp_path):
    rain, clean = tmp_path / "rain", tmp_path / "clean"
    rain.mkdir(), clean.mkdir()
    img = np.full((16, 16, 3), 100, np.uint8)
    write_rgb(rain / "rain-1.png", img)
    write_rgb(clean / "norain-1.png", img)
    return rain, clean


@pytest.mark.parametrize("breakage,match", [
    ("unmatched", "unmatched file.*rain-2.png"),
    ("size", "rain-1.png is 16x16 but .*norain-1.png is 8x8"),
    ("not-image", "rain-1.png: not a readable image"),
    ("tiny", r"rain-1.png is 5x3: smaller than SSIM's 11x11 window"),
])
def test_bad_pairs_name_the_file(pair_dirs, capsys, breakage, match, tmp_path):
    rain, clean = pair_dirs
    if breakage == "unmatched":
        write_rgb(rain / "rain-2.png", np.zeros((16, 16, 3), np.uint8))
    elif breakage == "size":
        write_rgb(clean / "norain-1.png", np.zeros((8, 8, 3), np.uint8))
    elif breakage == "tiny":
        write_rgb(rain / "rain-1.png", np.zeros((3, 5, 3), np.uint8))
        write_rgb(clean / "norain-1.png", np.zeros((3, 5, 3), np.uint8))
    else:
        (rain / "rain-1.png").write_bytes(b"this is not a png")
    code, _, err = run_cli(capsys, "eval", "--rain", str(rain), "--clean", str(clean), "--profile", "identity",
                           "--csv", str(tmp_path / "e.csv"))
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    import re
    assert re.search(match, err), err


@pytest.mark.parametrize("content,match", [(None, "weights file not found"),
                                           (b"garbage", "not a weights file")])
def test_missing_or_corrupt_weights_name_the_file(pair_dirs, capsys, tmp_path, content, match):
    weights = tmp_path / "w.pt"
    if content is not None:
        weights.write_bytes(content)
    rain, clean = pair_dirs
    code, _, err = run_cli(capsys, "eval", "--rain", str(rain), "--clean", str(clean), "--weights", str(weights))
    assert code == 1 and str(weights) in err and match in err


@pytest.mark.parametrize("flag, where, says", [("--csv", "folder", "is a folder; --csv takes a file name"),
                                               ("--csv", "missing/e.csv", "cannot write the CSV there"),
                                               ("--save", "afile", "is a file; give --save a folder")])
def test_output_paths_are_checked_before_the_work(pair_dirs, capsys, tmp_path, flag, where, says):
    """A bad --csv failed after the whole evaluation (written at the end), as a traceback."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("mine")
    rain, clean = pair_dirs
    code, _, err = run_cli(capsys, "eval", "--rain", str(rain), "--clean", str(clean), "--profile", "identity",
                           flag, str(tmp_path / where))
    assert code == 1 and len(err.strip().splitlines()) == 1 and f"{tmp_path / where}: {says}" in err


def test_the_csv_is_written_row_by_row(pair_dirs, capsys, tmp_path):
    rain, clean = pair_dirs
    write_rgb(rain / "rain-2.png", np.full((16, 16, 3), 90, np.uint8))
    write_rgb(clean / "norain-2.png", np.full((16, 16, 3), 100, np.uint8))
    code, _, _ = run_cli(capsys, "eval", "--rain", str(rain), "--clean", str(clean), "--profile", "identity",
                         "--csv", str(tmp_path / "e.csv"))
    rows = (tmp_path / "e.csv").read_text().splitlines()
    assert code == 0 and rows[0].startswith("name,input_psnr") and len(rows) == 3


@pytest.mark.parametrize("flag, where", [("--save", "rain"), ("--save", "clean"), ("--csv", "rain/rain-1.png")])
def test_outputs_inside_the_input_folders_are_refused(pair_dirs, capsys, tmp_path, flag, where):
    """--save into the rainy folder replaced its images with derained ones; --csv an input image too."""
    rain, clean = pair_dirs
    before = (rain / "rain-1.png").read_bytes()
    code, _, err = run_cli(capsys, "eval", "--rain", str(rain), "--clean", str(clean), "--profile", "identity",
                           flag, str(tmp_path / where), *(["--csv", "/dev/null"] if flag == "--save" else []))
    assert code == 1 and f"is in the input folder" in err and f"give {flag} a path outside it" in err
    assert (rain / "rain-1.png").read_bytes() == before
