"""Derain a whole archive of videos in parallel on Ray, resumably.

Work moves to the data: each Ray actor holds the model and decodes, derains and
encodes whole files where it runs (`derain_file` with an in-process pool), so raw
frames never cross the network; on a cluster the paths must be on storage every
node sees. The driver only hands out paths and collects small JSON records.

Resume: outputs appear only on success (sinks rename a temporary file), so a file
whose output exists is skipped; anything else is redone. The report is rewritten
after every file, so an interrupted run still says which files are done.

The output tree may not be the input tree or inside it, and the walker skips folders that
hold derain's outputs (a `derain-report.json` or a `.derain-output` marker), so derain's
own outputs are never taken for inputs.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import asdict, replace
from pathlib import Path

from .errors import DerainError, InputError, OutputError, WorkerError
from .settings import RunSettings, with_codec_threads
from .sinks.files import MARKER, partial_path, remove_partial
from .workers import cluster_nodes, describe_nodes, init_ray, plan_workers, start_actors, usable_nodes

log = logging.getLogger(__name__)

REPORT_NAME = "derain-report.json"


def find_inputs(root: Path, patterns: list[str], recursive: bool) -> list[Path]:
    """The matching files under `root`, without hidden files and without derain's own outputs."""
    if not root.is_dir():
        raise InputError(f"{root}: archive folder not found")
    found: set[Path] = set()
    for pattern in patterns:
        found.update(root.rglob(pattern) if recursive else root.glob(pattern))
    outputs: dict[Path, bool] = {}

    def is_output_dir(d: Path) -> bool:
        if d not in outputs:
            outputs[d] = (d / REPORT_NAME).exists() or (d / MARKER).exists()
        return outputs[d]

    def derains_own(p: Path) -> bool:
        d = p.parent
        while True:
            if is_output_dir(d):
                return True
            if d == root or d == d.parent:
                return False
            d = d.parent

    return sorted(p for p in found if p.is_file() and not p.name.startswith(".") and not derains_own(p))


def check_roots(in_root: Path, out_root: Path) -> None:
    """Refuse an output tree that is the input tree or inside it: its outputs would be derained next time."""
    i, o = in_root.resolve(), out_root.resolve()
    if o == i:
        raise OutputError(f"{out_root}: is the input folder; give an output folder outside {in_root}")
    if i in o.parents:
        raise OutputError(f"{out_root}: is inside the input folder {in_root}; its outputs would be taken "
                          "for inputs: give an output folder outside it")


def output_for(src: Path, in_root: Path, out_root: Path, suffix: str) -> Path:
    rel = src.relative_to(in_root)
    return (out_root / rel).with_suffix(suffix) if suffix else out_root / rel


class FileWorker:
    """A Ray actor: one loaded model, whole files in and out; with `max_concurrency` above 1, as
    many files side by side (each call in a thread of its own, through its own view of the pool).

    Given `model_workers` (a shared model, `archive.shared_model`), it loads no model: its files'
    batches go to those actors (one per GPU, wherever they run), and only the codecs run here.
    `codec_share`: the cores each of its files' codec processes may use (`threads: auto`)."""

    def __init__(self, settings: dict, threads: int, model_workers: list | None = None, codec_share: int = 1):
        from .config import from_dict
        from .workers import LocalPool

        self.settings = with_codec_threads(from_dict(RunSettings, settings), codec_share,
                                           model_here=not model_workers)
        self.model_workers = model_workers
        self.pool = None if model_workers else LocalPool(self.settings.model,
                                                         replace(self.settings.workers, threads=threads))

    def _pool(self):
        from .workers import RayPool

        if self.model_workers:
            return RayPool.attach(self.model_workers, self.settings.model, self.settings.workers)
        return self.pool.view()

    def process(self, src: str, dst: str, overwrite: bool, token: str | None = None) -> dict:
        from .files import derain_file

        start, started = time.monotonic(), round(time.time(), 3)
        pool = self._pool()
        try:
            stats = derain_file(src, dst, self.settings, pool=pool, overwrite=overwrite, token=token)
        except DerainError as exc:
            return {"status": "failed", "error": str(exc), "started": started,
                    "seconds": round(time.monotonic() - start, 3)}
        except Exception as exc:  # a codec or muxer failure on one file must not stop the archive
            return {"status": "failed", "error": f"{src}: {type(exc).__name__}: {exc}", "started": started,
                    "seconds": round(time.monotonic() - start, 3)}
        else:
            shared = {"model_workers": pool.pids(timeout_s=10)} if self.model_workers else {}
        finally:
            pool.close()
        return {**shared, "status": "done", "frames": stats.frames_out, "started": started, "seconds": round(stats.seconds, 3),
                "fps": round(stats.fps, 3), "truncated": stats.truncated,
                "warnings": list(getattr(stats, "warnings", [])), "worker": os.getpid()}

    def pid(self) -> int:
        return os.getpid()


