"""Derain a whole archive of videos in parallel on Ray, resumably.

Work moves to the data: each Ray actor holds the model and decodes, derains and
encodes whole files where it runs (`derain_file` with an in-process pool), so raw
frames never cross the network; on a cluster the paths must be on storage every
node sees. The driver only hands out paths and collects small JSON records.

Resume: outputs appear only on success (sinks rename a temporary file), so a file
whose output exists is skipped; anything else is redone. As with rsync or make, the report
records each done input's size and modification time and its output's size, and a rerun
redoes a file whose input changed or whose output is no longer the size written (a report
of an older version, without sizes, keeps every output that exists). The report is
rewritten after every file, so an interrupted run still says which files are done.

A file worker whose process dies is restarted by Ray; its files wait until it answers (or
go to the other workers), so one death costs each of them one of `archive.retries`.

The output tree may not be the input tree or inside it, and the walker skips folders that
hold derain's outputs (a `derain-report.json` or a `.derain-output` marker), so derain's
own outputs are never taken for inputs.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections import deque
from dataclasses import asdict, fields, replace
from pathlib import Path, PurePath

from .errors import ConfigError, DerainError, InputError, OutputError, WorkerError
from .locks import held
from .settings import RunSettings, with_codec_threads
from .sinks.files import MARKER, VIDEO_SUFFIXES, partial_path, remove_partial, temp_token
from .workers import describe_nodes, init_ray, plan_workers, start_actors, usable_nodes

log = logging.getLogger(__name__)

REPORT_NAME = "derain-report.json"


def find_inputs(root: Path, patterns: list[str], recursive: bool) -> list[Path]:
    """The matching files under `root`, without hidden files and without derain's own outputs.

    Patterns match whatever the case (`*.mp4` takes a phone's IMG_0001.MP4, a drone's DJI_0001.MOV
    under `*.mov`), and only inside `root`: a pattern that climbs out of it is refused."""
    if not root.is_dir():
        raise InputError(f"{root}: is not a folder; give the folder of videos to derain" if root.exists()
                         else f"{root}: archive folder not found")
    for pattern in patterns:
        if PurePath(pattern).is_absolute() or ".." in PurePath(pattern).parts:
            raise ConfigError(f"archive.patterns: {pattern!r} reaches outside the input folder {root}; "
                              "patterns match names inside it, as *.mp4 or cam*/*.mkv")
    # (pattern, at any depth): a leading **/ is glob's "anywhere below", which recursion means too
    wanted = [(PurePath(p.lower().removeprefix("**/")), recursive or p.startswith("**/")) for p in patterns]
    for pattern, _ in wanted:
        if "**" in pattern.parts:
            raise ConfigError(f"archive.patterns: {str(pattern)!r}: ** only as a leading **/ (any depth); "
                              "archive.recursive already looks in every folder")
    anywhere = any(deep for _, deep in wanted)
    deepest = max((len(p.parts) for p, _ in wanted), default=1)
    found: set[Path] = set()
    linked: list[str] = []  # folders reached by a link: not followed (a link may loop), said
    for folder, dirs, names in os.walk(root):
        linked += [os.path.join(folder, d) for d in dirs if os.path.islink(os.path.join(folder, d))]
        depth = len(Path(folder).relative_to(root).parts)
        if not anywhere and depth + 1 >= deepest:
            dirs.clear()  # not recursive: a pattern is anchored at the input folder, no deeper
        for name in names:
            rel = PurePath(os.path.relpath(os.path.join(folder, name), root).lower())
            if any(rel.match(str(p)) and (deep or len(rel.parts) == len(p.parts)) for p, deep in wanted):
                found.add(Path(folder) / name)
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

    broken = sorted(str(p) for p in found if p.is_symlink() and not p.exists())
    if broken:
        log.warning("%s: %d link%s to no file skipped: %s", root, len(broken), "s" if len(broken) > 1 else "",
                    ", ".join(broken[:5]) + (" ..." if len(broken) > 5 else ""))
    if linked and (recursive or anywhere):
        log.warning("%s: %d linked folder%s not followed (a link may loop back): %s; archive %s as an input "
                    "folder of its own", root, len(linked), "s" if len(linked) > 1 else "",
                    ", ".join(sorted(linked)[:5]) + (" ..." if len(linked) > 5 else ""),
                    "it" if len(linked) == 1 else "each")
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

    def process(self, src: str, dst: str, overwrite: bool, token: str, made_from: dict) -> dict:
        """Derain one file; its record. `made_from`: the input's size and mtime as the driver saw
        them just before sending it (the next run compares what the driver sees: a node may mount
        the files another way; an input changed meanwhile is redone next time), and the settings
        (`made_with`)."""
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
                "warnings": list(getattr(stats, "warnings", [])), "worker": os.getpid(),
                **made_from, "output_size": _output_size(dst)}

    def pid(self) -> int:
        return os.getpid()


def _worker_layout(settings: RunSettings, nodes: list, files: int, shared: bool = False) -> list:
    """Each file worker's resources, sized to the `nodes` (as usable_nodes found them): one per
    GPU, else one per node holding its cores (see pipeline.workers.plan_workers); a request no
    node can hold is an error. With a shared model, CPU workers on the cores its model workers left."""
    a = settings.archive
    if shared:
        free = [n for n in nodes if n.free.get("CPU", 0) >= 1]
        if not free:
            raise WorkerError(f"shared model: its model workers hold every core ({describe_nodes(nodes)}); "
                              "no node is left for the file workers: add nodes or use archive.shared_model: false")
        nodes = free
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
    from .files import codec_share

    cores = _cores_per_gpu(nodes) * min(p.num_gpus, 1) if nodes is not None and p.num_gpus else p.threads
    return codec_share(streams, int(cores))


def _start_shared_model(settings: RunSettings, nodes: list) -> tuple:
    """The model workers (one per GPU, as `derain run` starts them) and the file workers' settings:
    with the model on a GPU, their codecs run as next to one (codec processes, yuv420p frames)."""
    from .workers import RayPool

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


class _Report:
    """The report file, rewritten after every file so an interrupted run still says what is done.

    Only the first write, before any work, may stop the run (an unwritable folder: nothing would
    record the work). Later writes that fail (the disk filled with outputs) are remembered and said
    once at the end, and leave no temporary behind: the files' own work matters more than its record.
    """

    def __init__(self, path: Path):
        self.path = path
        self.error: str | None = None  # why the last write failed; None once one succeeds

    def write(self, records: list[dict]) -> dict:
        summary = _summary(records)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"summary": summary, "files": records}, indent=2))
            tmp.replace(self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self.error = exc.strerror or str(exc)
        else:
            self.error = None
        return summary


def _summary(records: list[dict]) -> dict:
    counts = {s: sum(r["status"] == s for r in records) for s in ("done", "failed", "skipped", "pending")}
    frames = sum(r.get("frames") or 0 for r in records if r["status"] == "done")
    secs = sum(r.get("seconds") or 0 for r in records if r["status"] == "done")
    summary = {"files": len(records), **counts, "frames": frames}
    summary["worker_fps"] = round(frames / secs, 3) if secs else 0.0
    return summary


def _previous(report: Path, in_root: Path) -> dict[str, dict]:
    """The last run's records by input path under the input folder (`name`), so a rerun from
    another working directory, or naming the folder another way, finds them; none where there is
    no readable report. A report of an older version has only the inputs as they were given,
    read from here."""
    try:
        files = json.loads(report.read_text())["files"]
        return {key: r for r in files if (key := r.get("name") or _name(Path(r["input"]).resolve(), in_root.resolve()))}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: cannot read the last run's report (%s); outputs that exist are kept", report, exc)
        return {}


def _name(src: Path, in_root: Path) -> str | None:
    """`src`'s path under the input folder, as the report keys it (None: not under it)."""
    try:
        return src.relative_to(in_root).as_posix()
    except ValueError:
        return None


