"""Worker pools that run the inference core on batches: Ray actors, or a local thread.

The Ray pool keeps one actor per GPU (or CPU actors where there is none), a few batches
in flight per actor, and watches every result: when an actor dies mid-batch, Ray
restarts it (`max_restarts=-1`) and the pool resubmits the lost batches, so no frame is
lost and the output stays in order (the runner reorders by key).

Workers are sized to what the cluster's nodes offer (`plan_workers`): a CPU worker never
asks for more cores than one node has, and a request no node can hold (more workers than
CPUs, a GPU on a cluster without one) is a `WorkerError` naming the resources before any
actor is made. Actors that cannot start because the cluster is busy are waited for with a
warning and, after `workers.start_timeout_s`, given up (`start_actors`): never a silent wait.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .errors import WorkerError
from .settings import ModelSettings, WorkerSettings, on_cuda

log = logging.getLogger(__name__)


def model_halo(model: ModelSettings) -> tuple[int, int]:
    """Frames a batch needs before and after it for the model's window ((0, 0) for one frame)."""
    from .model.inference import IDENTITY, window_halo
    from .model.weights import network_frames

    if model.profile == IDENTITY and model.weights is None:
        return (0, 0)
    return window_halo(network_frames(model.weights, model.profile), model.causal)


def model_deflicker(model: ModelSettings) -> bool:
    """Whether each stream's derained frames are deflickered (the runner does it, per lane, in order)."""
    from .model.inference import IDENTITY, pick_deflicker
    from .model.weights import network_frames

    if model.profile == IDENTITY and model.weights is None:
        return model.deflicker is True
    return pick_deflicker(model.deflicker, network_frames(model.weights, model.profile))


Result = tuple[Any, np.ndarray, np.ndarray]  # (key, derained frames, rain intensity)