def _worker_layout(settings: RunSettings, ray, files: int, shared: bool = False) -> list:
    """Each file worker's resources, sized to the nodes: one per GPU, else one per node holding
    its cores (see pipeline.workers.plan_workers); a request no node can hold is an error.
    With a shared model, CPU workers on the cores its model workers left."""
    a = settings.archive
    nodes = usable_nodes(ray, settings.workers.start_timeout_s)
    if shared:
        nodes = [n for n in nodes if n.free.get("CPU", 0) >= 1]
        if not nodes:
            raise WorkerError(f"shared model: its model workers hold every core ({describe_nodes(cluster_nodes(ray))}); "
                              "no node is left for the file workers: add nodes or use archive.shared_model: false")
    return plan_workers(nodes, "cpu" if shared else settings.model.device, a.workers, a.threads_per_worker,
                        limit=files, knobs="archive.workers (--file-workers) or archive.threads_per_worker")


def _shared_model(settings: RunSettings, nodes) -> bool:
    """`archive.shared_model`; auto: where the cluster has GPU nodes and nodes without a GPU (whose
    cores would otherwise idle), and the model may use the GPUs."""
    shared = settings.archive.shared_model
    if shared != "auto":
        return bool(shared)
    gpus = [n.total.get("GPU", 0) >= 1 for n in nodes]
    return _on_gpus(settings, nodes) and not all(gpus)


def _on_gpus(settings: RunSettings, nodes) -> bool:
    """Whether the model workers run on the cluster's GPUs."""
    return any(n.total.get("GPU", 0) >= 1 for n in nodes) and settings.model.device != "cpu"


def _cores_per_gpu(nodes) -> float:
    """The cores beside each GPU on the GPU node that has fewest: what the codec processes of the
    file workers on one GPU share (a GPU worker asks Ray for one core, but its codecs run on the
    node's); a worker with a part of a GPU gets that part of them."""
    return min((n.total.get("CPU", 1) / n.total["GPU"] for n in nodes if n.total.get("GPU", 0) > 0), default=1.0)