# a record's note of what its output was made from
WRITTEN_FROM = ("input_size", "input_mtime_ns", "output_size", "made_with")


def _input_stat(src: str | Path) -> dict:
    """The input's size and modification time (none where it cannot be read: then it counts as changed)."""
    try:
        st = os.stat(src)
    except OSError:
        return {}
    return {"input_size": st.st_size, "input_mtime_ns": st.st_mtime_ns}


def made_with(settings: RunSettings) -> dict:
    """What shapes an output beyond its input: every model and encoder setting (the weights
    file by content) but those of the machine (`MACHINE`: device, dtype, threads, ...), so a
    job moved to a GPU keeps what the CPUs wrote, and a setting added later counts unless named there."""
    m, e = settings.model, settings.encode
    shaping = {f.name: getattr(part, f.name) for part in (m, e) for f in fields(part) if f.name not in part.MACHINE}
    weights = None
    if m.profile != "identity":
        from .model.weights import default_weights

        path = Path(m.weights) if m.weights else default_weights(m.profile)
        try:
            weights = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        except OSError:
            weights = str(path)  # the run itself names a missing file
    return {**shaping, "weights": weights}


def _other_settings(before: dict, now: dict) -> str:
    """The settings that differ, as a line says them: 'profile fast, now full' ('' if none)."""
    # only keys both know: a version that notes one more setting must not redo a whole archive
    return "; ".join(f"{k} {before[k]}, now {v}" for k, v in now.items() if k in before and before[k] != v)


