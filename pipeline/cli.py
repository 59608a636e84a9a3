"""The `derain` command: parses arguments and calls library code, nothing more.

An expected failure (a `DerainError`) prints one line on stderr and exits 1 (with
`--json`, also `{"ok": false, "error": ...}` on stdout); `--debug` shows the traceback
instead. SIGTERM and SIGHUP end a run as Ctrl-C does (partial outputs removed), with exit 143 / 129.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

from .errors import DerainError
from .signals import stop_signals


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread as Ctrl-C raises KeyboardInterrupt: the same
    cleanup (a closed terminal or ssh session sends SIGHUP, whose default would leave partials)."""


_terminated: list[int] = []  # the signal; Ray re-raises an exception from a handler as a plain KeyboardInterrupt
_stopping: list[float] = []  # when the first stop signal came
FORCE_AFTER_S = 5.0  # a stop signal this long after the first quits at once (a cleanup that hangs)


def _raise_terminated(signum, frame):
    """The first SIGINT/SIGTERM/SIGHUP raises; those that follow let the cleanup it started
    finish (raised inside it, they cut it short: a traceback, exit 1), unless it hangs."""
    if _stopping:
        if time.monotonic() - _stopping[0] >= FORCE_AFTER_S:
            os._exit(128 + signum)  # the next run removes what this one leaves half-written
        return
    _stopping.append(time.monotonic())
    if signum == signal.SIGINT:
        raise KeyboardInterrupt()
    _terminated.append(signum)
    raise Terminated()


def _leave_now(code: int) -> NoReturn:
    """End an interrupted run here, its outputs already cleaned up: Ray's processes stopped, then
    no interpreter exit hooks. Ray's core library, stopped mid-call, can crash the process on its
    way out (exit -11 seconds later, not 143 or 130); and the interpreter's teardown puts the
    default handlers back, so one more Ctrl-C there killed the process (exit -2, after the
    goodbye line)."""
    ray = sys.modules.get("ray")
    if ray is not None:
        ray.shutdown(wait_for_processes=True)
    with contextlib.suppress(OSError):  # a hung-up terminal
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _settings(args, **overrides):
    from .run_config import load_run_settings

    flags = {
        "model.profile": getattr(args, "profile", None),
        "model.weights": getattr(args, "weights", None),
        "model.device": getattr(args, "device", None),
        "model.dtype": getattr(args, "dtype", None),
        "model.runtime": getattr(args, "runtime", None),
        "workers.backend": getattr(args, "backend", None),
        "workers.count": getattr(args, "workers", None),
        "workers.address": getattr(args, "address", None),
        "batching.max_batch": getattr(args, "batch", None),
        "encode.codec": getattr(args, "codec", None),
        "encode.crf": getattr(args, "crf", None),
        "encode.preset": getattr(args, "preset", None),
        **overrides,
    }
    return load_run_settings(getattr(args, "config", None), flags)


def _is_live_run(args) -> bool:
    from .sources.live import is_live

    return bool(args.realtime or not args.input or is_live(args.input))


def cmd_run_live(args) -> int:
    from .cameras import run_live

    settings = _settings(args, **{
        "live.realtime": args.realtime or None, "live.preview": args.preview,
        "live.preview_token": args.preview_token, "live.record": args.record,
        "live.restream": args.restream or None, "live.snapshot": args.snapshot,
        "live.transport": args.transport, "live.duration_s": args.duration_s, "live.segment_s": args.segment_s,
        "batching.queue_size": args.queue_size, "batching.policy": args.policy,
        "batching.max_wait_ms": args.max_wait_ms, "live.first_tries": args.tries, "model.delay_ms": args.delay_ms})
    _say_unused_flags(args, settings)
    result = run_live([args.input] if args.input else [], settings, output=args.output, overwrite=args.overwrite)
    for cam in result["cameras"]:
        if cam["error"]:
            print(f"derain run: camera {cam['name']}: {cam['error']}", file=sys.stderr)
        if not args.json:
            lat = cam["latency"]
            print(f"{cam['name']}: {cam['frames_out']} out, {cam['dropped']} dropped of {cam['frames_in']} in, "
                  f"{cam['reconnects']} reconnects, delay p50 {lat.get('p50', 0)} s p95 {lat.get('p95', 0)} s"
                  + _failures(cam["plugin_errors"], cam["output_errors"]))
    if args.json:
        print(json.dumps(result))
    return 1 if any(cam["error"] for cam in result["cameras"]) else 0


