"""Workers sized to a Ray cluster's nodes: a real two-node local cluster (one CPU each), started
the README's way (`ray start --head`, `ray start --address`, Ray 2.60 token authentication),
and the sizing rules on their own. A request no node can hold fails in seconds, naming the
resources; a busy cluster is never waited for silently."""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from media import make_video
from pipeline.errors import WorkerError
from pipeline.workers import Node, Placement, describe_nodes, plan_workers, start_actors

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_started(proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "Ray runtime started" in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"ray start did not start:\n{log.read_text(errors='replace')[-3000:]}")


def _alive_nodes(address: str, env: dict) -> int:
    out = subprocess.run([str(RAY), "status", f"--address={address}"], env=env, capture_output=True, text=True,
                         timeout=30).stdout
    active = out.split("Active:", 1)[-1].split("Pending:", 1)[0]
    return len(re.findall(r"^\s*\d+ node_", active, re.M))


@pytest.fixture(scope="module")
def cluster():
    """Two local Ray nodes of one CPU each, with token authentication, stopped afterwards.

    Each node has its own temp dir (short: socket paths are limited), so nothing is written
    to /tmp/ray and `ray.init()` elsewhere never finds this cluster; ports are free ones.
    """
    yield from _cluster()


@pytest.fixture(scope="module")
def gpu_cluster():
    """The same two nodes, the head declaring one GPU (Ray takes the count as given; the model
    there runs on the CPU): a GPU node and a node without one."""
    yield from _cluster(head=["--num-gpus=1"])