def _why_redo(dst: Path, before: dict, stat: dict, settings: dict | None = None) -> str | None:
    """Whether to derain `src` again though it ran before: None keeps `dst`; otherwise the reason
    to say ("" where there is nothing to say: it never finished).

    As rsync and make judge it: an input whose size or modification time is not the one recorded
    when its output was written, or an output no longer the size written (cut, replaced). The note
    stays with a file whose redo failed (the old output is still there, and still stale). Without
    one (a report of an older version, or none) an output that exists is kept, as before: sinks
    rename an output into place only once it is complete. `stat`: the input's `_input_stat` now;
    `settings`: `made_with` now (an output made otherwise, a trial run's profile, is made again).
    """
    if not dst.exists():
        return "its output is missing" if before.get("status") in ("done", "skipped") else ""
    if "input_size" not in before:
        # no note: a report of an older version, or a file that finished while its run was
        # stopped (in place, but never recorded): kept, unless that run was making it otherwise
        planned = before.get("planned_with")
        if settings is not None and isinstance(planned, dict) and (changed := _other_settings(planned, settings)):
            return f"its run stopped as it ended, and derained it with other settings ({changed})"
        return None
    if stat != {k: before.get(k) for k in WRITTEN_FROM[:2]}:
        return "the input changed since it was derained"
    if settings is not None and isinstance(before.get("made_with"), dict):
        if changed := _other_settings(before["made_with"], settings):
            return f"it was derained with other settings ({changed})"
    written, size = before.get("output_size"), _output_size(dst)
    if written is not None and size is not None and size != written:
        return f"its output is {size} bytes, not the {written} written"
    return None