def _say_unused_flags(args, settings) -> None:
    """Live flags that shape an output the run does not have: said, not dropped in silence."""
    live = settings.live
    for flag, given, output, present in (
            ("--segment-s", args.segment_s, "--record", live.record or any(c.record for c in live.cameras)),
            ("--preview-token", args.preview_token, "--preview", live.preview)):
        if given and not present:
            logging.getLogger(__name__).warning("%s: shapes %s, which this run does not have; ignored", flag, output)


def _failures(plugin_errors: int, output_errors: int = 0) -> str:
    """What the summary line adds when calls failed on the way (each was logged once already)."""
    said = [f"{n} {what} failed" for n, what in ((plugin_errors, "plugin calls"), (output_errors, "output batches"))
            if n]
    return f"; {', '.join(said)} (see the log)" if said else ""


def cmd_run(args) -> int:
    from .files import derain_file

    if args.realtime and args.input and Path(args.input).is_dir():
        _fail(args, f"--realtime: plays a video file as a camera; {args.input} is a folder (derain it without "
                    "--realtime, to a video with --fps)")
        return 2
    if args.fps and args.input and not Path(args.input).exists() and not _is_live_run(args):
        _fail(args, f"{args.input}: file or folder not found")
        return 2
    if args.fps and not (args.input and Path(args.input).is_dir()):
        _fail(args, f"--fps: the frame rate of a folder of images; {args.input or 'a camera'} has its own "
                    "timestamps, which are kept")
        return 2
    if _is_live_run(args):
        return cmd_run_live(args)
    if not args.output:
        _fail(args, "-o/--output is required for a file input")
        return 2
    live_only = [f"--{k.replace('_', '-')}" for k in LIVE_ONLY if getattr(args, k, None)]
    if live_only:
        _fail(args, f"{', '.join(live_only)}: for live inputs only (a URL, a /dev/video device, or a file "
                    "with --realtime); a file run would ignore it")
        return 2
    stats = derain_file(args.input, args.output, _settings(args, **{
        "decode.fps": args.fps, "model.delay_ms": args.delay_ms, "batching.queue_size": args.queue_size,
        "batching.max_wait_ms": args.max_wait_ms}),
                        overwrite=args.overwrite,
                        progress=not args.json and sys.stderr.isatty())
    summary = {"input": args.input, "output": args.output, **stats.as_dict(),
               "warnings": list(getattr(stats, "warnings", []))}  # also logged, one line each
    print(json.dumps(summary) if args.json else
          f"{args.output}: {stats.frames_out} frames in {stats.seconds:.1f} s ({stats.fps:.2f} fps)"
          + _failures(stats.plugin_errors))
    return 0


def cmd_archive(args) -> int:
    from .archive import run_archive

    report = run_archive(args.input, args.output, _settings(args, **{
        "archive.workers": args.file_workers, "archive.streams_per_worker": args.streams_per_worker,
        "archive.shared_model": True if args.shared_model else None}),
        report_path=args.report, overwrite=args.overwrite,
        progress=not args.json)
    where = f"not written ({report['report_error']})" if report["report_error"] else report["path"]
    print(json.dumps({**report["summary"], "report_error": report["report_error"]}) if args.json else
          f"{report['summary']['done']} done, {report['summary']['failed']} failed, "
          f"{report['summary']['skipped']} skipped; report: {where}")
    return 0 if report["summary"]["failed"] == 0 and not report["report_error"] else 1


def cmd_train(args) -> int:
    from .model.train import train

    overrides = dict(_parse_set(item) for item in args.set or [])
    out = train(args.config, resume=args.resume, overrides=overrides,
                progress=sys.stderr.isatty() or args.progress, max_seconds=args.max_seconds)
    print(f"weights written to {out}")
    return 0