def _cluster(head: list[str] = ()):
    tmp = Path(tempfile.mkdtemp(prefix="drc", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=str(REPO))
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--block", "--num-cpus=1", "--disable-usage-stats"]
    procs: list[subprocess.Popen] = []
    try:
        for name, args in [("head", ["--head", f"--port={port}", "--include-dashboard=false", *head]),
                           ("worker", [f"--address={address}"])]:
            log = tmp / f"{name}.log"
            with log.open("w") as f:
                procs.append(subprocess.Popen(
                    [str(RAY), "start", *args, f"--temp-dir={tmp / name[0]}",
                     f"--dashboard-agent-listen-port={free_port()}", *common],
                    env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True))
            _wait_started(procs[-1], log)
        deadline = time.monotonic() + 30
        while _alive_nodes(address, env) < 2:
            assert time.monotonic() < deadline, "the second node never joined"
            time.sleep(0.5)
        yield SimpleNamespace(address=address, env=env, tmp=tmp)
    finally:
        for proc in reversed(procs):  # `ray start --block` stops its node's processes on SIGTERM
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def derain(cluster, *args, env: dict | None = None, timeout: float = 60) -> tuple[int, str, str, float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *args, "--address", cluster.address],
                          env=env or cluster.env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


def last_line(stderr: str) -> str:
    return [line for line in stderr.splitlines() if line.strip()][-1]


def test_archive_and_run_finish_on_two_one_cpu_nodes(cluster, tmp_path):
    src = tmp_path / "in"
    for i in range(3):
        make_video(src / f"v{i}.mp4", frames=8, size=(64, 48))
    out = tmp_path / "out"
    code, stdout, stderr, secs = derain(cluster, "archive", str(src), str(out), "--profile", "identity", "--json")
    assert code == 0, stderr[-2000:]
    summary = json.loads(stdout.splitlines()[-1])
    assert summary["done"] == 3 and summary["frames"] == 24, summary
    assert secs < 45
    code, stdout, stderr, secs = derain(cluster, "run", str(src / "v0.mp4"), "-o", str(tmp_path / "one.mp4"),
                                        "--profile", "identity", "--json")
    assert code == 0, stderr[-2000:]
    assert json.loads(stdout.splitlines()[-1])["frames_out"] == 8


def test_on_a_gpu_node_and_a_cpu_node_the_archive_shares_the_gpus_model(gpu_cluster, tmp_path):
    """archive.shared_model auto: with a GPU node and a node without one, the model runs once
    (on the GPU node) and the file workers, placed on the cores it left, send it their frames,
    as yuv420p planes (their codecs run as next to a GPU)."""
    src = tmp_path / "in"
    for i in range(3):
        make_video(src / f"v{i}.mp4", frames=8, size=(64, 48))
    out = tmp_path / "out"
    code, stdout, stderr, _ = derain(gpu_cluster, "archive", str(src), str(out), "--profile", "fast", "--json",
                                     timeout=120)
    assert code == 0, stderr[-2000:]
    assert json.loads(stdout.splitlines()[-1])["done"] == 3
    assert "not started" not in stderr  # the file workers were sized to the cores the model left
    records = json.loads((out / "derain-report.json").read_text())["files"]
    assert all(r["frames"] == 8 and len(r["model_workers"]) == 1 for r in records)
    assert all(r["worker"] not in r["model_workers"] for r in records)


@pytest.mark.parametrize("flags,says", [
    (["--file-workers", "3"], ["cannot place 3 workers", "2 nodes: 2 x {CPU 1}", "--file-workers"]),
    (["--device", "cuda"], ["device cuda", "GPU", "no node has one", "2 x {CPU 1}"]),
])
def test_a_request_no_node_can_hold_fails_in_seconds_naming_the_resources(cluster, tmp_path, flags, says):
    src = tmp_path / "in"
    for i in range(3):  # 3 files: the archive needs (and asks for) up to 3 workers
        make_video(src / f"v{i}.mp4", frames=4, size=(64, 48))
    code, stdout, stderr, secs = derain(cluster, "archive", str(src), str(tmp_path / "out"), "--profile",
                                        "identity", *flags, timeout=60)
    line = last_line(stderr)
    assert code == 1 and secs < 30, (code, secs, stderr[-2000:])
    assert "Traceback" not in stderr
    assert line.startswith("derain archive: error:")
    for word in says:
        assert word in line, line


def test_joining_without_the_token_is_one_clear_line(cluster, tmp_path):
    env = {k: v for k, v in cluster.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    env["RAY_gcs_server_port_wait_time_s"] = "2"  # Ray retries the connection (20 s by default)
    src = tmp_path / "in"
    make_video(src / "v.mp4", frames=4, size=(64, 48))
    code, _, stderr, _ = derain(cluster, "archive", str(src), str(tmp_path / "out"), "--profile", "identity",
                                env=env)
    assert code == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert "RAY_AUTH_MODE=token" in last_line(stderr)


# ---- The sizing rules alone ------------------------------------------------------------------------


def nodes(*cpus, gpus=(), free=None) -> list[Node]:
    gpus = list(gpus) + [0] * (len(cpus) - len(gpus))
    free = cpus if free is None else free
    return [Node(f"n{i}", {"CPU": c, "GPU": g} if g else {"CPU": c}, {"CPU": f})
            for i, (c, g, f) in enumerate(zip(cpus, gpus, free))]


def test_by_default_one_cpu_worker_per_node_holding_its_cores():
    plan = plan_workers(nodes(1, 1))
    assert [(p.num_cpus, p.threads, p.node) for p in plan] == [(1, 1, "n0"), (1, 1, "n1")]
    assert [(p.num_cpus, p.threads) for p in plan_workers(nodes(2))] == [(2, 2)]  # one machine: as before
    assert len(plan_workers(nodes(4, 2, 1), limit=2)) == 2  # an archive of 2 files


def test_counted_workers_get_the_most_cores_that_fit_and_never_more_than_a_node_has():
    assert [p.num_cpus for p in plan_workers(nodes(2), count=2)] == [1, 1]
    assert [p.num_cpus for p in plan_workers(nodes(4, 4), count=2)] == [4, 4]
    assert sorted(p.node for p in plan_workers(nodes(4, 4), count=2)) == ["n0", "n1"]  # spread out
    plan = plan_workers(nodes(1, 1), threads=8)  # torch threads as asked, cores as the node has
    assert [(p.num_cpus, p.threads) for p in plan] == [(1, 8), (1, 8)]
    assert [p.num_cpus for p in plan_workers(nodes(4), threads=2)] == [2, 2]


def test_a_busy_node_is_sized_by_its_total_and_a_busy_cluster_is_not_an_error():
    plan = plan_workers(nodes(2, free=[0]))
    assert [p.num_cpus for p in plan] == [2]
    assert len(plan_workers(nodes(1, 1, free=[0, 0]), count=2)) == 2


def test_requests_no_node_can_hold_are_errors_naming_the_resources():
    with pytest.raises(WorkerError, match=r"cannot place 3 workers.*2 nodes: 2 x \{CPU 1\}.*--file-workers"):
        plan_workers(nodes(1, 1), count=3, knobs="archive.workers (--file-workers)")
    with pytest.raises(WorkerError, match=r"device cuda: .*GPU.*no node has one"):
        plan_workers(nodes(1, 1), device="cuda")
    with pytest.raises(WorkerError, match="no node of the Ray cluster offers a CPU"):
        plan_workers(nodes(0))


def test_gpus_get_one_worker_each_and_cpus_are_used_where_asked():
    plan = plan_workers(nodes(8, 8, gpus=(2, 1)))
    assert [(p.num_gpus, p.num_cpus) for p in plan] == [(1.0, 1.0)] * 3
    assert [p.num_gpus for p in plan_workers(nodes(8, gpus=(1,)), count=2)] == [0.5, 0.5]
    assert all(p.num_gpus == 0 for p in plan_workers(nodes(8, gpus=(1,)), device="cpu"))
    assert "2 x {CPU 8, GPU 1}" in describe_nodes(nodes(8, 8, gpus=(1, 1)))


def test_the_codecs_beside_a_gpu_share_its_cores_by_the_part_of_it_a_worker_holds():
    from pipeline.archive import _cores_per_gpu

    assert _cores_per_gpu(nodes(16, gpus=(1,))) == 16
    assert _cores_per_gpu(nodes(16, 8, gpus=(2, 1))) == 8  # the scarcest GPU node's
    assert _cores_per_gpu(nodes(8, 8, gpus=(0.5, 0.5))) == 16  # half a GPU: half of them per worker (x num_gpus)
    assert _cores_per_gpu(nodes(4)) == 1.0  # no GPU node: never asked, and no error


# ---- A busy cluster: a warning, then the workers that started, or an error -------------------------


def test_workers_a_busy_cluster_cannot_start_are_given_up_with_a_clear_error(ray_session, caplog):
    class Pid:  # defined here: Ray ships it by value (tests/ is not on the workers' path)
        def pid(self) -> int:
            return os.getpid()

    ray = ray_session
    cls = ray.remote(Pid)
    blocker = cls.options(num_cpus=2).remote()
    ray.get(blocker.pid.remote(), timeout=60)
    try:
        start = time.monotonic()
        with pytest.raises(WorkerError, match=r"no workers started within 2 s.*asks \{CPU 1\}.*free now: \{CPU 0\}"):
            start_actors(ray, cls, [Placement(1)], lambda p: (), timeout_s=2, warn_s=1)
        assert time.monotonic() - start < 10
    finally:
        ray.kill(blocker)
    half = cls.options(num_cpus=1).remote()
    ray.get(half.pid.remote(), timeout=60)
    try:
        with caplog.at_level(logging.WARNING, logger="pipeline.workers"):
            started = start_actors(ray, cls, [Placement(1), Placement(1)], lambda p: (), timeout_s=2, warn_s=1)
        assert len(started) == 1
        assert "going on with 1" in caplog.text and "asks {CPU 1}" in caplog.text
        for actor in started:
            ray.kill(actor)
    finally:
        ray.kill(half)
