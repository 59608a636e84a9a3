"""No Docker daemon here: check by reading that every path and command the images, the compose
file, the README's cluster commands and CI's install script name exists and fits together."""
import re
import shlex
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


def test_compose_cluster_authenticates_and_its_job_runs_on_a_node():
    text = (REPO / "docker" / "compose.yaml").read_text()
    # compose interpolates every $: only ${VAR...} or $$ (a literal $) outside comments
    for line in text.splitlines():
        if not line.lstrip().startswith("#"):
            assert not re.search(r"\$(?![${])", line.replace("$$", "")), line
    services = yaml.safe_load(text)["services"]
    port = next(a.split("=")[1] for a in services["ray-head"]["command"] if a.startswith("--port="))
    for name, svc in services.items():
        env = svc["environment"]
        assert env["RAY_AUTH_MODE"] == "token", name  # Ray 2.60: a token on every connection
        assert env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?"), name  # the same one, from the caller
    assert f"--address=ray-head:{port}" in services["ray-worker"]["command"]
    # a Ray driver must run on a node: the job joins (without CPUs) before `derain` starts
    entry = services["archive"]["entrypoint"]
    assert entry[:2] == ["sh", "-c"]
    script = entry[2]
    assert script.index(f"ray start --address=ray-head:{port} --num-cpus=0") < script.index("exec derain")


def test_readme_cluster_commands_are_real_and_say_the_token():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("**On a Ray cluster**"):readme.index("**Settings.**")]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    assert "RAY_AUTH_MODE=token" in block
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    derain = [shlex.split(line)[1:] for line in lines if line.startswith("derain ")]
    assert len(derain) >= 2 and all("--address" in args for args in derain)
    for args in derain:
        build_parser().parse_args(args)
    assert any(line.startswith("ray start --head") for line in lines)
    assert any(line.startswith("ray start --address=") for line in lines)
    assert "ray://" not in block  # needs ray[client], which the project does not install


def test_ci_installs_and_checks_every_gstreamer_element_the_test_camera_uses():
    ci = (REPO / ".ci" / "run").read_text()
    elements = set()
    for launch in _camera_launch_strings():
        for part in launch.strip("() ").split("!"):
            name = part.split()[0]
            if "/" not in name:  # not caps (video/x-raw,...)
                elements.add(name)
    assert {"videotestsrc", "timeoverlay", "x264enc", "rtph264pay"} <= elements
    packages = set(ci.split("PACKAGES=(", 1)[1].split(")", 1)[0].split())
    for element in elements:
        checked = re.search(rf'\("{element}", "([^"]+)"\)', ci)
        assert checked, f".ci/run does not check GStreamer element {element}"
        assert checked.group(1) in packages | {"libgstreamer1.0-0"}, f"{element}: {checked.group(1)} not installed"
    assert {"gstreamer1.0-x", "ffmpeg", "chromium", "python3-gi", "gir1.2-gst-rtsp-server-1.0"} <= packages
    for check in ("command -v ffprobe", "chromium", 'require_version("GstRtspServer", "1.0")'):
        assert check in ci or check.split()[-1] in ci


def _camera_launch_strings() -> list[str]:
    """The test camera's GStreamer pipelines, read from its source (it imports gi, which the venv lacks)."""
    import ast

    source = (REPO / "pipeline" / "bench" / "rtsp_server.py").read_text()
    tree = ast.parse(source)
    launches = [node.value for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("(")
                and " ! " in node.value]
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "camera_pipeline")
    scope: dict = {}
    exec(compile(ast.Module([func], []), "rtsp_server.py", "exec"), scope)
    return [scope["camera_pipeline"](160, 120, 25, "ball"), *launches]