def _size(text: str) -> str:
    """WxH, each side 16 to 16384 pixels (the synthetic rain needs room); argparse says a bad one in one line."""
    w, x, h = text.lower().partition("x")
    if not (x and w.isdigit() and h.isdigit() and 16 <= int(w) <= 16384 and 16 <= int(h) <= 16384):
        raise argparse.ArgumentTypeError(f"{text!r}: must be WxH, each 16 to 16384 pixels (e.g. 640x360)")
    return f"{int(w)}x{int(h)}"


def _clip_size(text: str) -> str:
    """A generated clip's WxH: even too, as its yuv420p needs (x264 refused 161x97 mid-bench)."""
    size = _size(text)
    if any(int(side) % 2 for side in size.split("x")):
        raise argparse.ArgumentTypeError(f"{text!r}: the generated clip is yuv420p: width and height must be even")
    return size


def _sizes(text: str) -> str:
    return ",".join(_size(part.strip()) for part in text.split(","))


def _count(low: int, high: int = 10**9):
    def count(text: str) -> int:
        if not (text.strip().isdigit() and low <= int(text) <= high):
            raise argparse.ArgumentTypeError(f"{text!r}: must be a whole number from {low} to {high}")
        return int(text)
    return count


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 10**7:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number > 0")
    return value


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a JSON object, e.g. '{{\"scale\": 1.05}}'")
    return value


def _parse_set(item: str) -> tuple[str, object]:
    """`data.workers=8` -> ("data.workers", 8): the value is read as YAML."""
    import yaml

    from .errors import ConfigError

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.batch=32")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value is not YAML ({str(exc).splitlines()[0]})") from None
    if parsed is None:  # skipped as an unset flag would be
        raise ConfigError(f"--set {item!r}: " + ("no value after '='" if not value.strip() else
                          "null unsets nothing: a --set value replaces the config's; remove the key there instead"))
    return key.strip(), parsed


def cmd_export(args) -> int:
    if args.onnx:
        from .model.export import export_onnx

        info = export_onnx(args.onnx, args.profile, args.weights, overwrite=args.overwrite)
        print(json.dumps(info) if args.json else
              f"{info['path']}: {info['profile']}, input {info['input']} (N, {info['input_channels']}, H, W) float RGB "
              f"in [0, 1], output {info['output']} (N, 3, H, W); H and W multiples of {info['size_multiple']}")
        return 0
    if not (args.checkpoint and args.output):
        _fail(args, "give a CHECKPOINT and -o OUT (fp16 weights), or --onnx OUT.onnx")
        return 2
    from .model.train import export_checkpoint

    print(f"weights written to {export_checkpoint(args.checkpoint, args.output, overwrite=args.overwrite)}")
    return 0


def cmd_eval(args) -> int:
    from .model.evaluate import evaluate
    from .model.inference import Derainer

    derainer = Derainer.load(profile=args.profile, weights=args.weights, device=args.device, dtype=args.dtype,
                             runtime=args.runtime or "auto", align=args.align,
                             deflicker={"auto": "auto", "on": True, "off": False}[args.deflicker])
    csv_path = args.csv or (Path(args.rain).name + "-eval.csv")
    video = {"auto": None, "on": True, "off": False}[args.video]
    result = evaluate(args.rain, args.clean, derainer, csv_path=csv_path, save_dir=args.save,
                      progress=not args.json and sys.stderr.isatty(), video=video)
    result["csv"] = str(csv_path)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['n']} images: input {result['input_psnr']:.2f} dB / {result['input_ssim']:.4f} -> "
              f"ours {result['psnr']:.2f} dB / {result['ssim']:.4f} (Y channel); per image: {csv_path}")
        if result["video"]:
            print(f"warping error (flicker): input {result['input_warp_error']:.5f}, ours {result['warp_error']:.5f}, "
                  f"clean {result['clean_warp_error']:.5f}")
    return 0


