"""Worker pools that run the inference core on batches: Ray actors, or a local thread.

The Ray pool keeps one actor per GPU (or CPU actors where there is none), a few batches
in flight per actor, and watches every result: when an actor dies mid-batch, Ray
restarts it (`max_restarts=-1`) and the pool resubmits the lost batches, so no frame is
lost and the output stays in order (the runner reorders by key).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from .errors import WorkerError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSettings:
    profile: str = "full"  # full | fast | identity
    weights: str | None = None  # a weights file instead of the shipped one
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    delay_ms: float = 0.0  # identity profile only: a stand-in for a slow model (ms per frame)
    runtime: Literal["auto", "torch", "onnxruntime"] = "auto"  # auto: onnxruntime for fp32 on CPUs

    def problems(self) -> list[str]:
        if self.profile not in ("full", "fast", "identity"):
            return [f"profile: must be one of full, fast, identity (got {self.profile!r})"]
        return []


@dataclass(frozen=True)
class WorkerSettings:
    backend: Literal["ray", "local"] = "ray"
    count: int = 0  # 0: one per GPU, else one CPU worker
    threads: int = 0  # torch threads per CPU worker; 0: the cores Ray gives it
    inflight: int = 2  # batches queued per worker so it never waits for the driver
    max_tries: int = 3  # a batch whose worker died this many times fails the job
    address: str | None = None  # Ray cluster: None (local), "auto", "ray://host:10001"

    def problems(self) -> list[str]:
        out = []
        if self.count < 0 or self.inflight < 1 or self.max_tries < 1:
            out.append("count must be >= 0, inflight >= 1 and max_tries >= 1 "
                       f"(got {self.count}, {self.inflight}, {self.max_tries})")
        return out


Result = tuple[Any, np.ndarray, np.ndarray]  # (key, derained frames, rain intensity)


class DerainWorker:
    """Holds one loaded model; runs (B, H, W, 3) uint8 batches. Becomes a Ray actor in RayPool."""

    def __init__(self, model: dict, threads: int = 0):
        from .model.inference import Derainer

        self.derainer = Derainer.load(**model, threads=threads or None)

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self.derainer(images)
        return result.frames, result.rain_intensity

    def pid(self) -> int:
        return os.getpid()


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start (or join) Ray once per process, quietly.

    Quietly: Ray 2.60 logs a token-authentication notice on every start ("Token
    authentication is enabled for this Ray cluster..."); derain keeps Ray's behaviour
    (token auth on for a cluster it starts) and drops the notice. The process's own
    SIGTERM handler (the CLI's: end the run as Ctrl-C does) is kept: ray.init replaces
    it with one that exits mid-call, and its core library dumps a stack on SIGTERM.
    """
    import ray

    if ray.is_initialized():
        return
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     object_store_memory=512 * 2**20, configure_logging=False)
    except SystemExit as exc:  # SIGTERM while Ray started: its handler ran instead of this process's
        if callable(sigterm) and exc.code == signal.SIGTERM:
            sigterm(signal.SIGTERM, None)
        raise
    finally:
        if callable(sigterm):  # a Python handler this process installed before Ray
            signal.signal(signal.SIGTERM, sigterm)