def _plan(pairs: list[tuple[Path, Path]], in_root: Path, previous: dict[str, dict],
          overwrite: bool, settings: dict | None = None) -> tuple[list[dict], dict[str, str]]:
    """One record per (input, output) (skipped or pending) and, by output, the line saying why a
    file that finished before is derained again. `settings`: `made_with` for this run."""
    records, redo = [], {}
    for src, dst in pairs:
        name = _name(src, in_root)
        before, stat = previous.get(name, {}), _input_stat(src)
        why = "" if overwrite else _why_redo(dst, before, stat, settings)
        record = {"input": str(src), "name": name, "output": str(dst),
                  "status": "pending" if why is not None else "skipped",
                  "frames": None, "seconds": None, "fps": None, "error": None}
        if why is None:  # kept (as noted, or trusted): the note the next run compares
            record.update(stat, output_size=_output_size(dst), made_with=settings)
        else:  # the note of the output on disk, until a new one is written (the worker's record)
            record.update({k: before[k] for k in WRITTEN_FROM if k in before}, planned_with=settings)
        if why:
            redo[str(dst)] = f"{src}: {why}; deraining it again"
        records.append(record)
    return records, redo


def _output_size(dst: str | Path) -> int | None:
    """An output file's size in bytes (None for a folder of images)."""
    return os.path.getsize(dst) if os.path.isfile(dst) else None


def _say_failures(records: list[dict], report: _Report, most: int = 20) -> None:
    """One line per failed file (its error names it), so the console says what the report holds."""
    failed = [r for r in records if r["status"] == "failed"]
    for r in failed[:most]:
        error = r.get("error") or "failed"
        log.error("%s", error if error.startswith(r["input"]) else f"{r['input']}: {error}")
    if len(failed) > most:
        log.error("... and %d more failed; see the report %s", len(failed) - most, report.path)