class DerainWorker:
    """Holds one loaded model; runs (B, H, W, 3) uint8 batches. Becomes a Ray actor in RayPool."""

    def __init__(self, model: dict, threads: int = 0):
        from .model.inference import Derainer

        self.derainer = Derainer.load(**model, threads=threads or None)

    def run(self, images: np.ndarray, context: tuple[int, int] = (0, 0),
            matrix: str = "bt601") -> tuple[np.ndarray, np.ndarray]:
        result = self.derainer(images, context, matrix)
        return result.frames, result.rain_intensity

    def pid(self) -> int:
        return os.getpid()


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start (or join) Ray once per process, quietly.

    Quietly: Ray 2.60 logs a token-authentication notice on every start ("Token
    authentication is enabled for this Ray cluster..."); derain keeps Ray's behaviour
    (token auth on for a cluster it starts) and drops the notice. The process's own
    SIGTERM handler (the CLI's: end the run as Ctrl-C does) is kept: ray.init replaces
    it with one that exits mid-call (turned back into this process's handler below). The CLI
    also keeps Ray's core library from installing its crash handler, which dumps a stack and
    aborts on SIGTERM (RAY_DISABLE_FAILURE_SIGNAL_HANDLER, in pipeline.cli).
    """
    import ray

    if ray.is_initialized():
        return
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    # No address: $RAY_ADDRESS as Ray reads it, else a Ray of this process's own ("local"),
    # never a cluster that `ray start` left running here (ray.init would join it silently).
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address and address != "local":
            try:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise WorkerError(_join_error(address, exc)) from None
        else:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     object_store_memory=512 * 2**20, configure_logging=False)
    except SystemExit as exc:  # SIGTERM while Ray started: its handler ran instead of this process's
        if callable(sigterm) and exc.code == signal.SIGTERM:
            sigterm(signal.SIGTERM, None)
        raise
    finally:
        if callable(sigterm):  # a Python handler this process installed before Ray
            signal.signal(signal.SIGTERM, sigterm)


def _join_error(address: str, exc: BaseException) -> str:
    """One line for a failed ray.init(address=...): what went wrong and what to do."""
    chain, e = [], exc
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = " ".join(str(e) for e in chain)
    if any(type(e).__name__ == "AuthenticationError" for e in chain) or "InvalidAuthToken" in text:
        return (f"Ray cluster at {address}: token authentication failed; set RAY_AUTH_MODE=token and the "
                "cluster's token (RAY_AUTH_TOKEN, or the head's ~/.ray/auth_token) where derain runs")
    if "No node info found" in text:
        return (f"Ray cluster at {address}: this machine is not one of its nodes; join it first "
                f"(ray start --address={address} --num-cpus=0), then run derain with --address auto")
    first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return f"Ray cluster at {address}: cannot join it ({first.strip()[:300]})"


# ---- Sizing workers to the cluster's nodes --------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One alive Ray node: its resources (`total`) and those free now (`free`)."""

    id: str
    total: dict
    free: dict

    def cpus(self) -> int:
        """Cores to size workers by: the free ones, or all of them where none is free now (busy)."""
        free = int(self.free.get("CPU", 0))
        return free if free >= 1 else int(self.total.get("CPU", 0))


@dataclass(frozen=True)
class Placement:
    """One worker: the Ray resources it asks for, its torch threads, the node it is meant for."""

    num_cpus: float
    num_gpus: float = 0.0
    threads: int = 1
    node: str | None = None  # a soft node affinity: Ray may place it elsewhere

    def asks(self) -> str:
        return _resources({"CPU": self.num_cpus, "GPU": self.num_gpus})


def _resources(res: dict) -> str:
    return "{" + ", ".join(f"{k} {res.get(k, 0):g}" for k in ("CPU", "GPU") if k == "CPU" or res.get(k)) + "}"


def cluster_nodes(ray) -> list[Node]:
    """The cluster's alive nodes with their total and free resources."""
    try:
        from ray._private.state import available_resources_per_node

        free = available_resources_per_node()  # a developer API: without it, size by the totals
    except Exception:
        free = None
    nodes = []
    for info in ray.nodes():
        if not info.get("Alive"):
            continue
        total = dict(info.get("Resources") or {})
        nodes.append(Node(info["NodeID"], total, dict(free.get(info["NodeID"], {})) if free is not None else total))
    return nodes


def usable_nodes(ray, timeout_s: float = 60.0) -> list[Node]:
    """The cluster's nodes once one of them can run a worker (has a CPU or a GPU).

    A cluster whose worker nodes are still joining (its head started with --num-cpus=0, as
    docker/compose.yaml does) is waited for, with a warning, up to `timeout_s` (0: no limit);
    then the nodes as they are (and `plan_workers` says what is missing).
    """
    start, warned = time.monotonic(), False
    while True:
        nodes = cluster_nodes(ray)
        if any(n.total.get("CPU", 0) >= 1 or n.total.get("GPU", 0) >= 1 for n in nodes):
            return nodes
        if timeout_s and time.monotonic() - start >= timeout_s:
            return nodes
        if not warned:
            log.warning("no node can run a worker yet (%s): waiting%s for nodes to join", describe_nodes(nodes),
                        f" up to {timeout_s:g} s" if timeout_s else "")
            warned = True
        time.sleep(1.0)


def describe_nodes(nodes: list[Node]) -> str:
    """'the Ray cluster has 2 nodes: 2 x {CPU 1}; free now: {CPU 1}' (one line, however many nodes)."""
    if not nodes:
        return "the Ray cluster has no alive node"
    groups: dict[str, int] = {}
    for n in nodes:
        key = _resources(n.total)
        groups[key] = groups.get(key, 0) + 1
    shapes = ", ".join(f"{c} x {k}" if c > 1 else k for k, c in sorted(groups.items(), key=lambda kv: -kv[1]))
    free = {k: sum(n.free.get(k, 0) for n in nodes) for k in ("CPU", "GPU")}
    return (f"the Ray cluster has {len(nodes)} node{'s' if len(nodes) > 1 else ''}: {shapes}; "
            f"free now: {_resources(free)}")


def plan_workers(nodes: list[Node], device: str = "auto", count: int = 0, threads: int = 0,
                 limit: int | None = None, knobs: str = "workers.count") -> list[Placement]:
    """What each worker asks for, sized to what the nodes offer.

    With GPUs (and a device that may use them): one worker per GPU (`count` of them sharing
    the GPUs evenly). Else CPU workers: by default one per node holding the node's cores;
    `count` workers of the most cores each that lets all of them fit; `threads` cores per
    worker, as many as fit (never more cores than a node has). `limit` caps the workers
    (an archive of 3 files needs 3 at most). A request no node can hold raises a
    `WorkerError` naming it, the nodes and `knobs` (the settings to change).
    """
    where = describe_nodes(nodes)
    gpus = int(sum(n.total.get("GPU", 0) for n in nodes))
    cuda = device.startswith("cuda")
    if cuda and not gpus:
        raise WorkerError(f"device {device}: the workers ask for a GPU each, but no node has one ({where})")
    if gpus and (cuda or device == "auto"):
        return _plan_gpu(nodes, gpus, count, threads, limit)
    return _plan_cpu(nodes, count, threads, limit, knobs, where)


def _plan_gpu(nodes: list[Node], gpus: int, count: int, threads: int, limit: int | None) -> list[Placement]:
    n = count or gpus
    n = min(n, limit) if limit else n
    share = 1.0 if n <= gpus else 1.0 / math.ceil(n / gpus)  # n workers share the GPUs evenly
    hosts = [node for node in nodes if node.total.get("GPU", 0) >= share]
    per_node = [int(node.total["GPU"] / share + 1e-9) for node in hosts]
    # a core for each worker where every GPU node has as many, else what the scarcest one has
    cpu = min([1.0] + [math.floor(100 * node.total.get("CPU", 0) / k) / 100 for node, k in zip(hosts, per_node)])
    return [Placement(cpu, share, threads or 1) for _ in range(n)]


def _spread(nodes: list[Node], sizes: list[list[int]]) -> list[tuple[Node, int]]:
    """Worker slots, node after node (round robin), so fewer workers than slots spread out."""
    out, i = [], 0
    while any(i < len(s) for s in sizes):
        out.extend((node, s[i]) for node, s in zip(nodes, sizes) if i < len(s))
        i += 1
    return out


def _plan_cpu(nodes: list[Node], count: int, threads: int, limit: int | None, knobs: str,
              where: str) -> list[Placement]:
    nodes = sorted((n for n in nodes if n.total.get("CPU", 0) >= 1), key=lambda n: -n.cpus())
    if not nodes:
        raise WorkerError(f"no node of the Ray cluster offers a CPU for the workers ({where})")
    if not count and not threads:  # one worker per node, holding its cores
        plan = [Placement(c, threads=c, node=n.id) for n in nodes if (c := n.cpus()) >= 1]
        return plan[:limit] if limit else plan
    want = min(count, limit) if count and limit else count
    for caps in ([n.cpus() for n in nodes], [int(n.total.get("CPU", 0)) for n in nodes]):  # free now, then all
        if threads:  # `threads` cores each where a node has them, else one worker of the node's cores
            sizes = [[min(threads, c)] * max(c // threads, 1) if c >= 1 else [] for c in caps]
        else:  # the most cores each that lets `want` workers fit
            t = next((t for t in range(max(caps), 0, -1) if sum(c // t for c in caps) >= want), 0)
            sizes = [[t] * (c // t) if t else [] for c in caps]
        slots = _spread(nodes, sizes)
        if len(slots) >= max(want, 1):
            slots = slots[:want or limit or len(slots)]
            return [Placement(size, threads=threads or size, node=node.id) for node, size in slots]
    cpus = sum(int(n.total.get("CPU", 0)) for n in nodes)
    raise WorkerError(f"cannot place {want} workers of at least 1 CPU each: {where} ({cpus} CPUs in all); "
                      f"lower {knobs} or add nodes")


def start_actors(ray, actor_cls, plan: list[Placement], args, what: str = "workers",
                 timeout_s: float = 60.0, warn_s: float = 10.0, limit: str = "workers.start_timeout_s") -> list:
    """One actor per placement, returned once each has started (its __init__ ran).

    Never a silent wait: after `warn_s` a warning names what is pending, what each asks and
    what the cluster has free; after `timeout_s` (0: never) the actors not started are
    killed and the run goes on with those that did, or, with none, a `WorkerError`.
    An actor whose __init__ failed (bad weights, ...) raises here, naming the problem.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actors = []
    spread = len({p.node for p in plan}) > 1  # on one node Ray's own placement is the same (and restarts faster)
    for p in plan:
        opts: dict = {"num_cpus": p.num_cpus, "num_gpus": p.num_gpus}
        if p.node and spread:
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(p.node, soft=True)
        actors.append(actor_cls.options(**opts).remote(*args(p)))
    refs = [a.pid.remote() for a in actors]
    start, next_warn = time.monotonic(), warn_s
    pending = list(refs)
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
        waited = time.monotonic() - start
        if not pending or (timeout_s and waited >= timeout_s):
            break
        if waited >= next_warn:
            log.warning("%d of %d %s not started after %.0f s: each asks %s; %s", len(pending), len(refs),
                        what, waited, plan[refs.index(pending[0])].asks(), describe_nodes(cluster_nodes(ray)))
            next_warn += 30
    try:
        ray.get([r for r in refs if r not in pending])  # an __init__ that failed raises here
    except BaseException:
        for a in actors:  # the ones that did start would keep their cores and GPUs
            ray.kill(a)
        raise
    started = [a for a, r in zip(actors, refs) if r not in pending]
    if pending:
        asks = plan[refs.index(pending[0])].asks()
        where = describe_nodes(cluster_nodes(ray))
        for a, r in zip(actors, refs):
            if r in pending:
                ray.kill(a)
        if not started:
            raise WorkerError(f"no {what} started within {timeout_s:g} s ({limit}): each asks "
                              f"{asks}; {where}; the cluster is busy or its nodes are leaving")
        log.warning("%d of %d %s not started within %.0f s (each asks %s; %s): going on with %d",
                    len(pending), len(refs), what, timeout_s, asks, where, len(started))
    return started


class RayPool:
    """Ray actors holding the model; `submit` batches, `poll` returns finished ones."""

    def __init__(self, model: ModelSettings, workers: WorkerSettings = WorkerSettings(), leave_cpus: float = 0.0):
        import ray

        init_ray(workers.address)
        self.ray = ray
        plan = plan_workers(_leaving(usable_nodes(ray, workers.start_timeout_s), leave_cpus), model.device,
                            workers.count, knobs="workers.count (--workers)")
        if workers.threads:  # torch threads as asked; never more cores reserved than the plan gives
            plan = [replace(p, threads=workers.threads,
                            num_cpus=p.num_cpus if p.num_gpus else min(p.num_cpus, workers.threads)) for p in plan]
        self.settings = workers
        self.halo, self.deflicker = model_halo(model), model_deflicker(model)
        self._actor_cls = ray.remote(max_restarts=-1, max_task_retries=0)(DerainWorker)
        # Fail now, naming the problem, if the model cannot load (bad weights file, ...) or the
        # workers cannot be placed.
        self.actors = start_actors(ray, self._actor_cls, plan, lambda p: (asdict(model), p.threads),
                                   "derain workers", workers.start_timeout_s)
        self.inflight: dict[Any, tuple] = {}  # ref -> (key, images ref, (context, matrix), actor, tries, seen)
        self.load = [0] * len(self.actors)
        self.restarts = 0
        self._track_deaths()
        self.owned = True

    def _track_deaths(self) -> None:
        # Per actor: the deaths counted, and whether it has answered since the last one. A batch
        # notes both when sent (`seen`), so one death is counted once, by the first batch it fails.
        self.deaths = [0] * len(self.actors)
        self.answered = [True] * len(self.actors)

    @classmethod
    def attach(cls, actors: list, model: ModelSettings, workers: WorkerSettings = WorkerSettings()) -> "RayPool":
        """A pool over model workers another process started (an archive's file worker sending
        to the GPUs' model workers): its own batches in flight; `close` leaves the actors."""
        import ray

        pool = cls.__new__(cls)
        pool.ray, pool.settings, pool.halo, pool.actors = ray, workers, model_halo(model), list(actors)
        pool.deflicker = model_deflicker(model)
        pool.inflight, pool.load, pool.restarts, pool.owned = {}, [0] * len(actors), 0, False
        pool._track_deaths()
        return pool

    @property
    def size(self) -> int:
        return len(self.actors)

    def capacity(self) -> int:
        return self.size * self.settings.depth() - len(self.inflight)

    def submit(self, key: Any, images: np.ndarray | Any, context: tuple[int, int] = (0, 0),
               matrix: str = "bt601", tries: int = 0) -> None:
        """Derain `images` but the `context` frames at either end (FrameBatch.model_input);
        yuv420p frames with the colour `matrix` (pipeline.colour)."""
        ref = images if isinstance(images, self.ray.ObjectRef) else self.ray.put(images)
        idx = min(range(self.size), key=self.load.__getitem__)
        self.load[idx] += 1
        self.inflight[self.actors[idx].run.remote(ref, context, matrix)] = (key, ref, (context, matrix), idx, tries,
                                                                           (self.deaths[idx], self.answered[idx]))

    def poll(self, timeout: float) -> list[Result]:
        if not self.inflight:
            return []
        ready, _ = self.ray.wait(list(self.inflight), num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            key, images, args, idx, tries, seen = self.inflight.pop(ref)
            self.load[idx] -= 1
            try:
                frames, intensity = self.ray.get(ref)
            except (self.ray.exceptions.RayActorError, self.ray.exceptions.ActorUnavailableError) as exc:
                self._resubmit(key, images, args, idx, tries, seen, exc)
                continue
            except self.ray.exceptions.RayTaskError as exc:
                raise WorkerError(f"worker failed on batch {key}: {exc.cause!r}") from None
            out.append((key, frames, intensity))
        return out

    def _resubmit(self, key, images, args: tuple, idx: int, tries: int, seen: tuple, exc: Exception) -> None:
        """Redo a batch whose worker died, once the worker answers again. A death counts a try
        of the batch it fails first, when the worker was up as it was sent: a batch sent while
        Ray restarts the worker fails at once (ActorUnavailableError) and that costs nothing, so a
        slow restart does not use up the tries, while a batch that kills its worker every time
        (a native crash) ends the job after max_tries, as Ray reports every death alike."""
        if seen == (self.deaths[idx], True):
            self.deaths[idx] += 1
            self.answered[idx] = False
            self.restarts += 1
            tries += 1
            if tries >= self.settings.max_tries:
                raise WorkerError(f"batch {key}: its worker died {tries} times ({type(exc).__name__})")
            log.warning("worker %d died on batch %s (%s); Ray restarts it and the batch is redone",
                        idx, key, type(exc).__name__)
        if not self.answered[idx]:
            self.answered[idx] = self._answers(idx)
            if not self.answered[idx]:
                raise WorkerError(f"batch {key}: its worker died and was not back within "
                                  f"{self.settings.start_timeout_s:g} s (workers.start_timeout_s)")
        self.submit(key, images, *args, tries)

    def _answers(self, idx: int) -> bool:
        """Whether actor `idx` answers a call within start_timeout_s (0: however long it takes);
        while Ray restarts it a call fails at once, so ask again until then."""
        limit = self.settings.start_timeout_s
        deadline = time.monotonic() + limit if limit else float("inf")
        while True:
            try:
                self.ray.get(self.actors[idx].pid.remote(), timeout=max(0.1, deadline - time.monotonic())
                             if limit else None)
                return True
            except self.ray.exceptions.GetTimeoutError:
                return False
            except (self.ray.exceptions.RayActorError, self.ray.exceptions.ActorUnavailableError):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.1)

    def pids(self, timeout_s: float | None = None) -> list[int]:
        """The actors' process ids; with `timeout_s`, those that answered in time."""
        refs = [a.pid.remote() for a in self.actors]
        if timeout_s is None:
            return self.ray.get(refs)
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        out = []
        for ref in ready:
            try:
                out.append(self.ray.get(ref))
            except Exception:  # noqa: BLE001 - a worker that died meanwhile: not listed
                pass
        return out

    def close(self) -> None:
        if self.owned:
            for actor in self.actors:
                self.ray.kill(actor)
        self.actors, self.inflight = [], {}


class LocalPool:
    """The same interface in-process: one thread queues batches on the model (no Ray start-up),
    a second waits for their results, so on a GPU the next batch is copied in and queued while
    the last one runs and is copied out (`Derainer.start`)."""

    def __init__(self, model: ModelSettings, workers: WorkerSettings = WorkerSettings()):
        # A GPU worker's CPU side is copies: its torch threads would only spin and take the cores
        # the codecs need (a Ray GPU worker gets 1 thread by its placement, the same).
        gpu = on_cuda(model)
        self.worker = DerainWorker(asdict(model), workers.threads or (1 if gpu else 0))
        self.settings = workers
        self.depth = workers.depth(local_gpu=gpu)
        self.halo, self.deflicker = self.worker.derainer.halo, model_deflicker(model)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="derain")
        self.waiter = ThreadPoolExecutor(1, thread_name_prefix="derain-out")
        self.inflight: dict[Future, Any] = {}
        self.restarts = 0
        self.size = 1

    def capacity(self) -> int:
        return self.depth - len(self.inflight)

    def run(self, images: np.ndarray, context: tuple[int, int] = (0, 0), matrix: str = "bt601") -> Future:
        """A future of (frames, intensity): queued in order, finished in order."""
        result: Future = Future()

        def start() -> None:
            if not result.set_running_or_notify_cancel():
                return
            try:
                self.waiter.submit(finish, self.worker.derainer.start(images, context, matrix))
            except BaseException as exc:  # noqa: BLE001 - the caller's poll raises it
                result.set_exception(exc)

        def finish(pending) -> None:
            try:
                done = pending.result()
                result.set_result((done.frames, done.rain_intensity))
            except BaseException as exc:  # noqa: BLE001 - the caller's poll raises it
                result.set_exception(exc)

        self.executor.submit(start)
        return result

    def submit(self, key: Any, images: np.ndarray, context: tuple[int, int] = (0, 0), matrix: str = "bt601") -> None:
        self.inflight[self.run(images, context, matrix)] = key

    def poll(self, timeout: float) -> list[Result]:
        if not self.inflight:
            return []
        done, _ = wait(list(self.inflight), timeout=timeout, return_when=FIRST_COMPLETED)
        out = []
        for fut in [f for f in self.inflight if f in done]:  # in the order submitted
            if fut.exception() is not None and out:
                return out  # the results before a failed batch first; the next poll raises
            key = self.inflight.pop(fut)
            try:
                frames, intensity = fut.result()
            except Exception as exc:
                raise WorkerError(f"worker failed on batch {key}: {exc!r}") from exc
            out.append((key, frames, intensity))
        return out

    def close(self) -> None:
        """Batches not started are dropped; those on the model are waited for (a GPU's are done
        in milliseconds), so no future is left unfinished."""
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.waiter.shutdown(wait=True)
        for fut in self.inflight:  # never started: cancelled (a poll after close has nothing to wait for)
            fut.cancel()

    def view(self) -> "PoolView":
        """A pool of its own for one of several runs at once (threads), all on this one model."""
        return PoolView(self)


class PoolView:
    """One run's share of a `LocalPool` that several runs use at once (an archive worker on a GPU
    derains a few files side by side through its one model): the same interface, its own batches
    in flight and its own results, the model thread's queue shared in arrival order."""

    def __init__(self, pool: LocalPool):
        self.pool, self.settings, self.halo, self.deflicker = pool, pool.settings, pool.halo, pool.deflicker
        self.inflight: dict[Future, Any] = {}
        self.restarts, self.size = 0, 1

    def capacity(self) -> int:
        return self.pool.depth - len(self.inflight)

    def submit(self, key: Any, images: np.ndarray, context: tuple[int, int] = (0, 0), matrix: str = "bt601") -> None:
        self.inflight[self.pool.run(images, context, matrix)] = key

    poll = LocalPool.poll

    def close(self) -> None:
        for fut in self.inflight:
            fut.cancel()
        self.inflight = {}


def make_pool(model: ModelSettings, workers: WorkerSettings, leave_cpus: float = 0.0):
    """The model's worker pool; `leave_cpus`: cores the Ray workers leave to others (plugin actors)."""
    if workers.backend == "ray":
        return RayPool(model, workers, leave_cpus)
    if workers.count > 1:  # asked for, not given: said (it was ignored in silence)
        log.warning("workers.count %d: the local backend runs one model worker, in this process; the Ray "
                    "backend runs several", workers.count)
    return LocalPool(model, workers)


def _leaving(nodes: list[Node], cpus: float) -> list[Node]:
    """`nodes` as the model workers may use them when `cpus` cores are kept for other actors:
    taken from the node with the most, never below one core for a worker."""
    if cpus <= 0 or not nodes:
        return nodes
    big = max(nodes, key=lambda n: n.total.get("CPU", 0))

    def less(res: dict) -> dict:
        return {**res, "CPU": max(1.0, res.get("CPU", 0) - cpus)} if res.get("CPU", 0) >= 1 else res

    return [replace(n, total=less(n.total), free=less(n.free)) if n is big else n for n in nodes]


def drain(pool, timeout: float = 0.05, deadline_s: float | None = None) -> list[Result]:
    """Every in-flight result (used at end of stream)."""
    out: list[Result] = []
    end = None if deadline_s is None else time.monotonic() + deadline_s
    while pool.inflight and (end is None or time.monotonic() < end):
        out.extend(pool.poll(timeout))
    return out