class RayPool:
    """Ray actors holding the model; `submit` batches, `poll` returns finished ones."""

    def __init__(self, model: ModelSettings, workers: WorkerSettings = WorkerSettings()):
        import ray

        init_ray(workers.address)
        self.ray = ray
        gpus = int(ray.cluster_resources().get("GPU", 0)) if model.device in ("auto", "cuda") else 0
        cpus = int(ray.available_resources().get("CPU", os.cpu_count() or 1))
        count = workers.count or max(gpus, 1)
        if gpus:
            opts = {"num_gpus": 1, "num_cpus": 1}
            threads = workers.threads or 1
        else:
            threads = workers.threads or max(1, cpus // count)
            opts = {"num_cpus": min(threads, max(cpus // count, 1)) if cpus else 0}
        self.settings = workers
        self._actor_cls = ray.remote(max_restarts=-1, max_task_retries=0, **opts)(DerainWorker)
        self.actors = [self._actor_cls.remote(asdict(model), threads) for _ in range(count)]
        self.inflight: dict[Any, tuple[Any, Any, int, int]] = {}  # ref -> (key, images ref, actor, tries)
        self.load = [0] * count
        self.restarts = 0
        # Fail now, naming the problem, if the model cannot load (bad weights file, ...).
        ray.get([a.pid.remote() for a in self.actors])

    @property
    def size(self) -> int:
        return len(self.actors)

    def capacity(self) -> int:
        return self.size * self.settings.inflight - len(self.inflight)

    def submit(self, key: Any, images: np.ndarray | Any, tries: int = 0) -> None:
        ref = images if isinstance(images, self.ray.ObjectRef) else self.ray.put(images)
        idx = min(range(self.size), key=self.load.__getitem__)
        self.load[idx] += 1
        self.inflight[self.actors[idx].run.remote(ref)] = (key, ref, idx, tries)

    def poll(self, timeout: float) -> list[Result]:
        if not self.inflight:
            return []
        ready, _ = self.ray.wait(list(self.inflight), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            key, images, idx, tries = self.inflight.pop(ref)
            self.load[idx] -= 1
            try:
                frames, intensity = self.ray.get(ref)
            except (self.ray.exceptions.RayActorError, self.ray.exceptions.ActorUnavailableError) as exc:
                self._resubmit(key, images, idx, tries, exc)
                continue
            except self.ray.exceptions.RayTaskError as exc:
                raise WorkerError(f"worker failed on batch {key}: {exc.cause!r}") from None
            out.append((key, frames, intensity))
        return out

    def _resubmit(self, key, images, idx: int, tries: int, exc: Exception) -> None:
        self.restarts += 1
        if tries + 1 >= self.settings.max_tries:
            raise WorkerError(f"batch {key}: its worker died {tries + 1} times ({type(exc).__name__})")
        log.warning("worker %d died on batch %s (%s); Ray restarts it and the batch is redone",
                    idx, key, type(exc).__name__)
        self.submit(key, images, tries + 1)

    def pids(self) -> list[int]:
        return self.ray.get([a.pid.remote() for a in self.actors])

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors, self.inflight = [], {}


class LocalPool:
    """The same interface in-process: one thread running the model (no Ray start-up)."""

    def __init__(self, model: ModelSettings, workers: WorkerSettings = WorkerSettings()):
        self.worker = DerainWorker(asdict(model), workers.threads)
        self.settings = workers
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="derain")
        self.inflight: dict[Future, Any] = {}
        self.restarts = 0
        self.size = 1

    def capacity(self) -> int:
        return self.settings.inflight - len(self.inflight)

    def submit(self, key: Any, images: np.ndarray) -> None:
        self.inflight[self.executor.submit(self.worker.run, images)] = key

    def poll(self, timeout: float) -> list[Result]:
        if not self.inflight:
            return []
        done, _ = wait(list(self.inflight), timeout=timeout, return_when=FIRST_COMPLETED)
        out = []
        for fut in done:
            key = self.inflight.pop(fut)
            try:
                frames, intensity = fut.result()
            except Exception as exc:
                raise WorkerError(f"worker failed on batch {key}: {exc!r}") from exc
            out.append((key, frames, intensity))
        return out

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def make_pool(model: ModelSettings, workers: WorkerSettings):
    return (RayPool if workers.backend == "ray" else LocalPool)(model, workers)


def drain(pool, timeout: float = 0.05, deadline_s: float | None = None) -> list[Result]:
    """Every in-flight result (used at end of stream)."""
    out: list[Result] = []
    end = None if deadline_s is None else time.monotonic() + deadline_s
    while pool.inflight and (end is None or time.monotonic() < end):
        out.extend(pool.poll(timeout))
    return out