def run_archive(in_dir: str | Path, out_dir: str | Path, settings: RunSettings = RunSettings(),
                report_path: str | Path | None = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Derain every matching video under `in_dir` into the mirrored tree under `out_dir`.

    Returns {"summary": {...}, "files": [...], "path": report path, "report_error": why the
    report could not be written at the end, or None}. One broken file is reported as failed and
    the rest finish.

    Raises:
        InputError: `in_dir` is not a folder.
        OutputError: `out_dir` is the input tree or in it, or the report cannot be written there
            (checked before any work starts), or another archive is writing into `out_dir`.
    """
    # absolute: file workers run elsewhere (another working directory, another node)
    in_root, out_root = Path(in_dir).absolute(), Path(out_dir).absolute()
    a = settings.archive
    inputs = find_inputs(in_root, a.patterns, a.recursive)
    if not inputs:
        log.warning("%s: no file matches archive.patterns (%s)%s", in_dir, ", ".join(a.patterns),
                    "" if a.recursive else " at its top level (archive.recursive: false)")
    check_roots(in_root, out_root)
    pairs = [(src, output_for(src, in_root, out_root, a.output_suffix)) for src in inputs]
    _check_targets(pairs, a.output_suffix)
    if report_path:
        _check_report_path(Path(report_path), pairs)
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_root}: cannot create it ({exc.strerror})") from None
    # a second archive into one folder would derain every file again, meet this run's outputs as
    # "already there", and leave a report that does not match the folder
    with held(out_root, f"{out_root}: another derain archive is writing there; wait for it to end, or give "
                        "another output folder"):
        return _archive(pairs, in_root, out_root, settings, report_path, overwrite, progress)


def _appending_lines(settings: RunSettings, fresh: bool) -> RunSettings:
    """The JSONL plugin appends in an archive: every file, in every worker process, writes to the
    one file (each replacing it kept the last file's lines), and a resumed archive adds its files.
    The file starts afresh here where the archive does (`fresh`: a new one, or --overwrite) unless
    its `append: true`; its path is made absolute (file workers run in other folders)."""
    from plugins.jsonl import JSONLWriter  # here: plugins import the pipeline
    from plugins.loader import resolve

    def appending(entry):
        try:
            jsonl = isinstance(entry, dict) and issubclass(resolve(str(entry.get("use"))), JSONLWriter)
        except DerainError:
            return entry  # the loader names it
        if not jsonl:
            return entry
        given = dict(entry.get("with") or {})
        if isinstance(given.get("path"), str):
            given["path"] = str(Path(given["path"]).expanduser().absolute())
            if fresh and not given.get("append"):
                _start_afresh(Path(given["path"]))
        return {**entry, "with": {**given, "append": True}}

    return replace(settings, plugins=[appending(e) for e in settings.plugins])


def _start_afresh(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the plugin's lines there ({exc.strerror})") from None


def _archive(pairs: list[tuple[Path, Path]], in_root: Path, out_root: Path, settings: RunSettings,
             report_path: str | Path | None, overwrite: bool, progress: bool) -> dict:
    import ray

    report = _Report(Path(report_path) if report_path else out_root / REPORT_NAME)
    previous = _previous(report.path, in_root)
    settings = _appending_lines(settings, fresh=overwrite or not previous)
    made = made_with(settings)
    records, redo = _plan(pairs, in_root, previous, overwrite, made)
    start = time.monotonic()
    report.write(records)
    if report.error:
        raise OutputError(f"{report.path.parent}: cannot write the report {report.path.name} there "
                          f"({report.error}); nothing was derained")
    for line in redo.values():
        log.warning("%s", line)
    todo = [r for r in records if r["status"] == "pending"]
    if todo:
        init_ray(settings.workers.address)
        replace_ok = {r["output"] for r in todo} if overwrite else set(redo)  # outputs a new one may replace
        _process(todo, records, settings, report, replace_ok, progress, ray, made)
    summary = report.write(records)
    summary["wall_seconds"] = round(time.monotonic() - start, 3)
    summary["archive_fps"] = round(summary["frames"] / summary["wall_seconds"], 3) if todo else 0.0
    _say_failures(records, report)
    if report.error:
        log.error("%s: the report could not be written (%s); the outputs that exist are the files that "
                  "finished", report.path, report.error)
    return {"summary": summary, "files": records, "path": str(report.path), "report_error": report.error}


def _check_targets(pairs: list[tuple[Path, Path]], suffix: str) -> None:
    """Each output is a video derain writes, not an input, and no other input's output."""
    resolved_inputs = {src.resolve() for src, _ in pairs}
    targets: dict[Path, Path] = {}
    for src, dst in pairs:
        target = dst.resolve()
        if target in resolved_inputs:
            raise OutputError(f"{target}: would be written over an input (from {src}); "
                              "give an output folder outside the input folder")
        if target in targets:  # clip.mp4 and clip.mov with output_suffix .mp4
            raise ConfigError(f"{dst}: both {targets[target]} and {src} would be written there "
                              f"(archive.output_suffix {suffix!r}); rename one, or keep each extension "
                              "(output_suffix: '')")
        if target.suffix.lower() not in VIDEO_SUFFIXES:
            why = f"archive.output_suffix {suffix!r}" if suffix else f"its output keeps the extension {src.suffix!r}"
            raise ConfigError(f"{src}: {why}, which derain does not write ({', '.join(VIDEO_SUFFIXES)}); "
                              "set archive.output_suffix (e.g. .mp4)")
        targets[target] = src


def _check_report_path(path: Path, pairs: list[tuple[Path, Path]]) -> None:
    """A --report path may hold only a derain report: it is rewritten after every file."""
    target = path.resolve()
    for src, dst in pairs:
        if target == src.resolve():
            raise OutputError(f"{path}: is one of the inputs; give the report another path")
        if target == dst.resolve():
            raise OutputError(f"{path}: is the output of {src}; give the report another path")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give the report a file path")
    if path.exists():
        try:
            with open(path, "rb") as fh:
                head = fh.read(64)  # a report is JSON text; a video given by mistake is not read whole
                ours = head.lstrip().startswith(b"{") and isinstance(json.loads(head + fh.read()).get("files"), list)
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise OutputError(f"{path}: exists and is not a derain report; give the report another path")


def _process(todo: list[dict], records: list[dict], settings: RunSettings, report: _Report, replace_ok: set[str],
             progress: bool, ray, made: dict) -> None:
    model_pool = None
    try:
        nodes = usable_nodes(ray, settings.workers.start_timeout_s)
        if _shared_model(settings, nodes):
            model_pool, file_settings, gpu = _start_shared_model(settings, nodes)
            # asked again: the free cores are now those the model workers left
            layout = _worker_layout(settings, usable_nodes(ray, settings.workers.start_timeout_s), len(todo),
                                    shared=True)
            streams = settings.archive.streams(gpu)
            args = lambda p: (asdict(file_settings), p.threads, model_pool.actors,  # noqa: E731
                              _codec_share(p, streams))
        else:
            layout = _worker_layout(settings, nodes, len(todo))
            gpu = any(p.num_gpus for p in layout)
            streams = settings.archive.streams(gpu)
            args = lambda p: (asdict(settings), p.threads, None, _codec_share(p, streams, nodes))  # noqa: E731
        _run_files(todo, records, settings, report, replace_ok, progress, ray, layout, streams, args, made)
    finally:
        if model_pool is not None:
            model_pool.close()


RESTART_S = 60.0  # how long a dead file worker may take to come back where workers.start_timeout_s is 0


class _Dispatch:
    """Hands the files to the file workers, `streams` at a time each, and takes back their records.

    Ray restarts a file worker whose process died (max_restarts=-1), but a call sent while it
    restarts fails at once (ActorUnavailableError): a file sent back at once would use up its
    tries in milliseconds. So a dead worker's files go back to the front of the queue with one
    try more, and that worker gets no file until it answers again; one not back within
    `restart_s` is given up, and its share goes to the others.
    """

    def __init__(self, ray, actors: list, streams: int, replace_ok: set[str], retries: int, restart_s: float):
        self.ray, self.actors, self.streams = ray, actors, streams
        self.replace_ok, self.retries, self.restart_s = replace_ok, retries, restart_s
        self.queue: deque[tuple[dict, int]] = deque()  # (record, tries so far)
        self.running: dict = {}  # ref -> (record, worker index, tries, temporary-name token)
        self.load = [0] * len(actors)  # files running on each worker
        self.ready = set(range(len(actors)))  # workers answering
        self.probes: dict = {}  # ref of a pid call to a worker Ray is restarting -> (index, deadline)
        self.made_with: dict | None = None  # the settings a finished file's record notes (made_with)

    def busy(self) -> bool:
        """Files are running or waiting. A worker Ray is still restarting is waited for only
        while files wait: with every file ended, the job ends (it waited out `restart_s`)."""
        return bool(self.running or self.queue)

    def fill(self) -> None:
        """Give queued files to the answering workers with the fewest, up to `streams` each."""
        while self.queue and self.ready:
            idx = min(self.ready, key=self.load.__getitem__)
            if self.load[idx] >= self.streams:
                return
            rec, tries = self.queue.popleft()
            token = temp_token()  # the driver knows each file's temporary name
            ref = self.actors[idx].process.remote(rec["input"], rec["output"], rec["output"] in self.replace_ok,
                                                  token, {**_input_stat(rec["input"]), "made_with": self.made_with})
            self.running[ref] = (rec, idx, tries, token)
            self.load[idx] += 1

    def wait(self) -> list[dict]:
        """Wait for a file to end or a dead worker to answer; the records of the files that ended."""
        ready, _ = self.ray.wait(list(self.running) + list(self.probes), num_returns=1,
                                 timeout=1.0 if self.probes else None)
        ended = []
        for ref in ready:
            if ref in self.probes:
                self._probed(ref)
            else:
                ended += self._ended(ref)
        self._give_up_late()
        self.fill()
        if self.queue and not (self.running or self.probes):
            ended += self._no_worker_left()
        return ended

    def _ended(self, ref) -> list[dict]:
        rec, idx, tries, token = self.running.pop(ref)
        self.load[idx] -= 1
        try:
            rec.update(self.ray.get(ref))
            if rec["status"] == "done":
                rec.pop("planned_with", None)  # its made_with says it now
        except self.ray.exceptions.RayActorError as exc:  # ActorUnavailableError included
            remove_partial(partial_path(Path(rec["output"]), token))  # what the dead worker left
            self._restarting(idx)
            if tries < self.retries:
                log.warning("%s: worker died (%s); redoing the file once a worker answers", rec["input"],
                            type(exc).__name__)
                self.queue.appendleft((rec, tries + 1))
                return []
            rec.update(status="failed", error=f"{rec['input']}: worker died {tries + 1} times")
        return [rec]

    def _restarting(self, idx: int) -> None:
        """Send the worker no file until it answers a pid call (Ray is restarting it)."""
        if idx in self.ready:
            self.ready.discard(idx)
            self.probes[self.actors[idx].pid.remote()] = (idx, time.monotonic() + self.restart_s)

    def _probed(self, ref) -> None:
        idx, deadline = self.probes.pop(ref)
        try:
            self.ray.get(ref)
        except self.ray.exceptions.RayActorError:
            if time.monotonic() < deadline:
                time.sleep(0.2)  # a call fails at once while the worker restarts: ask again shortly
                self.probes[self.actors[idx].pid.remote()] = (idx, deadline)
            else:
                self._give_up(idx)
            return
        self.ready.add(idx)

    def _give_up_late(self) -> None:
        now = time.monotonic()
        for ref, (idx, deadline) in list(self.probes.items()):
            if now >= deadline:
                del self.probes[ref]
                self._give_up(idx)

    def _give_up(self, idx: int) -> None:
        log.error("file worker %d died and was not back within %g s (workers.start_timeout_s); %s", idx,
                  self.restart_s, "its files go to the other workers" if self.ready or self.probes else
                  "no file worker is left")
        self.ray.kill(self.actors[idx])

    def _no_worker_left(self) -> list[dict]:
        ended = [rec for rec, _ in self.queue]
        for rec in ended:
            rec.update(status="failed", error=f"{rec['input']}: no file worker left (each died and was not "
                                              f"back within {self.restart_s:g} s)")
        self.queue.clear()
        return ended


def _run_files(todo: list[dict], records: list[dict], settings: RunSettings, report: _Report, replace_ok: set[str],
               progress: bool, ray, layout: list, streams: int, args, made: dict) -> None:
    actor_cls = ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=streams)(FileWorker)
    actors = start_actors(ray, actor_cls, layout, args, "file workers", settings.workers.start_timeout_s)
    files = _Dispatch(ray, actors, streams, replace_ok, settings.archive.retries,
                      settings.workers.start_timeout_s or RESTART_S)
    files.queue.extend((rec, 0) for rec in todo)
    files.made_with = made
    bars = _bars(len(todo), progress)
    try:
        files.fill()
        while files.busy():
            for rec in files.wait():
                _say_warnings(rec)
                report.write(records)
                if bars:
                    bars[0].update(1)
                    bars[1].update(rec.get("frames") or 0)
    except BaseException:
        # Ctrl-C or a driver failure: stop the workers and remove their partial outputs.
        for actor in actors:
            ray.kill(actor)
        for rec, _, _, token in files.running.values():
            remove_partial(partial_path(Path(rec["output"]), token))
        report.write(records)
        raise
    finally:
        for bar in bars or ():
            bar.close()
    for actor in actors:
        ray.kill(actor)


def _say_warnings(rec: dict) -> None:
    """Say a finished file's warnings, one line each (the report keeps them too)."""
    for message in rec.get("warnings") or ():  # a truncated input's among them
        log.warning("%s", message)


def _bars(files: int, on: bool):
    if not on:
        return None
    from tqdm import tqdm

    return [tqdm(total=files, unit="file", desc="files", position=0, dynamic_ncols=True),
            tqdm(unit="frame", desc="frames", position=1, dynamic_ncols=True)]
