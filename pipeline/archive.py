"""Derain a whole archive of videos in parallel on Ray, resumably.

Work moves to the data: each Ray actor holds the model and decodes, derains and
encodes whole files where it runs (`derain_file` with an in-process pool), so raw
frames never cross the network; on a cluster the paths must be on storage every
node sees. The driver only hands out paths and collects small JSON records.

Resume: outputs appear only on success (sinks rename a temporary file), so a file
whose output exists is skipped; anything else is redone. The report is rewritten
after every file, so an interrupted run still says which files are done.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

from .errors import DerainError, InputError
from .settings import RunSettings
from .sinks import partial_path
from .workers import init_ray

log = logging.getLogger(__name__)

REPORT_NAME = "derain-report.json"


def find_inputs(root: Path, patterns: list[str], recursive: bool) -> list[Path]:
    if not root.is_dir():
        raise InputError(f"{root}: archive folder not found")
    found: set[Path] = set()
    for pattern in patterns:
        found.update(root.rglob(pattern) if recursive else root.glob(pattern))
    return sorted(p for p in found if p.is_file() and not p.name.startswith("."))


def output_for(src: Path, in_root: Path, out_root: Path, suffix: str) -> Path:
    rel = src.relative_to(in_root)
    return (out_root / rel).with_suffix(suffix) if suffix else out_root / rel


class FileWorker:
    """A Ray actor: one loaded model, whole files in and out."""

    def __init__(self, settings: dict, threads: int):
        from .config import from_dict
        from .workers import LocalPool

        self.settings = from_dict(RunSettings, settings)
        self.pool = LocalPool(self.settings.model, replace(self.settings.workers, threads=threads))

    def process(self, src: str, dst: str, overwrite: bool) -> dict:
        from .files import derain_file

        start = time.monotonic()
        try:
            stats = derain_file(src, dst, self.settings, pool=self.pool, overwrite=overwrite)
        except DerainError as exc:
            return {"status": "failed", "error": str(exc), "seconds": round(time.monotonic() - start, 3)}
        except Exception as exc:  # a codec or muxer failure on one file must not stop the archive
            return {"status": "failed", "error": f"{src}: {type(exc).__name__}: {exc}",
                    "seconds": round(time.monotonic() - start, 3)}
        return {"status": "done", "frames": stats.frames_out, "seconds": round(stats.seconds, 3),
                "fps": round(stats.fps, 3), "truncated": stats.truncated}

    def pid(self) -> int:
        return os.getpid()


def _worker_layout(settings: RunSettings, ray) -> tuple[int, int, dict]:
    """(workers, torch threads each, actor resources): one per GPU, else cores split evenly."""
    gpus = int(ray.cluster_resources().get("GPU", 0)) if settings.model.device in ("auto", "cuda") else 0
    cpus = max(int(ray.cluster_resources().get("CPU", 1)), 1)
    a = settings.archive
    if gpus:
        n = a.workers or gpus
        return n, a.threads_per_worker or 1, {"num_gpus": gpus / n if n > gpus else 1, "num_cpus": 1}
    if a.workers:
        n = a.workers
    elif a.threads_per_worker:
        n = max(1, cpus // a.threads_per_worker)
    else:
        n = 1
    threads = a.threads_per_worker or max(1, cpus // n)
    return n, threads, {"num_cpus": min(threads, cpus)}


def _write_report(path: Path, records: list[dict]) -> dict:
    counts = {s: sum(r["status"] == s for r in records) for s in ("done", "failed", "skipped", "pending")}
    frames = sum(r.get("frames") or 0 for r in records if r["status"] == "done")
    secs = sum(r.get("seconds") or 0 for r in records if r["status"] == "done")
    summary = {"files": len(records), **counts, "frames": frames}
    summary["worker_fps"] = round(frames / secs, 3) if secs else 0.0
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"summary": summary, "files": records}, indent=2))
    tmp.replace(path)
    return summary


def run_archive(in_dir: str | Path, out_dir: str | Path, settings: RunSettings = RunSettings(),
                report_path: str | Path | None = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Derain every matching video under `in_dir` into the mirrored tree under `out_dir`.

    Returns {"summary": {...}, "files": [...], "path": report path}. One broken file is
    reported as failed and the rest finish.
    """
    import ray

    in_root, out_root = Path(in_dir), Path(out_dir)
    a = settings.archive
    inputs = find_inputs(in_root, a.patterns, a.recursive)
    out_root.mkdir(parents=True, exist_ok=True)
    report = Path(report_path) if report_path else out_root / REPORT_NAME
    records = []
    for src in inputs:
        dst = output_for(src, in_root, out_root, a.output_suffix)
        status = "skipped" if dst.exists() and not overwrite else "pending"
        records.append({"input": str(src), "output": str(dst), "status": status, "frames": None,
                        "seconds": None, "fps": None, "error": None})
    todo = [r for r in records if r["status"] == "pending"]
    start = time.monotonic()
    summary = _write_report(report, records)
    if todo:
        init_ray(settings.workers.address)
        _process(todo, records, settings, report, overwrite, progress, ray)
    summary = _write_report(report, records)
    summary["wall_seconds"] = round(time.monotonic() - start, 3)
    summary["archive_fps"] = round(summary["frames"] / summary["wall_seconds"], 3) if todo else 0.0
    return {"summary": summary, "files": records, "path": str(report)}


def _process(todo: list[dict], records: list[dict], settings: RunSettings, report: Path, overwrite: bool,
             progress: bool, ray) -> None:
    n, threads, opts = _worker_layout(settings, ray)
    n = min(n, len(todo))
    actor_cls = ray.remote(max_restarts=-1, max_task_retries=0, **opts)(FileWorker)
    actors = [actor_cls.remote(asdict(settings), threads) for _ in range(n)]
    queue = list(todo)
    running: dict = {}  # ref -> (record, actor index, tries)
    bars = _bars(len(todo), progress)

    def submit(rec: dict, idx: int, tries: int = 0) -> None:
        running[actors[idx].process.remote(rec["input"], rec["output"], overwrite)] = (rec, idx, tries)

    try:
        for idx in range(n):
            if queue:
                submit(queue.pop(0), idx)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            rec, idx, tries = running.pop(ready[0])
            try:
                rec.update(ray.get(ready[0]))
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                if tries < settings.archive.retries:
                    log.warning("%s: worker died (%s); redoing the file", rec["input"], type(exc).__name__)
                    submit(rec, idx, tries + 1)
                    continue
                rec.update(status="failed", error=f"{rec['input']}: worker died {tries + 1} times")
            _write_report(report, records)
            if bars:
                bars[0].update(1)
                bars[1].update(rec.get("frames") or 0)
            if queue:
                submit(queue.pop(0), idx)
    except BaseException:
        # Ctrl-C or a driver failure: stop the workers and remove their partial outputs.
        for actor in actors:
            ray.kill(actor)
        for rec, _, _ in running.values():
            partial_path(Path(rec["output"])).unlink(missing_ok=True)
        _write_report(report, records)
        raise
    finally:
        for bar in bars or ():
            bar.close()
    for actor in actors:
        ray.kill(actor)


def _bars(files: int, on: bool):
    if not on:
        return None
    from tqdm import tqdm

    return [tqdm(total=files, unit="file", desc="files", position=0, dynamic_ncols=True),
            tqdm(unit="frame", desc="frames", position=1, dynamic_ncols=True)]
