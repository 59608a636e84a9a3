"""No Docker daemon here: check by reading that every path and command the images name exists."""
import re
from pathlib import Path

import yaml

from pipeline.cli import build_parser

REPO = Path(__file__).parents[1]
DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile.*"))


def test_there_are_cpu_and_cuda_images_and_a_compose_file():
    assert {p.name for p in DOCKERFILES} >= {"Dockerfile.cpu", "Dockerfile.cuda"}
    assert (REPO / "docker" / "compose.yaml").is_file()


def test_every_copied_path_exists_and_torch_is_pinned():
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        for line in re.findall(r"^COPY (.+)$", text, re.M):
            for src in line.split()[:-1]:
                assert (REPO / src).exists(), f"{dockerfile.name}: COPY {src} does not exist"
        assert "torch==2.13.0" in text


def test_compose_commands_and_files_exist():
    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"ray-head", "ray-worker", "archive"} <= set(services)
    for svc in services.values():
        assert (REPO / "docker" / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
    cmd = services["archive"]["command"]
    subcommands = build_parser()._subparsers._group_actions[0].choices
    assert cmd[0] in subcommands
    assert (REPO / cmd[cmd.index("--config") + 1]).is_file()
    build_parser().parse_args(cmd)  # the job's flags are real flags
    assert services["ray-head"]["command"][0] == "start" and "--head" in services["ray-head"]["command"]