def _codec_share(p, streams: int, nodes=None) -> int:
    """The cores each of a file worker's `streams` codec processes may use (`threads: auto`): its
    own cores, or a GPU worker's part of the cores beside its GPU (`nodes` given)."""
    cores = _cores_per_gpu(nodes) * min(p.num_gpus, 1) if nodes is not None and p.num_gpus else p.threads
    return max(1, int(cores) // streams)


def _start_shared_model(settings: RunSettings, ray) -> tuple:
    """The model workers (one per GPU, as `derain run` starts them) and the file workers' settings:
    with the model on a GPU, their codecs run as next to one (codec processes, yuv420p frames)."""
    from .workers import RayPool

    nodes = usable_nodes(ray, settings.workers.start_timeout_s)
    gpu = _on_gpus(settings, nodes)
    w = settings.workers
    if not gpu and not (w.count and w.threads):
        raise WorkerError("archive.shared_model without a GPU: its CPU model workers would hold every core and "
                          "leave none for the file workers; set workers.count and workers.threads to size them "
                          f"({describe_nodes(nodes)}), or archive.shared_model: false")
    model_pool = RayPool(settings.model, settings.workers)
    d = settings.decode
    codec_side = replace(settings, workers=replace(w, codec_processes=gpu if w.codec_processes == "auto"
                                                   else w.codec_processes),
                         decode=replace(d, yuv=gpu if d.yuv == "auto" else d.yuv))
    log.info("shared model: %d model worker%s%s; the file workers decode and encode", len(model_pool.actors),
             "s" if len(model_pool.actors) > 1 else "", " on GPUs" if gpu else "")
    return model_pool, codec_side, gpu


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
    check_roots(in_root, out_root)
    targets = {output_for(src, in_root, out_root, a.output_suffix).resolve(): src for src in inputs}
    clash = next((t for t in targets if t in {p.resolve() for p in inputs}), None)
    if clash is not None:
        raise OutputError(f"{clash}: would be written over an input (from {targets[clash]}); "
                          "give an output folder outside the input folder")
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_root}: cannot create it ({exc.strerror})") from None
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
    model_pool = None
    try:
        nodes = usable_nodes(ray, settings.workers.start_timeout_s)
        if _shared_model(settings, nodes):
            model_pool, file_settings, gpu = _start_shared_model(settings, ray)
            layout = _worker_layout(settings, ray, len(todo), shared=True)
            streams = settings.archive.streams(gpu)
            args = lambda p: (asdict(file_settings), p.threads, model_pool.actors,  # noqa: E731
                              _codec_share(p, streams))
        else:
            layout = _worker_layout(settings, ray, len(todo))
            gpu = any(p.num_gpus for p in layout)
            streams = settings.archive.streams(gpu)
            args = lambda p: (asdict(settings), p.threads, None, _codec_share(p, streams, nodes))  # noqa: E731
        _run_files(todo, records, settings, report, overwrite, progress, ray, layout, streams, args)
    finally:
        if model_pool is not None:
            model_pool.close()


def _run_files(todo: list[dict], records: list[dict], settings: RunSettings, report: Path, overwrite: bool,
               progress: bool, ray, layout: list, streams: int, args) -> None:
    actor_cls = ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=streams)(FileWorker)
    actors = start_actors(ray, actor_cls, layout, args, "file workers", settings.workers.start_timeout_s)
    n = len(actors)
    queue = list(todo)
    running: dict = {}  # ref -> (record, actor index, tries, temporary-name token)
    bars = _bars(len(todo), progress)

    def submit(rec: dict, idx: int, tries: int = 0) -> None:
        token = f"{os.getpid()}-{secrets.token_hex(4)}"  # the driver knows each file's temporary name
        ref = actors[idx].process.remote(rec["input"], rec["output"], overwrite, token)
        running[ref] = (rec, idx, tries, token)

    try:
        for _ in range(streams):  # each worker takes `streams` files at once, and a new one as one ends
            for idx in range(n):
                if queue:
                    submit(queue.pop(0), idx)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            rec, idx, tries, token = running.pop(ready[0])
            try:
                rec.update(ray.get(ready[0]))
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                remove_partial(partial_path(Path(rec["output"]), token))  # what the dead worker left
                if tries < settings.archive.retries:
                    log.warning("%s: worker died (%s); redoing the file", rec["input"], type(exc).__name__)
                    submit(rec, idx, tries + 1)
                    continue
                rec.update(status="failed", error=f"{rec['input']}: worker died {tries + 1} times")
            for message in rec.get("warnings") or ():
                log.warning("%s", message)
            if rec.get("truncated"):
                log.warning("%s: the input looks truncated; kept every decodable frame", rec["input"])
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
        for rec, _, _, token in running.values():
            remove_partial(partial_path(Path(rec["output"]), token))
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