def cmd_bench(args) -> int:
    if args.memory:
        from .bench.memory import run_memcheck

        result = run_memcheck(args.minutes, args.size if args.size != "640x360" else "1920x1080")
    elif args.model_only:
        from .bench.speed import model_only

        result = model_only(_settings(args).model, args.sizes.split(",") if args.sizes else ("640x360", "1280x720"))
    elif args.streams is not None:
        from .bench.streams import run_streams_bench

        result = run_streams_bench(_settings(args), args.streams, args.size, args.frames)
    elif args.live:
        from .bench.live import run_live_bench

        settings = _settings(args, **{"model.delay_ms": args.delay_ms or None, "workers.backend": args.backend or "local",
                                      "live.duration_s": float(args.duration_s)})
        result = run_live_bench(settings, args.size, args.fps)
        if not args.json:
            print(f"delay p50 {result['delay_p50_s']} s, p95 {result['delay_p95_s']} s, "
                  f"{result['output_fps']} fps out, drop rate {result['drop_rate']}")
    else:
        from .bench.speed import run_bench

        result = run_bench(_settings(args), args.size, args.frames, archive=not args.no_archive)
        if not args.json:
            print(json.dumps(result, indent=2))
    if args.json:
        print(json.dumps(result))
    return 0


def cmd_rainmeter(args) -> int:
    from .model.rainmeter import measure
    from .sources.files import open_source

    failed = 0
    for path in args.paths:  # one bad path is said and the others measured, as an archive goes on
        try:
            result = {"path": path, **measure(f.image for f in open_source(path))}
        except DerainError as exc:
            failed += 1
            print(f"derain rainmeter: error: {exc}", file=sys.stderr)
            if args.json:
                print(json.dumps({"path": path, "ok": False, "error": str(exc)}), flush=True)
            continue
        if not args.per_frame:
            result.pop("per_frame")
        changing = ("" if result["rain_changing"] is None else  # one frame, or frames of several sizes
                    f", changing {result['rain_changing']}")
        print(json.dumps(result) if args.json else f"{path}: rain left {result['rain_left']}{changing} "
              f"(Y levels of thin bright structure, over {result['frames']} frames)")
    return 1 if failed else 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    paths = run_demo(args.out, profile=args.profile, overwrite=True)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_eval_detect(args) -> int:
    from .bench.detection import eval_detect, markdown_table
    from .model.inference import Derainer

    derainer = Derainer.load(profile=args.profile, weights=args.weights, device=args.device, dtype=args.dtype,
                             runtime=args.runtime or "auto")
    detector = {"use": args.detector, "with": args.detector_with}
    results = eval_detect(args.data, derainer, detector, sets=args.set, stride=args.stride)
    print(json.dumps(results) if args.json else markdown_table(results))
    return 0


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=["full", "fast", "temporal", "temporal-fast", "identity"],
                   help="model profile (default: full; temporal ones see each frame's neighbours)")
    p.add_argument("--weights", help="a weights file instead of the shipped one")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--runtime", choices=["auto", "torch", "onnxruntime"],
                   help="model runtime (auto: onnxruntime for fp32 on CPUs, else torch)")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a YAML settings file (configs/*.yaml); flags override it")
    _add_model_flags(p)
    p.add_argument("--backend", choices=["ray", "local"], help="worker pool (default: ray)")
    p.add_argument("--workers", type=int, help="model workers (default: one per GPU, else one CPU worker per node)")
    p.add_argument("--address", help="join a running Ray cluster: auto or HOST:6379 (see the README)")
    p.add_argument("--batch", type=int, help="frames per batch (default: auto: files 8 on CUDA, 1 on CPUs, 2 fast on CPUs; cameras 1)")
    p.add_argument("--codec", choices=["auto", "h264", "h265", "hevc", "av1", "vp9"],
                   help="video codec written (default auto: vp9 into .webm, else h264)")
    p.add_argument("--crf", type=int, help="constant quality in the codec's own scale, lower is better "
                                           "(default auto: x264 12, x265 15, vp9 14, av1 10)")
    p.add_argument("--preset")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--json", action="store_true", help="print one JSON summary line")


# the live group's flags that a file run has no use for (--delay-ms, --queue-size, --max-wait-ms serve both)
LIVE_ONLY = ("preview", "preview_token", "record", "segment_s", "restream", "snapshot", "transport", "duration_s",
             "tries", "policy")  # a file keeps every frame: its queue blocks


def _add_live_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("live inputs (see docs/LIVE.md)")
    g.add_argument("--realtime", action="store_true", help="play a file at its own rate, as a camera")
    g.add_argument("--preview", metavar="HOST:PORT", help="serve a side-by-side page and /metrics")
    g.add_argument("--preview-token", metavar="TOKEN",
                   help="require ?token=TOKEN or 'Authorization: Bearer TOKEN' on every preview request "
                        "(or set DERAIN_PREVIEW_TOKEN)")
    g.add_argument("--record", metavar="DIR", help="record rolling segments into DIR")
    g.add_argument("--segment-s", type=float, help="length of a recorded segment (default 60)")
    g.add_argument("--restream", action="append", metavar="URL",
                   help="rtsp://... push, udp://HOST:PORT, or serve on tcp://HOST:PORT / http://HOST:PORT")
    g.add_argument("--snapshot", metavar="DIR", help="write a JPEG every live.snapshot_every_s into DIR")
    g.add_argument("--transport", choices=["tcp", "udp"], help="RTSP transport (default tcp)")
    g.add_argument("--duration-s", type=float, help="stop after this many seconds")
    g.add_argument("--queue-size", type=int, help="frames held before the oldest is dropped")
    g.add_argument("--policy", choices=["drop-oldest", "drop-newest", "block"])
    g.add_argument("--max-wait-ms", type=float, help="cut a partial batch after this long")
    g.add_argument("--tries", type=int, help="tries for a first connection (default 3)")
    g.add_argument("--delay-ms", type=float, help="identity profile: sleep per frame (a slow stand-in)")


class _BadArguments(SystemExit):
    def __init__(self, prog: str, message: str):
        super().__init__(2)
        self.prog, self.message = prog, message


class _Parser(argparse.ArgumentParser):
    """argparse, whose errors `main` also says as a --json caller's JSON line (it got nothing)."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        raise _BadArguments(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="derain", description="Remove rain from video, live or in bulk.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="derain a video file or image folder, or a live camera (URL, /dev/videoN)")
    p.add_argument("input", nargs="?", help="file, folder, URL or /dev/videoN (none: live.cameras of --config)")
    p.add_argument("-o", "--output", help="output file or folder (optional for live inputs)")
    p.add_argument("--fps", metavar="RATE", help="a folder of images' frame rate, e.g. 24 or 30000/1001 "
                                                 "(default 25; decode.fps)")
    _add_run_flags(p)
    _add_live_flags(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("archive", help="derain every video of a folder tree, in parallel, resumably")
    p.add_argument("input")
    p.add_argument("output")
    _add_run_flags(p)
    p.add_argument("--file-workers", type=int, help="file workers, each with its model (default: by cores/GPUs)")
    p.add_argument("--streams-per-worker", type=int,
                   help="files a worker derains side by side through its one model (default: 4 with a GPU, else 1)")
    p.add_argument("--shared-model", action="store_true",
                   help="file workers keep no model and send their frames to one model worker per GPU, so "
                        "nodes without a GPU decode and encode for it (default: where the cluster has both)")
    p.add_argument("--report", help="report path (default: OUTPUT/derain-report.json)")
    p.set_defaults(func=cmd_archive)

    p = sub.add_parser("train", help="train the network (see configs/train*.yaml)")
    p.add_argument("--config", default="configs/train.yaml")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    p.add_argument("--progress", action="store_true", help="show the progress bar even without a terminal")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.batch=32 (repeatable)")
    p.add_argument("--max-seconds", type=float,
                   help="checkpoint and stop after this long (--resume goes on): fits leased machines")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="fp16 weights from a training checkpoint (OUT_DIR/last.pt), "
                                      "or a profile as ONNX (--onnx) for other runtimes")
    p.add_argument("checkpoint", nargs="?", help="a training checkpoint (with -o)")
    p.add_argument("-o", "--output", help="the fp16 weights file to write")
    p.add_argument("--overwrite", action="store_true", help="replace -o OUT or --onnx OUT.onnx if it exists")
    p.add_argument("--onnx", metavar="OUT.onnx", help="write the profile's network as ONNX: rainy in, derained out, "
                                                      "dynamic batch, height and width")
    p.add_argument("--profile", choices=["full", "fast", "temporal", "temporal-fast"], default="full")
    p.add_argument("--weights", help="a weights file instead of the profile's shipped one")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("eval", help="PSNR/SSIM (Y channel) of input and output against ground truth")
    p.add_argument("--rain", required=True, help="folder of rainy images (or video frames)")
    p.add_argument("--clean", required=True, help="folder of ground-truth images, paired by name")
    _add_model_flags(p)
    p.add_argument("--csv", help="per-image CSV (default: <rain folder name>-eval.csv)")
    p.add_argument("--save", help="also write the derained images here")
    p.add_argument("--video", choices=["auto", "on", "off"], default="auto",
                   help="the images are consecutive frames: temporal profiles see neighbours, and the warping "
                        "error (flicker) is reported (auto: names numbered consecutively, one size)")
    p.add_argument("--align", default="auto", choices=["auto", "none", "ultrafast", "fast", "medium"],
                   help="temporal profiles: warp the neighbours onto each frame along optical flow of this DIS "
                        "preset (model.align)")
    p.add_argument("--deflicker", default="auto", choices=["auto", "on", "off"],
                   help="blend each derained frame with the last along the flow (model.deflicker; auto: temporal)")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    p.set_defaults(func=cmd_eval, profile="full", device="auto", dtype="auto")

    p = sub.add_parser("bench", help="frames/s of the model, the file pipeline and archives")
    _add_model_flags(p)
    p.add_argument("--model-only", action="store_true", help="only the model: sizes, batches, dtypes")
    p.add_argument("--config", help="settings for the pipeline part (encoder preset, batching, ...)")
    p.add_argument("--size", default="640x360", type=_clip_size, help="WxH of the generated clip (even)")
    p.add_argument("--sizes", type=_sizes, help="--model-only: comma-separated WxH list (default 640x360,1280x720)")
    p.add_argument("--frames", type=_count(0), default=0, help="frames in the generated clip (0: by profile)")
    p.add_argument("--no-archive", action="store_true", help="skip the archive throughput part")
    p.add_argument("--streams", type=_count(1, 64), metavar="N",
                   help="N streams at once through one model worker: model-only, codec-only (identity) and "
                        "end-to-end frames/s, per stream and in total")
    p.add_argument("--memory", action="store_true",
                   help="flat-memory check: a long clip (1080p unless --size) through the pipeline, identity model")
    p.add_argument("--minutes", type=_positive, default=10.0, help="length of the --memory clip")
    p.add_argument("--live", action="store_true",
                   help="live delay p50/p95, output fps and drop rate against a local RTSP camera")
    p.add_argument("--duration-s", type=_positive, default=60.0, help="--live: seconds to measure")
    p.add_argument("--fps", type=_count(1, 240), default=25, help="--live: camera frame rate")
    p.add_argument("--backend", choices=["ray", "local"], help="worker pool (default: ray; --live: local)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="--live, identity profile: sleep per frame")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    p.set_defaults(func=cmd_bench, profile="full", device="auto", dtype="auto")

    p = sub.add_parser("rainmeter", help="no-reference measure of the rain left in videos or image folders")
    p.add_argument("paths", nargs="+", help="video files or folders of frames")
    p.add_argument("--per-frame", action="store_true", help="also list each frame's score")
    p.add_argument("--json", action="store_true", help="one JSON object per path")
    p.set_defaults(func=cmd_rainmeter)

    p = sub.add_parser("demo", help="derain the shipped rainy sample clip")
    p.add_argument("--out", default="derain-demo", help="output folder")
    p.add_argument("--profile", choices=["full", "fast", "temporal", "temporal-fast"], default="temporal-fast",
                   help="temporal-fast (default): a CPU speed, and the sample is video")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("eval-detect", help="detector precision/recall/F1 on rainy and derained vs clean frames")
    p.add_argument("--data", required=True, metavar="DIR",
                   help="folder holding the paired sets: ntu_synthetic_video/, rain12/, rain100_samples/")
    p.add_argument("--set", action="append", choices=["ntu-a1", "rain12", "rain100L", "rain100H"],
                   help="a set to run (repeatable; default: all)")
    p.add_argument("--detector", default="hog", help="a plugin short name or module:Class (default: hog)")
    p.add_argument("--detector-with", default={}, type=_json_object, help="the detector's `with:` settings as JSON")
    p.add_argument("--stride", type=_count(1), default=4, help="ntu-a1 (video): take every n-th frame pair, as neighbours are near duplicates (default: 4)")
    _add_model_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval_detect, profile="full", device="auto", dtype="auto")
    return parser


def _fail(args, message: str) -> None:
    """One line on stderr; with --json also an error object on stdout, as a run's summary would be."""
    print(f"derain {args.command}: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        _json_error(args.command, message)


def _json_error(command: str | None, message: str) -> None:
    print(json.dumps({"ok": False, "command": command, "error": message}), flush=True)


def _parse(argv: list[str] | None):
    try:
        return build_parser().parse_args(argv)
    except _BadArguments as exc:
        print(f"{exc.prog}: error: {exc.message}", file=sys.stderr)  # as argparse says it
        given = sys.argv[1:] if argv is None else argv
        if "--json" in given:
            _json_error(next((a for a in given if not a.startswith("-")), None), f"{exc.prog}: {exc.message}")
        raise


def main(argv: list[str] | None = None, leave_when_stopped: bool = False) -> int:
    """The CLI. `leave_when_stopped` (the `derain` command): a run stopped by a signal ends the
    process at once (see `_leave_now`); an in-process caller gets the exit code back, and its
    signal handlers as they were, unless the run started Ray."""
    args = _parse(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # Ray's core library would install a crash handler for SIGTERM while ray.init runs: a
    # stack dump, then an abort at exit, in place of "terminated (SIGTERM)" and exit 143.
    # Read when ray is imported, which happens later (workers start lazily).
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    # SIGTERM (docker stop, systemd, kill) ends a run as Ctrl-C does; live runs install their
    # own handler (flush and close everything playable, exit 0). pipeline.workers.init_ray
    # keeps this handler when Ray starts (Ray would put its own, and a crash-style dump).
    main_thread = threading.current_thread() is threading.main_thread()
    _terminated.clear()
    _stopping.clear()
    # SIGINT too, unless the process was started to ignore it (`derain ... &` in a script)
    ours = [sig for sig in (signal.SIGINT, *stop_signals()) if signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, _raise_terminated) for sig in ours} if main_thread else {}
    try:
        return args.func(args)
    except DerainError as exc:
        if args.debug:
            raise
        _fail(args, str(exc))
        return 1
    except KeyboardInterrupt:
        _stopping[:1] = _stopping[:1] or [time.monotonic()]  # a Ctrl-C Ray re-raised counts too
        signum = _terminated[0] if _terminated else None  # Terminated is raised after the signal is noted
        what = f"terminated ({signal.Signals(signum).name})" if signum else "interrupted"
        with contextlib.suppress(OSError):  # after a hang-up the terminal is gone (EIO): still leave cleanly
            print(f"derain {args.command}: {what}; partial outputs removed", file=sys.stderr)
            if getattr(args, "json", False):
                _json_error(args.command, what)
        code = 128 + (signum or signal.SIGINT)
        ray = sys.modules.get("ray")
        if leave_when_stopped or (ray is not None and ray.is_initialized()):
            _leave_now(code)
        return code
    except Exception as exc:
        if getattr(args, "json", False):  # a bug, not a user error: the traceback follows on stderr
            _json_error(args.command, f"internal error: {exc!r}"[:500])
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def entry() -> int:
    """The `derain` command."""
    return main(leave_when_stopped=True)


if __name__ == "__main__":
    sys.exit(entry())
